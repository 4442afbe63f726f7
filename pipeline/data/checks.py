"""The expectation suites as SQL: each GX expectation in `expectations/<table>.json` becomes
a check DuckDB runs over every row (see `pipeline.data.validate` for why).

`predicate()` maps a map expectation (type + kwargs) to SQL true on a violating row, with
GX-on-pandas semantics: missing values are ignored, NaN counts as missing, +-inf falls
outside any finite range. `schema_check()` answers table-level expectations from DuckDB's
schema and row count; `unique_check()` runs a GROUP BY. Identifiers are quoted and must be
columns the relation has; values are bound as `$params`.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

SUITE_DIR = Path(__file__).resolve().parents[2] / "expectations"
TABLES = ("prices", "membership", "index_prices", "feature_panel")
EVIDENCE_ROWS = 200      # violating rows per failed expectation handed to GX
EXAMPLES = 5             # bad rows quoted in the error message

# DuckDB type -> the dtype name GX reports for the same column in pandas.
_PANDAS_TYPE = {"VARCHAR": "str", "DOUBLE": "float64", "FLOAT": "float32", "BIGINT": "int64",
                "INTEGER": "int32", "SMALLINT": "int16", "TINYINT": "int8", "BOOLEAN": "bool",
                "UBIGINT": "uint64", "UINTEGER": "uint32", "DATE": "datetime64[us]",
                "TIMESTAMP": "datetime64[us]", "TIMESTAMP_MS": "datetime64[ms]",
                "TIMESTAMP_NS": "datetime64[ns]", "TIMESTAMP_S": "datetime64[s]"}
SCHEMA_TYPES = ("expect_table_row_count_to_be_between", "expect_column_to_exist",
                "expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")


def load_suite(table: str) -> dict:
    """The suite JSON of `table` (a plain dict as GX writes it)."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")
    return json.loads((SUITE_DIR / f"{table}.json").read_text())


def expand_suite(suite: dict, columns: list[str]) -> list[dict]:
    """The suite's expectations plus the feature-column templates applied to `columns`."""
    exps = [{**e, "meta": e.get("meta", {})} for e in suite["expectations"]]
    named = {e["kwargs"].get("column") for e in exps} | {
        c for e in exps for c in e["kwargs"].get("column_list", [])}
    templates = suite.get("meta", {}).get("feature_columns", {}).get("expectations", [])
    for col in columns if templates else []:
        if col not in named:
            exps += [{"type": t["type"], "kwargs": {"column": col, **t["kwargs"]},
                      "meta": {"feature_template": True}} for t in templates]
    return exps


def derived_columns(suite: dict) -> list[dict]:
    """`meta.derived_columns.columns`: [{"name", "sql"}], columns computed over the checked rows
    (e.g. a stock's previous close) so that plain GX expectations can check them."""
    return list(suite.get("meta", {}).get("derived_columns", {}).get("columns", []))


def derived_select(rel: str, derived: list[dict]) -> str:
    """SELECT of `rel` (a relation name from the caller's fixed list) plus the derived columns.
    A column may use the ones before it: it then starts a new nesting level; columns of one level
    share it, so DuckDB computes their windows (same OVER) in one pass. The SQL comes from the
    suite files in the repository, never from the data."""
    levels: list[list[dict]] = []
    for d in derived:
        if not d["name"].isidentifier():
            raise ValueError(f"derived column name {d['name']!r} is not an identifier")
        uses = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", d["sql"]))
        if not levels or uses & {e["name"] for e in levels[-1]}:
            levels.append([])
        levels[-1].append(d)
    sql = f"SELECT * FROM {rel}"
    for level in levels:
        cols = ", ".join(f'({d["sql"]}) AS "{d["name"]}"' for d in level)
        sql = f"SELECT *, {cols} FROM ({sql})"
    return sql


def suite_parameters(suite: dict) -> dict:
    """`$PARAMETER` values: the suite's own (dates as Timestamps, which GX on pandas needs)."""
    params = {k: pd.Timestamp(v) for k, v in suite.get("meta", {}).get("parameters", {}).items()}
    params["today"] = pd.Timestamp(dt.date.today())
    return params


