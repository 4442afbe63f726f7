"""Great Expectations suites (`expectations/<table>.json`) checked over every row in DuckDB.

Why two engines. GX's SQL datasource does not work on DuckDB (STACK-NOTES) and GX on pandas
would need the whole panel in memory (7.25M rows, or 2.5M x 626 features), so:

1. The JSON suite is the single source of truth. Each expectation is compiled to a SQL
   predicate that marks a violating row (`pipeline.data.checks.predicate`); one aggregate query per table
   counts the violations of every expectation over **every row** (DuckDB, out of core).
   Table-level expectations (columns exist, types, row count) read DuckDB's schema of the
   source (the parquet file's own types), before anything is cast. An expectation type
   without a SQL mapping is an error, never silently skipped.
2. GX itself then runs the same suite on an *evidence frame*: the first rows of the table
   plus up to `EVIDENCE_ROWS` violating rows of each failed expectation. That gives the
   official GX result (same expectation configs, GX's own `partial_unexpected_list`) at the
   cost of a few thousand rows. The report file holds both: the full-scan counts (the
   verdict) and the GX result on the evidence.

Checks across rows (a stock's move since its previous row, overlapping membership
intervals) are plain GX expectations on *derived columns*: `meta.derived_columns` of a suite
lists SQL expressions (window functions) computed over the checked rows into a temp view
`check_<table>`; the evidence rows GX sees carry the same columns.

A failure raises one `DataError` whose message is one line, short whatever the file's width:
the failed expectations grouped by kind (a few columns each, "and N more"), a few example rows
(their keys and the values at fault) and the path of the full report.

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
import numpy as np
import pandas as pd

from pipeline.data.checks import (EVIDENCE_ROWS, EXAMPLES, SCHEMA_TYPES, TABLES, CheckResult,
                                  derived_columns, derived_select, expand_suite, load_suite,
                                  predicate, quote, schema_check, suite_parameters,
                                  unique_check)
from pipeline.errors import DataError, interrupted
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HEAD_ROWS = 500          # plus the table's first rows, so GX also sees clean data
GX_FEATURE_COLUMNS = 8   # feature columns whose passing template checks GX re-runs
GX_FAILED = 20           # failed map expectations whose violating rows GX gets and re-runs
WIDE_COLUMNS = 30        # a relation wider than this is quoted by keys + columns at fault
# An error message names at most this many kinds of failed expectation, columns per kind (and
# values per example row) and example rows; the full report has them all.
MESSAGE_KINDS, MESSAGE_COLUMNS, MESSAGE_ROWS = 3, 5, 3
MESSAGE_CHARS = 600      # beyond this, fewer example rows are quoted


def _fmt(v) -> str:
    """A value as an error message quotes it: short, dates without midnight."""
    if isinstance(v, (float, np.floating)):
        return "nan" if v != v else f"{v:.6g}"
    if v is None or v is pd.NaT:
        return "null"
    if isinstance(v, (pd.Timestamp, dt.datetime)) and v == v.replace(hour=0, minute=0, second=0,
                                                                        microsecond=0):
        return v.date().isoformat()
    if isinstance(v, dict) and "$PARAMETER" in v:
        return str(v["$PARAMETER"])
    if isinstance(v, (list, tuple)):
        v = "/".join(map(str, v))
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _more(items: list[str], n: int, what: str = "") -> str:
    rest = len(items) - n
    return ", ".join(items[:n]) + (f" and {rest} more{what}" if rest > 0 else "")


def _label(c: CheckResult) -> str:
    kw = c.kwargs
    if "column_A" in kw:
        return f"{kw['column_A']}{'>=' if kw.get('or_equal') else '>'}{kw['column_B']}"
    if "column_list" in kw:
        return "(" + ", ".join(kw["column_list"]) + ")"
    return kw.get("column", "the table")


def _kind(c: CheckResult) -> str:
    """The expectation without its columns: failures of one kind are named together."""
    skip = {"column", "column_A", "column_B", "column_list", "or_equal", "ignore_row_if"}
    args = ", ".join(f"{k}={_fmt(v)}" for k, v in c.kwargs.items() if k not in skip)
    desc = c.meta.get("description")
    return c.type + (f"({args})" if args else "") + (f" [{desc}]" if desc else "")


def _kinds_text(failures: list[CheckResult]) -> list[str]:
    kinds: dict[str, list[CheckResult]] = {}
    for c in failures:
        kinds.setdefault(_kind(c), []).append(c)
    out = []
    for kind, cs in kinds.items():
        if len(cs) == 1:
            c = cs[0]
            what = (f"observed {_fmt(c.observed)}" if c.observed is not None else
                    f"{c.unexpected_count:,} bad row{'s' * (c.unexpected_count != 1)}")
            out.append(f"{kind} on {_label(c)}: {what}")
        else:
            items = [f"{_label(c)} ({_fmt(c.observed) if c.observed is not None else f'{c.unexpected_count:,}'})"
                     for c in cs]
            total = sum(c.unexpected_count for c in cs)
            out.append(f"{kind} on {_more(items, MESSAGE_COLUMNS, ' columns')}: {total:,} failures")
    return out


def _rows_text(failures: list[CheckResult], keys: list[str]) -> list[str]:
    """Example rows: their keys and the values of the columns at fault (and of the columns an
    expectation's meta `show` asks for), rows shared by several failures merged."""
    rows: dict[tuple, dict] = {}
    for c in failures:
        cols = c.columns + list(c.meta.get("show", [])) + (
            ["n"] if c.type == "expect_compound_columns_to_be_unique" else [])
        for ex in c.examples:
            key = tuple(_fmt(ex.get(k)) for k in keys)
            vals = rows.setdefault(key, {})
            for col in ex:   # in the row's own column order
                if col in cols and col not in keys:
                    vals.setdefault(col, _fmt(ex[col]))
    out = []
    for key, vals in list(rows.items())[:MESSAGE_ROWS]:
        head = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
        body = _more([f"{k}={v}" for k, v in vals.items()], MESSAGE_COLUMNS)
        out.append(f"({head}: {body})" if head and body else f"({head or body})")
    return out


@dataclass
class TableValidation:
    """Verdict of one suite over one table (or staged file)."""

    table: str
    source: str
    rows: int
    checks: list[CheckResult]
    seconds: float
    report: Path | None = None
    keys: list[str] | None = None   # the suite's key columns: example rows are named by them
    context: str = ""               # e.g. "merged with the warehouse's membership"

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

    def message(self) -> str:
        """One line: what failed (a few columns of each kind), a few example rows, the report."""
        fails = self.failures
        where = f"{self.source} ({self.context})" if self.context else self.source
        head = (f"{where}: {len(fails):,} of {len(self.checks):,} expectations of suite "
                f"'{self.table}' failed over {self.rows:,} rows: ")
        kinds = _kinds_text(fails)
        rows = _rows_text(fails, self.keys or [])
        tail = f"; full report: {self.report}" if self.report else ""
        for n_kinds, n_rows in ((MESSAGE_KINDS, MESSAGE_ROWS), (MESSAGE_KINDS, 1), (1, 1), (1, 0)):
            body = "; ".join(kinds[:n_kinds]) + (
                f"; and {len(kinds) - n_kinds} more kinds" if len(kinds) > n_kinds else "")
            eg = f"; e.g. {', '.join(rows[:n_rows])}" if rows[:n_rows] else ""
            text = head + body + eg + tail
            if len(text) <= MESSAGE_CHARS:
                break
        return text

    def raise_if_failed(self) -> None:
        if self.success:
            return
        first = self.failures[0]
        col = first.kwargs.get("column") or ",".join(first.kwargs.get("column_list", []))
        raise DataError(self.message(), file=self.source, column=col or None,
                        expectation=first.type, count=first.unexpected_count,
                        examples=first.examples, report=str(self.report) if self.report else None)


def check_relation(con: duckdb.DuckDBPyConnection, table: str, schema_rel: str, rows_rel: str,
                   source: str, prepare: Callable[[], None] | None = None,
                   earlier: Callable[[], str | None] | None = None) -> tuple[TableValidation, dict]:
    """Run `table`'s suite: schema checks on `schema_rel`, row checks on `rows_rel` (both
    names of views/tables on `con` from the caller's fixed list, never user input).
    `prepare()` creates `rows_rel` once the schema passed (ingest stages the file there).
    `earlier()`, called after it, names the rows already in the warehouse that the suite's
    derived columns (checks across rows: a stock's previous close) may look back on, or None;
    they are context only: not checked, not counted.

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
        if e["type"] in SCHEMA_TYPES:
            checks[i] = schema_check(e, types, rows)
    schema_ok = all(c.success for c in checks if c is not None)
    evidence = [f"(SELECT * FROM {schema_rel} LIMIT {HEAD_ROWS})"]
    derived = derived_columns(suite)
    gx_failed: set[int] = set()   # failed expectations whose violating rows GX gets
    if schema_ok and rows > 0:
        if prepare is not None:
            prepare()
        context = earlier() if earlier is not None and derived else None
        if derived:  # checks across rows: computed columns, checked like any other
            if context:   # computed over the staged rows and the earlier ones, kept for the first
                both = (f"(SELECT *, false AS _earlier FROM {rows_rel} UNION ALL BY NAME "
                        f"SELECT *, true AS _earlier FROM {context})")
                con.execute(f"CREATE OR REPLACE TEMP VIEW check_{table} AS SELECT * EXCLUDE "
                            f"(_earlier) FROM ({derived_select(both, derived)}) WHERE NOT _earlier")
            else:
                con.execute(f"CREATE OR REPLACE TEMP VIEW check_{table} AS "
                            f"{derived_select(rows_rel, derived)}")
            rows_rel = f"check_{table}"
        evidence = [f"(SELECT * FROM {rows_rel} LIMIT {HEAD_ROWS})"]
        row_types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {rows_rel}").fetchall()}
        preds: dict[int, str] = {}
        sql_params: dict = {}
        for i, e in enumerate(exps):
            if checks[i] is None and e["type"] != "expect_compound_columns_to_be_unique":
                preds[i] = predicate(e, f"p{i}", row_types, sql_params, params)
        if preds:
            aggs = ", ".join(f"count_if({p})" for p in preds.values())  # count_if: FILTER is much slower here
            counts = con.execute(f"SELECT {aggs} FROM {rows_rel}", sql_params).fetchall()[0]
            keys = _keys(exps)
            failed: list[tuple[str, dict]] = []
            for (i, pred), n in zip(preds.items(), counts):
                checks[i] = CheckResult(exps[i]["type"], exps[i]["kwargs"], int(n))
                if n:
                    mine = {k: v for k, v in sql_params.items() if k.startswith(f"p{i}_")}
                    # a wide row (the feature panel) is quoted by its keys and the columns at
                    # fault: 626 columns a row would make each query slow and the report huge
                    cols = "*" if len(row_types) <= WIDE_COLUMNS else ", ".join(
                        quote(c, list(row_types)) for c in dict.fromkeys(
                            keys + checks[i].columns + exps[i]["meta"].get("show", []))
                        if c in row_types)
                    ex = con.execute(f"SELECT {cols} FROM {rows_rel} WHERE {pred} LIMIT {EXAMPLES}",
                                     mine).df()
                    checks[i].examples = ex.to_dict("records")
                    if len(failed) < GX_FAILED:
                        failed.append((f"(SELECT * FROM {rows_rel} WHERE {pred} LIMIT {EVIDENCE_ROWS})",
                                       mine))
                        gx_failed.add(i)
            if failed:  # one query: the violating rows of every failed expectation, each row once
                evidence.append((f"(SELECT DISTINCT * FROM ({' UNION ALL '.join(s for s, _ in failed)}))",
                                 {k: v for _, m in failed for k, v in m.items()}))
        for i, e in enumerate(exps):
            if e["type"] == "expect_compound_columns_to_be_unique":
                checks[i], ev = unique_check(con, rows_rel, e, columns)
                if ev:
                    evidence.append(ev)
    for i, e in enumerate(exps):  # row checks skipped: the schema is already wrong
        if checks[i] is None:
            checks[i] = CheckResult(e["type"], e["kwargs"], 0, observed=None)
        checks[i].meta = e["meta"]
    result = TableValidation(table, source, rows, checks, time.perf_counter() - t0,
                             keys=_keys(exps))
    return result, {"exps": exps, "params": params, "evidence": evidence,
                    "derived": [d["name"] for d in derived], "gx_failed": gx_failed}


def _keys(exps: list[dict]) -> list[str]:
    """The suite's key columns (its compound-unique expectation): rows are named by them."""
    return next((list(e["kwargs"]["column_list"]) for e in exps
                 if e["type"] == "expect_compound_columns_to_be_unique"), [])


def _gx_selection(exps: list[dict], checks: list[CheckResult],
                  gx_failed: set[int] | None = None) -> list[dict]:
    """Expectations GX re-runs on the evidence: all named ones, the failed ones whose violating
    rows it got (the first `GX_FAILED` map expectations; `gx_failed`, None = all), and the
    feature-column templates of the first `GX_FEATURE_COLUMNS` columns (GX's cost is per
    expectation, 626 features x 3 would take long, and the SQL scan already covered them)."""
    seen, out = set(), []
    for i, (e, c) in enumerate(zip(exps, checks)):
        if (gx_failed is not None and not c.success and c.observed is None and i not in gx_failed
                and e["type"] != "expect_compound_columns_to_be_unique"):
            continue   # a failure beyond GX_FAILED: the full scan's verdict stands alone
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
    # expectations on derived columns the evidence lacks (the schema failed before they were
    # computed) are left to the full scan, which skipped them too
    absent = set(gx_input.get("derived", [])) - set(frame.columns)
    # In memory, and no temporary docs site written to /tmp (nothing outside the home folder).
    ctx = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False)))
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    exps = [e for e in _gx_selection(gx_input["exps"], result.checks, gx_input.get("gx_failed"))
            if not absent & set(CheckResult(e["type"], e["kwargs"], 0).columns)]
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
             gx: str = "always", context: str = "",
             earlier: Callable[[], str | None] | None = None) -> TableValidation:
    """Full-scan verdict, then GX on the evidence (`gx`: "always" or "failures"), a report
    file either way; raises DataError naming the failures (`context`: said after the source;
    `earlier`: as in `check_relation`)."""
    result, gx_input = check_relation(con, table, schema_rel, rows_rel, source, prepare, earlier)
    result.context = context
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
    unwritten: list[str] = field(default_factory=list)   # latest=True: tables it did not write

    def __str__(self) -> str:
        return "validation of the warehouse:\n" + "\n".join(
            [f"  {t}" for t in self.tables]
            + [f"  {t:<14} no rows written by the last ingest (validated when ingested)"
               for t in self.unwritten])


