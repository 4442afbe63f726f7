"""`miga features`: tables `features`, `labels`, `market_features` from the warehouse.

Each table remembers (table `feature_builds`) the last prices date it was built from and a hash
of the prices up to that date. On the next run:
  - same hash, no later prices          -> nothing to do;
  - same hash, later prices (new days)  -> extend: features for the new dates only, each stock
    read with its previous 61 rows so every 60-day window is complete; labels from the last 2
    labelled days on (they looked at days that had not arrived);
  - different hash (history rewritten)  -> rebuild.
Alpha158 runs in statements of up to BATCH_ROWS rows (whole stocks); the warehouse's memory
limit (`pipeline.warehouse.MEMORY_LIMIT`) bounds DuckDB's memory. When the warehouse holds
`feature_panel`, `features` is a view on it instead.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import date

from pipeline.data.dated_files import prefix_key
from pipeline.errors import MigaError
from pipeline.features.alpha158 import LOOKBACK_ROWS
from pipeline.warehouse import (count_rows, first_row, open_warehouse, run_sql, sql_text,
                                table_exists, table_fingerprint)

log = logging.getLogger(__name__)

EPOCH = date(1900, 1, 1)
# Rows read per Alpha158 statement. Stocks are packed into statements by the rows each needs, so
# an extend by a few days (61 lookback rows a stock) is one statement: planning a statement has
# a fixed cost that would otherwise dominate a one-day extend. The warehouse's memory limit
# bounds DuckDB's memory at any size, so the size trades that fixed cost against spilling, which
# starts above a few million rows (figures in benchmarks/bench_features.py's docstring).
BATCH_ROWS = 3_000_000
_TARGETS = ("features", "features_new", "labels", "labels_new", "market_features")


@dataclass
class FeatureBuildSummary:
    steps: list[tuple[str, str, int, float]] = field(default_factory=list)  # table, action, rows, s

    def add(self, table: str, action: str, rows: int, seconds: float) -> None:
        self.steps.append((table, action, rows, seconds))
        log.info("%s: %s (%d rows, %.1f s)", table, action, rows, seconds)

    @property
    def changed(self) -> bool:
        return any(not a.startswith("unchanged") for _, a, _, _ in self.steps)

    def __str__(self) -> str:
        lines = ["features:"]
        for t, a, n, s in self.steps:
            lines.append(f"  {t:<16} {a:<28} {n:>11,} rows  {s:6.1f} s")
        return "\n".join(lines)


def build_features(settings, config=None, force: bool = False,
                   batch_rows: int = BATCH_ROWS) -> FeatureBuildSummary:
    """Build or extend `features`, `labels` and `market_features`; a no-op when unchanged."""
    con = open_warehouse(settings)
    try:
        for t in ("prices", "index_prices"):
            if not table_exists(con, t):
                raise MigaError(f"warehouse table {t} is missing: run `miga ingest` first")
        run_sql(con, "features/create_feature_builds")
        last = first_row(con, "features/prices_last_date")[0]
        if last is None:
            raise MigaError("table prices is empty: nothing to build features from")
        summary = FeatureBuildSummary()
        _features(con, last, force, batch_rows, summary)
        _labels(con, last, force, summary)
        _market(con, last, force, summary)
        return summary
    finally:
        con.close()


def _source(kind: str, sql_name: str) -> str:
    """Source tag stored with a build: the SQL's hash makes a changed definition rebuild."""
    digest = hashlib.sha256(sql_text(sql_name).encode()).hexdigest()[:12]
    return f"{kind}:{digest}"


def _plan(con, name: str, source: str, last, force: bool) -> tuple[str, date]:
    """("unchanged" | "extend" | "rebuild", dates after which to compute)."""
    row = first_row(con, "features/get_feature_build", {"name": name})
    if force or row is None or row[0] != source or not table_exists(con, name):
        return "rebuild", EPOCH
    _, built_last, fp = row
    if prefix_key(con, "prices", built_last) != fp:
        return "rebuild", EPOCH
    if last > built_last:
        return "extend", built_last
    return "unchanged", built_last


def _record(con, name, source, last, rows, seconds) -> None:
    run_sql(con, "features/upsert_feature_build", {
        "name": name, "source": source, "last_date": last, "prefix_fp": prefix_key(con, "prices", last),
        "rows": rows, "seconds": round(seconds, 2)})


def _table_type(con, name: str) -> str | None:
    row = first_row(con, "features/table_type", {"name": name})
    return row[0] if row else None


def _count(con, table: str) -> int:
    return count_rows(con, table, _TARGETS)


