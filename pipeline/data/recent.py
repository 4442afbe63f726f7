"""The rows of a dated table (prices, feature_panel) that an ingest just wrote, and the rows
before them that the suite's checks across rows look back on. Used by the ingest's validation
of new files (`pipeline.data.dated_files`) and by the flow's validation of the warehouse after
an ingest (`pipeline.data.validate.validate_warehouse(latest=True)`), so a daily append checks
one day, with the day before as context, not the whole history."""
from __future__ import annotations

import datetime as dt

import duckdb

from pipeline.data.files import DATED, FILES, FOLDERS
from pipeline.warehouse import run_sql, table_exists, table_sql


def earlier_rows(con: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """The warehouse rows the suite's checks across rows look back on, beside the staged rows
    (a view, created once `stage_<table>` is): for prices, the weeks before the first staged
    date (sql/ingest/earlier_prices.sql); None for a table without such checks or a first
    ingest."""
    if table != "prices" or not table_exists(con, "prices"):
        return None
    run_sql(con, "ingest/earlier_prices")
    return "earlier_prices"


def latest_dates(con: duckdb.DuckDBPyConnection, table: str) -> list | None:
    """The dates the newest ingest wrote into `table` (from ingest_files), or None when the
    warehouse does not record it (ingested before ingest_files existed)."""
    if not (table_exists(con, "ingest_files") and table_exists(con, "ingest_log")):
        return None
    return [r[0] for r in run_sql(con, "ingest/latest_dates", {
        "file": FILES[table], "folder": FOLDERS[table] + "/"}).fetchall()]


def stage_latest(con: duckdb.DuckDBPyConnection, table: str, dates: list) -> None:
    """stage_<table>: a view of the table's rows on `dates` (the newest ingest's)."""
    lit = [f"DATE '{dt.date.isoformat(d)}'" for d in dates]   # datetime.date only: no injection
    con.execute(table_sql("ingest/latest_rows", table, DATED)
                .replace("{lo}", lit[0]).replace("{hi}", lit[-1]).replace("{dates}", ", ".join(lit)))