def validate_warehouse(settings: Settings, gx: str = "always",
                       latest: bool = False) -> WarehouseValidation:
    """Run every suite over its warehouse table (feature_panel only when present).

    Every row is always checked (the suites compiled to SQL); gx="always" also runs GX itself on
    the evidence rows for the official report, gx="failures" only when a check fails (the flow,
    right after an ingest that validated the same rows, skips GX's fixed start-up cost).
    latest=True (the flow, after each ingest): of prices and feature_panel only the dates the
    newest ingest wrote (`pipeline.data.dated_files.latest_dates`; prices with the weeks before
    them to look back on), so a daily append checks one day, not ten years of 626 columns;
    every row of the small tables. `miga validate` checks every row of every table."""
    from pipeline.data.files import DATED
    from pipeline.data.recent import earlier_rows, latest_dates, stage_latest
    from pipeline.warehouse import open_warehouse, table_exists

    if not settings.warehouse.exists():
        raise DataError(f"no warehouse at {settings.warehouse}: run `miga ingest --data DIR` first",
                        file=str(settings.warehouse))
    from tqdm import tqdm

    con = open_warehouse(settings, read_only=True)
    try:
        out, unwritten = [], []
        for table in tqdm(TABLES, desc="validate", file=sys.stderr, disable=None, leave=False):
            if not table_exists(con, table):
                if table == "feature_panel":
                    continue
                raise DataError(f"warehouse table {table} is missing: run `miga ingest --data DIR`",
                                file=str(settings.warehouse), column=table)
            dates = latest_dates(con, table) if latest and table in DATED else None
            if dates is None:
                out.append(validate(con, table, table, table, f"warehouse:{table}",
                                    settings.reports_dir, gx=gx))
            elif not dates:
                unwritten.append(table)
            else:
                stage_latest(con, table, dates)
                out.append(validate(con, table, f"stage_{table}", f"stage_{table}",
                                    f"warehouse:{table}, the {len(dates)} date(s) the last ingest wrote",
                                    settings.reports_dir, gx=gx,
                                    earlier=lambda t=table: earlier_rows(con, t)))
        return WarehouseValidation(out, unwritten)
    except Exception as e:
        if interrupted(e):  # Ctrl-C inside a DuckDB query: report it as what it is
            raise KeyboardInterrupt("validation interrupted") from e
        raise
    finally:
        con.close()
