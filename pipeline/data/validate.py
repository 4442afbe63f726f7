"""Great Expectations suites (`expectations/<table>.json`) checked over every row in DuckDB.

Why two engines. GX's SQL datasource does not work on DuckDB (STACK-NOTES) and GX on pandas
would need the whole panel in memory (7.25M rows, or 2.5M x 626 features), so:

1. The JSON suite is the single source of truth. Each expectation is compiled to a SQL
   predicate that marks a violating row (`_PREDICATES`); one aggregate query per table
   counts the violations of every expectation over **every row** (DuckDB, out of core).
   Table-level expectations (columns exist, types, row count) read DuckDB's schema of the
   source (the parquet file's own types), before anything is cast. An expectation type
   without a SQL mapping is an error, never silently skipped.
2. GX itself then runs the same suite on an *evidence frame*: the first rows of the table
   plus up to `EVIDENCE_ROWS` violating rows of each failed expectation. That gives the
   official GX result (same expectation configs, GX's own `partial_unexpected_list`) at the
   cost of a few thousand rows. The report file holds both: the full-scan counts (the
   verdict) and the GX result on the evidence.

Semantics follow GX on pandas: map expectations ignore missing values (and NaN counts as
missing, so `not_be_null` catches NaN); `_be_between` catches +-inf through its range.
Suites may hold `meta.feature_columns.expectations`: templates applied to every column
outside the suite's named columns (the feature panel has any number of them), and
`meta.parameters` (e.g. `min_date`); `today` is always today's date.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from pipeline.errors import DataError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SUITE_DIR = Path(__file__).resolve().parents[2] / "expectations"
TABLES = ("prices", "membership", "index_prices", "feature_panel")
EVIDENCE_ROWS = 200      # violating rows per failed expectation handed to GX
HEAD_ROWS = 500          # plus the table's first rows, so GX also sees clean data
EXAMPLES = 5             # bad rows quoted in the error message
GX_FEATURE_COLUMNS = 8   # feature columns whose passing template checks GX re-runs

# DuckDB type -> the dtype name GX reports for the same column in pandas.
_PANDAS_TYPE = {"VARCHAR": "str", "DOUBLE": "float64", "FLOAT": "float32", "BIGINT": "int64",
                "INTEGER": "int32", "SMALLINT": "int16", "TINYINT": "int8", "BOOLEAN": "bool",
                "UBIGINT": "uint64", "UINTEGER": "uint32", "DATE": "datetime64[us]",
                "TIMESTAMP": "datetime64[us]", "TIMESTAMP_MS": "datetime64[ms]",
                "TIMESTAMP_NS": "datetime64[ns]", "TIMESTAMP_S": "datetime64[s]"}
_SCHEMA_TYPES = ("expect_table_row_count_to_be_between", "expect_column_to_exist",
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


def suite_parameters(suite: dict) -> dict:
    """`$PARAMETER` values: the suite's own (dates as Timestamps, which GX on pandas needs)."""
    params = {k: pd.Timestamp(v) for k, v in suite.get("meta", {}).get("parameters", {}).items()}
    params["today"] = pd.Timestamp(dt.date.today())
    return params


@dataclass
class CheckResult:
    type: str
    kwargs: dict
    unexpected_count: int
    observed: object = None
    examples: list = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.unexpected_count == 0

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.type}({args})"