@dataclass
class CheckResult:
    """One expectation's verdict over every row."""

    type: str
    kwargs: dict
    unexpected_count: int
    observed: object = None
    examples: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)     # the expectation's meta (description, show)

    @property
    def success(self) -> bool:
        return self.unexpected_count == 0

    @property
    def columns(self) -> list[str]:
        """The columns the expectation names (column, column_A/B or column_list)."""
        kw = self.kwargs
        if "column" in kw:
            return [kw["column"]]
        if "column_A" in kw:
            return [kw["column_A"], kw["column_B"]]
        return list(kw.get("column_list", []))


def quote(col: str, columns: list[str]) -> str:
    """A column name as a quoted identifier; only names the relation really has."""
    if col not in columns:
        raise KeyError(col)
    return '"' + col.replace('"', '""') + '"'


def _between(col, kw, p, params, suite_params, floaty):
    cond = []
    for bound, op, strict_op, key in (("min_value", "<", "<=", "strict_min"),
                                      ("max_value", ">", ">=", "strict_max")):
        v = kw.get(bound)
        if v is None:
            continue
        if isinstance(v, dict):
            v = suite_params[v["$PARAMETER"]]
        params[f"{p}_{bound}"] = v
        cond.append(f"{col} {strict_op if kw.get(key) else op} ${p}_{bound}")
    nan = f" AND NOT isnan({col})" if floaty else ""
    return f"{col} IS NOT NULL{nan} AND ({' OR '.join(cond) or 'false'})"


def predicate(exp: dict, p: str, types: dict, params: dict, suite_params: dict) -> str:
    """SQL that is true on a row violating a map expectation (GX pandas semantics)."""
    t, kw = exp["type"], exp["kwargs"]
    columns = list(types)
    if t == "expect_column_values_to_not_be_null":
        col = quote(kw["column"], columns)
        return f"{col} IS NULL" + (f" OR isnan({col})" if types[kw["column"]] in ("DOUBLE", "FLOAT") else "")
    if t == "expect_column_values_to_be_between":
        return _between(quote(kw["column"], columns), kw, p, params, suite_params,
                        types[kw["column"]] in ("DOUBLE", "FLOAT"))
    if t == "expect_column_values_to_be_in_set":
        col = quote(kw["column"], columns)
        params[f"{p}_set"] = list(kw["value_set"])
        return f"{col} IS NOT NULL AND NOT list_contains(${p}_set, {col})"
    if t == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = quote(kw["column_A"], columns), quote(kw["column_B"], columns)
        op = ">=" if kw.get("or_equal") else ">"
        return f"{a} IS NOT NULL AND {b} IS NOT NULL AND NOT ({a} {op} {b})"
    raise ValueError(f"expectation type {t!r} has no SQL mapping in pipeline/data/checks.py")


def schema_check(exp: dict, types: dict, rows: int) -> CheckResult:
    t, kw = exp["type"], exp["kwargs"]
    if t == "expect_table_row_count_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        bad = (lo is not None and rows < lo) or (hi is not None and rows > hi)
        return CheckResult(t, kw, int(bad), observed=rows if bad else None)
    col = kw["column"]
    if t == "expect_column_to_exist":
        return CheckResult(t, kw, int(col not in types), observed="missing" if col not in types else None)
    if col not in types:  # reported by expect_column_to_exist
        return CheckResult(t, kw, 0)
    duck = types[col]
    observed = _PANDAS_TYPE.get(duck, duck.lower())
    allowed = kw["type_list"] if t.endswith("type_list") else [kw["type_"]]
    ok = observed in allowed
    return CheckResult(t, kw, int(not ok), observed=None if ok else f"{observed} ({duck})")


def unique_check(con: duckdb.DuckDBPyConnection, rel: str, exp: dict, columns: list[str]):
    """Rows in duplicated key groups (GX counts every copy), examples, evidence SQL."""
    cols = ", ".join(quote(c, columns) for c in exp["kwargs"]["column_list"])
    dup = f"SELECT {cols}, count(*) AS n FROM {rel} GROUP BY ALL HAVING count(*) > 1"
    n = con.execute(f"SELECT coalesce(sum(n), 0) FROM ({dup})").fetchall()[0][0]
    res = CheckResult(exp["type"], exp["kwargs"], int(n))
    if not n:
        return res, None
    res.examples = con.execute(f"{dup} LIMIT {EXAMPLES}").df().to_dict("records")
    ev = f"(SELECT r.* FROM {rel} r SEMI JOIN ({dup} LIMIT {EVIDENCE_ROWS // 2}) d USING ({cols}))"
    return res, ev
