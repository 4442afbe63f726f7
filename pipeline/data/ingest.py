"""Load a data folder into the DuckDB warehouse: atomic, idempotent, incremental, out of core.

One transaction per ingest. Inside it, every file is opened as a DuckDB parquet view
(`src_<table>`), its schema checked, then staged (`sql/ingest/stage_<table>.sql`: a typed
temp table, or a view for the wide feature panel) and validated over every row
(`pipeline.data.validate`). Only when every file passed are the real tables touched: rows
whose key is re-delivered are deleted and the staged rows inserted (`delete_*`, `insert_*`),
so the same folder twice gives the same tables and a folder with later days adds them.
Any error rolls the transaction back; DuckDB's DDL is transactional, so even tables created
by a failed first ingest disappear. Ctrl-C too: however it surfaces (KeyboardInterrupt, or
DuckDB's interrupt of a running query) the transaction is rolled back and KeyboardInterrupt
raised, never a DataError. The data never passes through pandas (only the few evidence rows
handed to GX do).

Paths are literal: DuckDB's read_parquet expands `*`, `?` and `[...]` even in a list of files,
so those characters are escaped as one-character classes (`[*]`, `[?]`, `[[]`), and the pattern
is checked to name exactly the file. Column names are read from the parquet schema itself
(pyarrow): duplicates are refused, where DuckDB would rename the second copy.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.data.validate import TableValidation, validate
from pipeline.errors import DataError, interrupted
from pipeline.settings import Settings
from pipeline.warehouse import (MEMORY_LIMIT, columns, count_rows, open_warehouse, run_sql,
                                table_exists, table_fingerprint)

log = logging.getLogger(__name__)

# warehouse table -> file in the data folder; the first three are required.
FILES = {"prices": "daily.parquet", "membership": "membership.parquet",
         "index_prices": "index.parquet", "feature_panel": "features.parquet"}
REQUIRED = ("prices", "membership", "index_prices")
INPUT_TABLES = tuple(FILES)
SOURCES = tuple(f"src_{t}" for t in FILES) + ("stage_feature_panel",)   # the ingest's own views


@dataclass
class IngestReport:
    """What one ingest did; prints as a short table."""

    data_dir: Path
    staged: dict[str, int]                 # table -> rows in the file
    totals: dict[str, int]                 # table -> rows in the warehouse after
    validations: list[TableValidation] = field(default_factory=list)
    fingerprint: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)   # step -> seconds

    def __str__(self) -> str:
        lines = [f"ingested {self.data_dir} in {self.seconds:.1f} s (fingerprint {self.fingerprint})"]
        for t, n in self.staged.items():
            lines.append(f"  {t:<14} {n:>11,} rows in file  -> {self.totals[t]:>11,} rows in table")
        lines += [f"  validated: {v}" for v in self.validations]
        if self.timings:
            lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
        return "\n".join(lines)


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A short hash of the content of every input table; changes whenever any of them does.

    prices, membership and index_prices are hashed live (a fraction of a second for the shared
    data). The wide feature_panel (seconds to minutes to scan) is hashed once by the ingest that
    writes it and read back from `ingest_log`; only ingest writes input tables."""
    return _combine(con, _feature_fingerprint(con))


