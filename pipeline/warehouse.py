"""DuckDB warehouse access and the SQL files in `sql/`.

SQL lives in `sql/<name>.sql`, one statement per file, run with bound `$name` parameters.
Where an identifier must vary (a table name), it is checked against a known list first.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def sql_text(name: str) -> str:
    """The text of `sql/<name>.sql` (name may contain a subfolder: `features/labels`)."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {path}")
    return path.read_text()


def connect(db_path: str | Path, read_only: bool = False, threads: int | None = None,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse; the parent folder must exist unless read_only."""
    db_path = Path(db_path)
    if read_only and not db_path.exists():
        raise FileNotFoundError(f"no warehouse at {db_path}: run `miga ingest --data DIR` first")
    config: dict[str, str] = {}
    if threads:
        config["threads"] = str(threads)
    if memory_limit:
        config["memory_limit"] = memory_limit
    return duckdb.connect(str(db_path), read_only=read_only, config=config)


@contextmanager
def warehouse(db_path: str | Path, read_only: bool = False, **kw) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(db_path, read_only=read_only, **kw)
    try:
        yield con
    finally:
        con.close()


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None):
    """Execute `sql/<name>.sql` with bound parameters; returns the connection's result."""
    return con.execute(sql_text(name), params or {})


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = $t", {"t": table}
    ).fetchall()[0][0])


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str, known: tuple[str, ...]) -> str:
    """A cheap content fingerprint of a table (row count + hash aggregate), for caching.

    `table` must be one of `known` (identifiers are never taken from user input unchecked).
    """
    if table not in known:
        raise ValueError(f"unknown table {table!r}; expected one of {known}")
    if not table_exists(con, table):
        return "absent"
    n, h = con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} t").fetchall()[0]
    return f"{n}:{int(h) & 0xFFFFFFFFFFFFFFFF:016x}"


def warehouse_id(db_path: str | Path) -> str:
    """The warehouse's identity, created with the file: cache keys use it so that a deleted and
    recreated warehouse is never mistaken for the old one."""
    import uuid

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with warehouse(db_path) as con:
        run_sql(con, "warehouse/create_meta")
        run_sql(con, "warehouse/init_meta", {"id": uuid.uuid4().hex})
        return run_sql(con, "warehouse/get_meta").fetchall()[0][0]