@dataclass
class TableValidation:
    """Verdict of one suite over one table (or staged file)."""

    table: str
    source: str
    rows: int
    checks: list[CheckResult]
    seconds: float
    report: Path | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    @property
    def success(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        ok = "ok" if self.success else f"FAILED {len(self.failures)}"
        return (f"{self.table:<14} {self.rows:>10,} rows  {len(self.checks):>5} expectations  "
                f"{ok}  ({self.seconds:.1f} s, {self.source})")

    def raise_if_failed(self) -> None:
        if self.success:
            return
        first = self.failures[0]
        lines = [f"{self.source}: {len(self.failures)} expectation(s) of suite "
                 f"'{self.table}' failed over {self.rows:,} rows"]
        for c in self.failures[:5]:
            what = f"observed {c.observed}" if c.observed is not None else f"{c.unexpected_count:,} bad rows"
            lines.append(f"  - {c.describe()}: {what}")
            lines += [f"      {row}" for row in c.examples[:3]]
        if self.report:
            lines.append(f"  full GX result: {self.report}")
        col = first.kwargs.get("column") or ",".join(first.kwargs.get("column_list", []))
        raise DataError("\n".join(lines), file=self.source, column=col or None,
                        expectation=first.type, count=first.unexpected_count,
                        examples=first.examples, report=str(self.report) if self.report else None)


def _q(col: str, columns: list[str]) -> str:
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


def _predicate(exp: dict, p: str, types: dict, params: dict, suite_params: dict) -> str:
    """SQL that is true on a row violating a map expectation (GX pandas semantics)."""
    t, kw = exp["type"], exp["kwargs"]
    columns = list(types)
    if t == "expect_column_values_to_not_be_null":
        col = _q(kw["column"], columns)
        return f"{col} IS NULL" + (f" OR isnan({col})" if types[kw["column"]] in ("DOUBLE", "FLOAT") else "")
    if t == "expect_column_values_to_be_between":
        return _between(_q(kw["column"], columns), kw, p, params, suite_params,
                        types[kw["column"]] in ("DOUBLE", "FLOAT"))
    if t == "expect_column_values_to_be_in_set":
        col = _q(kw["column"], columns)
        params[f"{p}_set"] = list(kw["value_set"])
        return f"{col} IS NOT NULL AND NOT list_contains(${p}_set, {col})"
    if t == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = _q(kw["column_A"], columns), _q(kw["column_B"], columns)
        op = ">=" if kw.get("or_equal") else ">"
        return f"{a} IS NOT NULL AND {b} IS NOT NULL AND NOT ({a} {op} {b})"
    raise ValueError(f"expectation type {t!r} has no SQL mapping in pipeline/data/validate.py")


def _schema_check(exp: dict, types: dict, rows: int) -> CheckResult:
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


def check_relation(con: duckdb.DuckDBPyConnection, table: str, schema_rel: str, rows_rel: str,
                   source: str, prepare: Callable[[], None] | None = None) -> tuple[TableValidation, dict]:
    """Run `table`'s suite: schema checks on `schema_rel`, row checks on `rows_rel` (both
    names of views/tables on `con` from the caller's fixed list, never user input).
    `prepare()` creates `rows_rel` once the schema passed (ingest stages the file there).

    Returns the verdict and what GX needs: {"exps", "params", "evidence" (SQL)}.
    """
    t0 = time.perf_counter()
    suite = load_suite(table)
    desc = con.execute(f"DESCRIBE {schema_rel}").fetchall()
    types = {r[0]: r[1] for r in desc}
    columns = list(types)
    exps = expand_suite(suite, columns)
    params = suite_parameters(suite)
    rows = con.execute(f"SELECT count(*) FROM {schema_rel}").fetchall()[0][0]

    checks: list[CheckResult | None] = [None] * len(exps)
    for i, e in enumerate(exps):
        if e["type"] in _SCHEMA_TYPES:
            checks[i] = _schema_check(e, types, rows)
    schema_ok = all(c.success for c in checks if c is not None)
    evidence = [f"(SELECT * FROM {schema_rel} LIMIT {HEAD_ROWS})"]
    if schema_ok and rows > 0:
        if prepare is not None:
            prepare()
        evidence = [f"(SELECT * FROM {rows_rel} LIMIT {HEAD_ROWS})"]
        row_types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {rows_rel}").fetchall()}
        preds: dict[int, str] = {}
        sql_params: dict = {}
        for i, e in enumerate(exps):
            if checks[i] is None and e["type"] != "expect_compound_columns_to_be_unique":
                preds[i] = _predicate(e, f"p{i}", row_types, sql_params, params)
        if preds:
            aggs = ", ".join(f"count_if({p})" for p in preds.values())  # FILTER is ~50x slower here
            counts = con.execute(f"SELECT {aggs} FROM {rows_rel}", sql_params).fetchall()[0]
            for (i, pred), n in zip(preds.items(), counts):
                checks[i] = CheckResult(exps[i]["type"], exps[i]["kwargs"], int(n))
                if n:
                    sel = f"SELECT * FROM {rows_rel} WHERE {pred}"
                    mine = {k: v for k, v in sql_params.items() if k.startswith(f"p{i}_")}
                    ex = con.execute(f"{sel} LIMIT {EXAMPLES}", mine).df()
                    checks[i].examples = ex.to_dict("records")
                    evidence.append((f"({sel} LIMIT {EVIDENCE_ROWS})", mine))
        for i, e in enumerate(exps):
            if e["type"] == "expect_compound_columns_to_be_unique":
                checks[i], ev = _unique_check(con, rows_rel, e, columns)
                if ev:
                    evidence.append(ev)
    for i, e in enumerate(exps):  # row checks skipped: the schema is already wrong
        if checks[i] is None:
            checks[i] = CheckResult(e["type"], e["kwargs"], 0, observed=None)
    result = TableValidation(table, source, rows, checks, time.perf_counter() - t0)
    return result, {"exps": exps, "params": params, "evidence": evidence}


def _unique_check(con, rel: str, exp: dict, columns: list[str]):
    cols = ", ".join(_q(c, columns) for c in exp["kwargs"]["column_list"])
    dup = f"SELECT {cols}, count(*) AS n FROM {rel} GROUP BY ALL HAVING count(*) > 1"
    n = con.execute(f"SELECT coalesce(sum(n), 0) FROM ({dup})").fetchall()[0][0]
    res = CheckResult(exp["type"], exp["kwargs"], int(n))
    if not n:
        return res, None
    res.examples = con.execute(f"{dup} LIMIT {EXAMPLES}").df().to_dict("records")
    ev = f"(SELECT r.* FROM {rel} r SEMI JOIN ({dup} LIMIT {EVIDENCE_ROWS // 2}) d USING ({cols}))"
    return res, ev


def _gx_selection(exps: list[dict], checks: list[CheckResult]) -> list[dict]:
    """Expectations GX re-runs on the evidence: all named ones, every failed one, and the
    feature-column templates of the first `GX_FEATURE_COLUMNS` columns (GX costs ~30 ms per
    expectation; 626 features x 3 would take a minute, the SQL scan already covered them)."""
    seen, out = set(), []
    for e, c in zip(exps, checks):
        col = e["kwargs"].get("column")
        if e["meta"].get("feature_template") and c.success:
            if col not in seen and len(seen) >= GX_FEATURE_COLUMNS:
                continue
            seen.add(col)
        out.append(e)
    return out


def _multiset_union(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Union of row subsets of one table, each row kept max(times it occurs in a frame):
    a row in both the head and the violations appears once, but the two copies of a
    duplicated key stay two (GX must still see the duplicate)."""
    tagged = []
    for f in frames:
        h = pd.util.hash_pandas_object(f, index=False)
        tagged.append(f.assign(__h=h.to_numpy(), __k=h.groupby(h).cumcount().to_numpy()))
    out = pd.concat(tagged, ignore_index=True).drop_duplicates(["__h", "__k"])
    return out.drop(columns=["__h", "__k"]).reset_index(drop=True)


def run_gx(con: duckdb.DuckDBPyConnection, result: TableValidation, gx_input: dict) -> dict:
    """Validate the evidence frame with GX itself; returns GX's result as a JSON dict."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (DataContextConfig,
                                                            InMemoryStoreBackendDefaults)

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # INFO per call otherwise
    frames = []
    for ev in gx_input["evidence"]:
        sql, params = ev if isinstance(ev, tuple) else (ev, {})
        frames.append(con.execute(sql, params).df())
    frame = _multiset_union(frames)
    # In memory, and no temporary docs site written to /tmp (nothing outside the home folder).
    ctx = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)))
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    exps = _gx_selection(gx_input["exps"], result.checks)
    suite = gx.ExpectationSuite(name=result.table, expectations=[
        {"type": e["type"], "kwargs": e["kwargs"], "meta": e["meta"]} for e in exps])
    batch = (ctx.data_sources.add_pandas("miga").add_dataframe_asset(result.table)
             .add_batch_definition_whole_dataframe("evidence")
             .get_batch(batch_parameters={"dataframe": frame}))
    gx_result = batch.validate(suite, expectation_parameters=gx_input["params"])
    return {"evidence_rows": len(frame), "expectations_run": len(exps),
            "result": gx_result.to_json_dict()}