def _combine(con: duckdb.DuckDBPyConnection, feature_fp: str) -> str:
    parts = [f"{t}={table_fingerprint(con, t, INPUT_TABLES)}" for t in REQUIRED]
    parts.append(f"feature_panel={feature_fp}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


def _feature_fingerprint(con: duckdb.DuckDBPyConnection, live: bool = False) -> str:
    if not table_exists(con, "feature_panel"):
        return "absent"
    cols = ",".join(columns(con, "feature_panel", INPUT_TABLES))
    if not live and table_exists(con, "ingest_log"):
        rows = count_rows(con, "feature_panel", INPUT_TABLES)
        hit = run_sql(con, "ingest/last_feature_fingerprint", {"rows": rows}).fetchall()
        if hit:
            return hit[0][0]
    content = table_fingerprint(con, "feature_panel", INPUT_TABLES)
    return hashlib.sha256(f"{cols};{content}".encode()).hexdigest()[:16]


_GLOB_ESCAPES = {"*": "[*]", "?": "[?]", "[": "[[]"}


def literal_pattern(con: duckdb.DuckDBPyConnection, path: Path) -> str:
    """`path` (absolute) as a DuckDB file pattern that matches that one file and nothing else."""
    path = Path(path).absolute()   # absolute: DuckDB would also expand a leading `~`
    pattern = "".join(_GLOB_ESCAPES.get(ch, ch) for ch in str(path))
    if pattern != str(path):
        found = [r[0] for r in con.execute("SELECT file FROM glob($p)", {"p": pattern}).fetchall()]
        if found != [str(path)]:
            raise DataError(f"{path}: expectation 'literal path' failed: DuckDB reads this path "
                            f"as a pattern matching {len(found)} file(s), even escaped; rename the "
                            f"folder without *, ? or [", file=str(path), expectation="literal path")
    return pattern


def _unreadable(path: Path, e: BaseException, rows: bool = False) -> DataError:
    """`e` (from reading `path`) as the 'readable parquet' DataError to raise; Ctrl-C, however
    it surfaced, is raised as it is. rows: the file opened but a row group did not read."""
    if interrupted(e):
        raise e
    first = str(e).splitlines()[0] if str(e) else ""
    what = f"on its rows ({first})" if rows else f"({type(e).__name__}: {first})"
    return DataError(f"{path}: expectation 'readable parquet' failed {what}. Re-export it as "
                     "parquet.", file=str(path), expectation="readable parquet")


def _check_unique_columns(path: Path) -> None:
    """Refuse a file whose schema repeats a column name (parquet allows it; DuckDB would
    rename the copy, e.g. f0001 -> f0001_1, and a features file would gain a column)."""
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as f:   # a file object: pyarrow takes no path as a pattern or URI
            names = pq.read_schema(f).names
    except Exception as e:  # noqa: BLE001 - pyarrow's errors vary; DuckDB read it already
        raise _unreadable(path, e) from e
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    dups = [f"{n} ({k} times)" for n, k in seen.items() if k > 1]
    if dups:
        first = next(n for n, k in seen.items() if k > 1)
        shown = ", ".join(dups[:5]) + (f" and {len(dups) - 5} more" if len(dups) > 5 else "")
        raise DataError(f"{path}: expectation 'unique column names' failed: {len(dups)} column "
                        f"name(s) repeated: {shown}; a reader would rename the copies (e.g. "
                        f"{first}_1). Give every column its own name and re-export it",
                        file=str(path), column=first, expectation="unique column names",
                        count=len(dups), examples=dups[:5])


def _source(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    """Open `path` (literally) as the view src_<table>; unreadable files and repeated column
    names become DataError."""
    pattern = literal_pattern(con, path)
    try:
        con.read_parquet(pattern).create_view(f"src_{table}", replace=True)
        count_rows(con, f"src_{table}", SOURCES)
    except duckdb.Error as e:
        raise _unreadable(path, e) from e
    _check_unique_columns(path)


def _stage(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    try:
        run_sql(con, f"ingest/stage_{table}")
    except duckdb.Error as e:  # e.g. a truncated row group only shows when it is read
        raise _unreadable(path, e, rows=True) from e


def _check_feature_columns(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    if not table_exists(con, "feature_panel"):
        return
    have = columns(con, "feature_panel", INPUT_TABLES)
    new = columns(con, "stage_feature_panel", SOURCES)
    if sorted(have) != sorted(new):
        diff = sorted(set(have) ^ set(new))
        raise DataError(f"{path}: expectation 'same feature columns as feature_panel' failed: "
                        f"{len(diff)} columns differ, e.g. {diff[:5]}; ingest it into a fresh home "
                        f"folder (MIGA_HOME) instead", file=str(path), column=diff[0],
                        expectation="same feature columns as feature_panel", count=len(diff))


def ingest(settings: Settings, data_dir: Path, memory_limit: str = MEMORY_LIMIT,
           gx: str = "failures") -> IngestReport:
    """Validate the folder's parquet files and upsert them into the warehouse (atomically).

    Every row is checked by the SQL full scan; GX re-runs the suite on the evidence rows
    when a file fails (`gx="always"`: also when it passes; `miga validate` does that)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist", file=str(data_dir))
    paths = {t: data_dir / f for t, f in FILES.items() if t in REQUIRED or (data_dir / f).exists()}
    for t, p in paths.items():
        if not p.is_file():
            raise DataError(f"{p}: expectation 'file exists' failed: a data folder needs "
                            f"{', '.join(FILES[t] for t in REQUIRED)} (features.parquet optional)",
                            file=str(p), expectation="file exists")
    settings.ensure()
    # Spill to the home folder and cap memory (the wide panel is bigger than RAM); the keys, not
    # the insertion order, order the tables.
    con = open_warehouse(settings, create=True, memory_limit=memory_limit,
                         keep_insertion_order=False)
    steps = tqdm(total=2 * len(paths) + 1, desc="ingest", unit="step", file=sys.stderr,
                 disable=None, leave=False)
    timings: dict[str, float] = {}
    lap = time.perf_counter()

    def mark(step: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[step] = now - lap
        lap = now

    try:
        con.execute("BEGIN TRANSACTION")
        validations, staged = [], {}
        for table, path in paths.items():
            steps.set_description(f"validate {path.name}")
            _source(con, table, path)
            try:
                validations.append(validate(
                    con, table, f"src_{table}", f"stage_{table}", str(path), settings.reports_dir,
                    gx=gx, prepare=lambda t=table, p=path: _stage(con, t, p)))
            except duckdb.Error as e:  # a view (feature panel) reads a bad row group only here
                raise _unreadable(path, e, rows=True) from e
            staged[table] = validations[-1].rows
            steps.update()
        mark("stage+validate")
        for table, path in paths.items():
            steps.set_description(f"load {table}")
            if table == "feature_panel":
                _check_feature_columns(con, path)
            for step in ("create", "delete", "insert"):
                run_sql(con, f"ingest/{step}_{table}")
            steps.update()
        if "membership" in paths:
            # The file's intervals passed on their own; merged with those already in the warehouse
            # (another start date is another row) they must not overlap either. A few ms.
            validate(con, "membership", "membership", "membership", str(paths["membership"]),
                     settings.reports_dir, gx=gx,
                     context="merged with the warehouse's membership")
        mark("upsert")
        run_sql(con, "ingest/create_ingest_log")
        totals = {t: count_rows(con, t, INPUT_TABLES) for t in paths}
        feat_fp = _feature_fingerprint(con, live="feature_panel" in paths)
        fp = _combine(con, feat_fp)
        run_sql(con, "ingest/insert_ingest_log", {
            "data_dir": str(data_dir.resolve()), "fingerprint": fp,
            "feature_panel_fingerprint": None if feat_fp == "absent" else feat_fp,
            **{f"{t}_rows": totals.get(t) for t in INPUT_TABLES}})
        mark("fingerprint")
        con.execute("COMMIT")
        mark("commit")
        steps.update()
    except BaseException as e:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:  # nothing to roll back: BEGIN itself failed
            pass
        if interrupted(e) and not isinstance(e, KeyboardInterrupt):
            raise KeyboardInterrupt("ingest interrupted; the warehouse is unchanged") from e
        raise
    finally:
        steps.close()
        con.close()
    report = IngestReport(data_dir, staged, totals, validations, fp, time.perf_counter() - t0,
                          timings)
    log.info("%s", report)
    return report
