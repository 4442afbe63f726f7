"""The one door to the DuckDB warehouse, and the SQL files in `sql/`.

`open_warehouse(settings)` is how every module opens `MIGA_HOME/warehouse.duckdb`: one place
sets the memory limit, the spill folder (inside the home folder, never /tmp), the threads and
read-only access, so no two callers drift apart.

Several processes on one home: DuckDB lets one process write a file, or several read it. A
command that only reads opens the warehouse read-only (and briefly); one that finds the file
held by another process waits for it (`settings.lock_wait` seconds, saying once for whom it
waits), then runs, or stops with one line naming the holder.

SQL lives in `sql/<name>.sql`, one statement per file, run with bound `$name` parameters.
Where an identifier must vary (a table name), it is checked against a known list first; the
few such statements are the helpers at the end of this module.
"""
from __future__ import annotations

import re
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from pipeline.errors import MigaError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MEMORY_LIMIT = "3GB"   # DuckDB's own memory: the rest of the machine is for numpy and torch


def open_warehouse(settings, read_only: bool = False, *, create: bool = False,
                   memory_limit: str = MEMORY_LIMIT, threads: int | None = None,
                   keep_insertion_order: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the warehouse of `settings` (a MigaError when it does not exist, unless `create`).

    keep_insertion_order=False lets DuckDB reorder a bulk insert (the ingest's wide tables:
    order is restored by the keys). DuckDB's progress bar shows only on a terminal."""
    path = Path(settings.warehouse)
    if not path.exists() and (read_only or not create):
        raise MigaError(f"no warehouse at {path}: run `miga ingest --data DIR` first")
    settings.ensure()
    config = {"memory_limit": memory_limit,
              "temp_directory": str(settings.tmp_dir / "duckdb"),
              "preserve_insertion_order": str(keep_insertion_order).lower()}
    if threads:
        config["threads"] = str(threads)
    con = _connect_waiting(path, read_only, config, settings.lock_wait)
    con.execute("SET enable_progress_bar = " + ("true" if sys.stderr.isatty() else "false"))
    return con


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.*) \(PID (\d+)\)")
LOCK_POLL_SECONDS = 0.5


def _connect_waiting(path: Path, read_only: bool, config: dict,
                     wait: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, waiting up to `wait` seconds while another process holds the file."""
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as e:
            m = _LOCK_HOLDER.search(str(e))
            if m is None:
                raise
            holder = holder_description(int(m.group(2)), m.group(1))
            if time.monotonic() >= deadline:
                raise MigaError(f"another miga process holds the warehouse {path} ({holder}); "
                                f"waited {wait:g} s: run this again when it has finished, or "
                                "set MIGA_LOCK_WAIT (seconds) to wait longer") from None
            if not told:
                print(f"waiting for the warehouse {path}: held by {holder} "
                      f"(up to {wait:g} s, MIGA_LOCK_WAIT)", file=sys.stderr, flush=True)
                told = True
            time.sleep(LOCK_POLL_SECONDS)


def holder_description(pid: int, exe: str = "") -> str:
    """`PID 123: miga ingest --data d` from /proc where it can be read, else the executable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cmd = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        cmd = exe
    cmd = re.sub(r"^\S*/(python[\d.]*\s+\S*/)?", "", cmd)   # ".../bin/miga ingest" -> "miga ingest"
    cmd = " ".join(cmd.split())                               # one line, whatever the arguments hold
    return f"PID {pid}: {cmd[:120]}" if cmd else f"PID {pid}"


@contextmanager
def warehouse(settings, read_only: bool = False, **kw) -> Iterator[duckdb.DuckDBPyConnection]:
    """`open_warehouse` as a context manager: the connection is closed on the way out."""
    con = open_warehouse(settings, read_only=read_only, **kw)
    try:
        yield con
    finally:
        con.close()


def sql_text(name: str) -> str:
    """The text of `sql/<name>.sql` (name may contain a subfolder: `features/labels`)."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None):
    """Execute `sql/<name>.sql` with bound parameters; returns the connection's result."""
    return con.execute(sql_text(name), params or {})


def table_sql(name: str, table: str, known: tuple[str, ...]) -> str:
    """The text of `sql/<name>.sql` written for any of several tables: `{table}` in it stands
    for `table`, which must be one of `known` (identifiers are never taken from user input)."""
    return sql_text(name).replace("{table}", _checked(table, known))


def run_table_sql(con: duckdb.DuckDBPyConnection, name: str, table: str, known: tuple[str, ...],
                  params: dict | None = None):
    """Execute `table_sql(name, table, known)` with bound parameters."""
    return con.execute(table_sql(name, table, known), params or {})


def query_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None):
    """`sql/<name>.sql` as a DuckDB relation: Arrow output without the DB-API result's copy."""
    return con.sql(sql_text(name), params=params or None)


def first_row(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None):
    """The first row of `sql/<name>.sql`, or None (the result is consumed: DuckDB refuses new
    work on an unfinished one)."""
    rows = run_sql(con, name, params).fetchall()
    return rows[0] if rows else None


def warehouse_id(settings) -> str:
    """The warehouse's identity, created with the file: cache keys use it so that a deleted and
    recreated warehouse is never mistaken for the old one."""
    with warehouse(settings, create=True) as con:
        run_sql(con, "warehouse/create_meta")
        run_sql(con, "warehouse/init_meta", {"id": uuid.uuid4().hex})
        return first_row(con, "warehouse/get_meta")[0]


# ---------------------------------------------------------------- identifier-checked helpers
def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(first_row(con, "warehouse/table_exists", {"t": table})[0])


def _checked(table: str, known: tuple[str, ...]) -> str:
    if table not in known:
        raise ValueError(f"unknown table {table!r}; expected one of {known}")
    return table


def columns(con: duckdb.DuckDBPyConnection, table: str, known: tuple[str, ...]) -> list[str]:
    """Column names of `table` (one of `known`), in order."""
    return [r[0] for r in con.execute(f"DESCRIBE {_checked(table, known)}").fetchall()]


def count_rows(con: duckdb.DuckDBPyConnection, table: str, known: tuple[str, ...]) -> int:
    return con.execute(f"SELECT count(*) FROM {_checked(table, known)}").fetchall()[0][0]


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str, known: tuple[str, ...]) -> str:
    """A cheap content fingerprint of a table (row count + hash aggregate), for caching.

    `table` must be one of `known` (identifiers are never taken from user input unchecked).
    """
    _checked(table, known)
    if not table_exists(con, table):
        return "absent"
    n, h = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} t").fetchall()[0]
    return f"{n}:{int(h) & 0xFFFFFFFFFFFFFFFF:016x}"