def write_report(result: TableValidation, gx_part: dict | None, reports_dir: Path) -> Path:
    """{full-scan verdict per expectation, GX result on the evidence} as one JSON file."""
    report = {
        "table": result.table, "source": result.source, "rows_checked": result.rows,
        "success": result.success, "seconds": round(result.seconds, 3),
        "full_scan": [{"type": c.type, "kwargs": c.kwargs, "success": c.success,
                       "unexpected_count": c.unexpected_count, "observed": c.observed,
                       "examples": c.examples} for c in result.checks],
        "gx_evidence_rows": gx_part["evidence_rows"] if gx_part else 0,
        "gx_expectations_run": gx_part["expectations_run"] if gx_part else 0,
        "gx_result": gx_part["result"] if gx_part else None,
    }
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")
    path = reports_dir / f"validation-{result.table}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def validate(con, table: str, schema_rel: str, rows_rel: str, source: str,
             reports_dir: Path, prepare: Callable[[], None] | None = None,
             gx: str = "always") -> TableValidation:
    """Full-scan verdict, then GX on the evidence (`gx`: "always" or "failures"), a report
    file either way; raises DataError naming the failures."""
    result, gx_input = check_relation(con, table, schema_rel, rows_rel, source, prepare)
    t0 = time.perf_counter()
    gx_part = run_gx(con, result, gx_input) if gx == "always" or not result.success else None
    result.seconds += time.perf_counter() - t0
    result.report = write_report(result, gx_part, reports_dir)
    log.info("validated %s", result)
    result.raise_if_failed()
    return result


@dataclass
class WarehouseValidation:
    tables: list[TableValidation]

    def __str__(self) -> str:
        return "validation of the warehouse:\n" + "\n".join(f"  {t}" for t in self.tables)


def validate_warehouse(settings: Settings) -> WarehouseValidation:
    """Run every suite over its warehouse table (feature_panel only when present)."""
    from pipeline.warehouse import connect, table_exists

    if not settings.warehouse.exists():
        raise DataError(f"no warehouse at {settings.warehouse}: run `miga ingest --data DIR` first",
                        file=str(settings.warehouse))
    from tqdm import tqdm

    con = connect(settings.warehouse, read_only=True)
    try:
        out = []
        for table in tqdm(TABLES, desc="validate", file=sys.stderr, disable=None, leave=False):
            if not table_exists(con, table):
                if table == "feature_panel":
                    continue
                raise DataError(f"warehouse table {table} is missing: run `miga ingest --data DIR`",
                                file=str(settings.warehouse), column=table)
            out.append(validate(con, table, table, table, f"warehouse:{table}",
                                settings.reports_dir))
        return WarehouseValidation(out)
    finally:
        con.close()
