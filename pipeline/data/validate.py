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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from pipeline.data.checks import (EVIDENCE_ROWS, EXAMPLES, SCHEMA_TYPES, TABLES, CheckResult,
                                  expand_suite, load_suite, predicate, schema_check,
                                  suite_parameters, unique_check)
from pipeline.errors import DataError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HEAD_ROWS = 500          # plus the table's first rows, so GX also sees clean data
GX_FEATURE_COLUMNS = 8   # feature columns whose passing template checks GX re-runs


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
        if e["type"] in SCHEMA_TYPES:
            checks[i] = schema_check(e, types, rows)
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
                preds[i] = predicate(e, f"p{i}", row_types, sql_params, params)
        if preds:
            aggs = ", ".join(f"count_if({p})" for p in preds.values())  # count_if: FILTER is much slower here
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
                checks[i], ev = unique_check(con, rows_rel, e, columns)
                if ev:
                    evidence.append(ev)
    for i, e in enumerate(exps):  # row checks skipped: the schema is already wrong
        if checks[i] is None:
            checks[i] = CheckResult(e["type"], e["kwargs"], 0, observed=None)
    result = TableValidation(table, source, rows, checks, time.perf_counter() - t0)
    return result, {"exps": exps, "params": params, "evidence": evidence}


def _gx_selection(exps: list[dict], checks: list[CheckResult]) -> list[dict]:
    """Expectations GX re-runs on the evidence: all named ones, every failed one, and the
    feature-column templates of the first `GX_FEATURE_COLUMNS` columns (GX's cost is per
    expectation, 626 features x 3 would take long, and the SQL scan already covered them)."""
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


def validate_warehouse(settings: Settings, gx: str = "always") -> WarehouseValidation:
    """Run every suite over its warehouse table (feature_panel only when present).

    Every row is always checked (the suites compiled to SQL); gx="always" also runs GX itself on
    the evidence rows for the official report, gx="failures" only when a check fails (the flow,
    right after an ingest that validated the same rows, skips GX's fixed start-up cost)."""
    from pipeline.warehouse import open_warehouse, table_exists

    if not settings.warehouse.exists():
        raise DataError(f"no warehouse at {settings.warehouse}: run `miga ingest --data DIR` first",
                        file=str(settings.warehouse))
    from tqdm import tqdm

    con = open_warehouse(settings, read_only=True)
    try:
        out = []
        for table in tqdm(TABLES, desc="validate", file=sys.stderr, disable=None, leave=False):
            if not table_exists(con, table):
                if table == "feature_panel":
                    continue
                raise DataError(f"warehouse table {table} is missing: run `miga ingest --data DIR`",
                                file=str(settings.warehouse), column=table)
            out.append(validate(con, table, table, table, f"warehouse:{table}",
                                settings.reports_dir, gx=gx))
        return WarehouseValidation(out)
    finally:
        con.close()