def _stock_batches(stock_rows, batch_rows: int) -> list[list[str]]:
    """Consecutive groups of stocks, each reading at most batch_rows rows (or one stock)."""
    batches, batch, n = [], [], 0
    for instrument, rows in stock_rows:
        if batch and n + rows > batch_rows:
            batches.append(batch)
            batch, n = [], 0
        batch.append(instrument)
        n += rows
    return batches + [batch] if batch else batches


def _features(con, last, force, batch_rows, summary) -> None:
    t0 = time.perf_counter()
    if table_exists(con, "feature_panel"):
        row = first_row(con, "features/get_feature_build", {"name": "features"})
        if not force and row and row[0] == "feature_panel" and _table_type(con, "features") == "VIEW":
            summary.add("features", "unchanged (feature_panel)", 0, 0.0)
            return
        if _table_type(con, "features") == "BASE TABLE":
            con.execute("DROP TABLE features")
        run_sql(con, "features/features_from_panel")
        _record(con, "features", "feature_panel", last, 0, time.perf_counter() - t0)
        summary.add("features", "view on feature_panel", _count(con, "features"),
                    time.perf_counter() - t0)
        return
    source = _source("alpha158", "features/alpha158")
    action, after = _plan(con, "features", source, last, force)
    if action == "unchanged":
        summary.add("features", "unchanged (alpha158)", 0, 0.0)
        return
    target = "features_new" if action == "rebuild" else "features"
    if action == "rebuild":
        con.execute("DROP TABLE IF EXISTS features_new")
    else:
        run_sql(con, "features/delete_features_after", {"after": after})
    before = 0 if action == "rebuild" else _count(con, "features")
    stock_rows = run_sql(con, "features/instruments", {"after": after, "lookback": LOOKBACK_ROWS}).fetchall()
    query = sql_text("features/alpha158")
    done = 0
    for i, batch in enumerate(_stock_batches(stock_rows, batch_rows)):
        params = {"instruments": batch, "after": after, "lookback": LOOKBACK_ROWS}
        if target == "features_new" and i == 0:
            con.execute("CREATE TABLE features_new AS " + query, params)
        else:
            con.execute(f"INSERT INTO {target} " + query, params)
        done += len(batch)
        log.info("alpha158: %d/%d stocks", done, len(stock_rows))
    if action == "rebuild":
        con.execute("BEGIN TRANSACTION")
        if _table_type(con, "features") == "VIEW":
            con.execute("DROP VIEW features")
        con.execute("DROP TABLE IF EXISTS features")
        con.execute("ALTER TABLE features_new RENAME TO features")
        con.execute("COMMIT")
    rows = _count(con, "features") - before
    _record(con, "features", source, last, _count(con, "features"), time.perf_counter() - t0)
    summary.add("features", f"{'built' if action == 'rebuild' else 'extended'} (alpha158)",
                rows, time.perf_counter() - t0)


def _labels(con, last, force, summary) -> None:
    t0 = time.perf_counter()
    source = _source("sql", "features/labels")
    action, built_last = _plan(con, "labels", source, last, force)
    if action == "unchanged":
        summary.add("labels", "unchanged", 0, 0.0)
        return
    query = sql_text("features/labels")
    if action == "rebuild":
        con.execute("CREATE OR REPLACE TABLE labels AS " + query, {"after": EPOCH})
        rows = _count(con, "labels")
    else:
        after = first_row(con, "features/label_recompute_from", {"last_date": built_last})[0]
        con.execute("BEGIN TRANSACTION")
        run_sql(con, "features/delete_labels_after", {"after": after})
        before = _count(con, "labels")
        con.execute("INSERT INTO labels " + query, {"after": after})
        con.execute("COMMIT")
        rows = _count(con, "labels") - before
    _record(con, "labels", source, last, _count(con, "labels"), time.perf_counter() - t0)
    summary.add("labels", "built" if action == "rebuild" else "extended (last 2 days + new)",
                rows, time.perf_counter() - t0)


def _market(con, last, force, summary) -> None:
    # Tiny (a few indices x days): rebuilt whenever prices or index levels changed.
    t0 = time.perf_counter()
    fp = "|".join((table_fingerprint(con, "index_prices", ("index_prices",)), prefix_key(con, "prices", last),
                   _source("sql", "features/market_features")))
    row = first_row(con, "features/get_feature_build", {"name": "market_features"})
    if not force and row and row[2] == fp and table_exists(con, "market_features"):
        summary.add("market_features", "unchanged", 0, 0.0)
        return
    run_sql(con, "features/market_features")
    rows = _count(con, "market_features")
    run_sql(con, "features/upsert_feature_build", {
        "name": "market_features", "source": "sql", "last_date": last, "prefix_fp": fp,
        "rows": rows, "seconds": round(time.perf_counter() - t0, 2)})
    summary.add("market_features", "built", rows, time.perf_counter() - t0)
