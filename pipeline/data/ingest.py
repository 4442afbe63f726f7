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

The dated tables, prices and the feature panel, each one file (`daily.parquet`,
`features.parquet`) or a folder of parquet files (`daily/`, `features/`) of which only the new
and changed ones are read, and their parts of the fingerprint (per-date hashes, `prefix_key`)
are `pipeline.data.dated_files`; which file feeds which table, and how one parquet file is
opened literally, `pipeline.data.files`.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.data.dated_files import (DatedFile, check_feature_columns, classify_files,
                                       file_records, folder_files,
                                       stage_files, stage_files_meta, table_key, write_folder,
                                       write_single)
from pipeline.data.files import (DATED, FILES, FOLDERS, INPUT_TABLES, REQUIRED, SOURCES,
                                 check_unique_columns, literal_pattern, unreadable)
from pipeline.data.recent import earlier_rows
from pipeline.data.validate import TableValidation, validate
from pipeline.errors import DataError, interrupted
from pipeline.settings import Settings
from pipeline.warehouse import (MEMORY_LIMIT, count_rows, open_warehouse, run_sql,
                                table_fingerprint)

log = logging.getLogger(__name__)


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
    notes: list[str] = field(default_factory=list)   # features/: files new/changed/kept, overlaps

    def __str__(self) -> str:
        lines = [f"ingested {self.data_dir} in {self.seconds:.1f} s (fingerprint {self.fingerprint})"]
        for t, n in self.staged.items():
            lines.append(f"  {t:<14} {n:>11,} rows in file  -> {self.totals[t]:>11,} rows in table")
        lines += [f"  {n}" for n in self.notes]
        lines += [f"  validated: {v}" for v in self.validations]
        if self.timings:
            lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()))
        return "\n".join(lines)


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A short hash of the content of every input table; changes whenever any of them does.

    membership and index_prices (small) are hashed live. The dated tables, prices and the wide
    feature_panel (seconds to minutes to scan at the whole market), are read from their
    per-date hashes (`prices_dates`, `feature_panel_dates`, kept by the ingest, the only writer
    of input tables)."""
    return _digest(_table_keys(con))


def _table_keys(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {t: table_key(con, t) if t in DATED else table_fingerprint(con, t, INPUT_TABLES)
            for t in INPUT_TABLES}


def _digest(keys: dict[str, str]) -> str:
    return hashlib.sha256(";".join(f"{t}={k}" for t, k in keys.items()).encode()).hexdigest()[:16]


def _source(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    """Open `path` (literally) as the view src_<table>; unreadable files and repeated column
    names become DataError."""
    pattern = literal_pattern(con, path)
    try:
        con.read_parquet(pattern).create_view(f"src_{table}", replace=True)
        count_rows(con, f"src_{table}", SOURCES)
    except duckdb.Error as e:
        raise unreadable(path, e) from e
    check_unique_columns(path)


def _stage(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    try:
        run_sql(con, f"ingest/stage_{table}")
    except duckdb.Error as e:  # e.g. a truncated row group only shows when it is read
        raise unreadable(path, e, rows=True) from e



def _layout(data_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The data folder's single files and folders: ({table: file}, {table: folder}); one line
    for a missing required input or a table given both ways."""
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist", file=str(data_dir))
    files = {t: data_dir / f for t, f in FILES.items() if (data_dir / f).exists()}
    folders: dict[str, Path] = {}
    for t, name in FOLDERS.items():
        folder, single = data_dir / name, FILES[t]
        if not folder.exists():
            continue
        if t in files:
            raise DataError(f"{data_dir}: expectation 'one {single} or {name}/' failed: the folder "
                            f"has both {single} and {name}/; keep one of them (move {single} "
                            f"into {name}/ to ingest it as one of its files)",
                            file=str(data_dir), expectation=f"one {single} or {name}/")
        if not folder.is_dir():
            raise DataError(f"{folder}: expectation '{name}/ is a folder' failed: it is a file; "
                            f"name the single file {single}", file=str(folder),
                            expectation=f"{name}/ is a folder")
        folders[t] = folder
    for t in REQUIRED:
        p = data_dir / FILES[t]
        if t not in folders and not p.is_file():
            raise DataError(f"{p}: expectation 'file exists' failed: a data folder needs "
                            f"daily.parquet (or a daily/ folder), membership.parquet and "
                            f"index.parquet (features.parquet or features/ optional)",
                            file=str(p), expectation="file exists")
    return files, folders


def ingest(settings: Settings, data_dir: Path, memory_limit: str = MEMORY_LIMIT,
           gx: str = "failures") -> IngestReport:
    """Validate the folder's parquet files and upsert them into the warehouse (atomically).

    Every row is checked by the SQL full scan; GX re-runs the suite on the evidence rows
    when a file fails (`gx="always"`: also when it passes; `miga validate` does that).
    A daily/ or features/ folder: only its new and changed files are read
    (`pipeline.data.dated_files`)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    files, folders = _layout(data_dir)
    settings.ensure()
    # Spill to the home folder and cap memory (the wide panel is bigger than RAM); the keys, not
    # the insertion order, order the tables.
    con = open_warehouse(settings, create=True, memory_limit=memory_limit,
                         keep_insertion_order=False)
    steps = tqdm(total=2 * (len(files) + len(folders)) + 2, desc="ingest", unit="step",
                 file=sys.stderr, disable=None, leave=False)
    timings: dict[str, float] = {}
    notes: list[str] = []
    lap = time.perf_counter()

    def mark(step: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - lap
        lap = now

    try:
        con.execute("BEGIN TRANSACTION")
        validations, staged = [], {}
        records = {t: file_records(con, t) for t in DATED}
        dated: dict[str, list[DatedFile]] = {}
        for t, folder in folders.items():
            steps.set_description(f"hash {folder.name}/")
            dated[t] = classify_files(data_dir, folder_files(data_dir, t), records[t])
            mark("hash")
        for t in DATED:
            if t in files:
                dated[t] = classify_files(data_dir, [files[t]], records[t])
                mark("hash")
        for table, path in files.items():
            steps.set_description(f"validate {path.name}")
            _source(con, table, path)
            try:
                validations.append(validate(
                    con, table, f"src_{table}", f"stage_{table}", str(path), settings.reports_dir,
                    gx=gx, prepare=lambda t=table, p=path: _stage(con, t, p),
                    earlier=lambda t=table: earlier_rows(con, t)))
            except duckdb.Error as e:  # a view (feature panel) reads a bad row group only here
                raise unreadable(path, e, rows=True) from e
            staged[table] = validations[-1].rows
            if table in DATED:   # its rows and dates, for the record
                stage_files_meta(con, dated[table])
            steps.update()
            mark(f"validate {table}")
        for t, folder in folders.items():
            todo = [f for f in dated[t] if f.status != "unchanged"]
            staged[t] = 0
            if todo:
                steps.set_description(f"validate {folder.name}/")
                validations.append(stage_files(con, t, data_dir, todo, settings, gx))
                staged[t] = validations[-1].rows
            steps.update()
            mark(f"validate {folder.name}/")
        for table, path in files.items():
            steps.set_description(f"load {table}")
            if table == "feature_panel":
                check_feature_columns(con, path)
            for step in ("create", "delete", "insert"):
                run_sql(con, f"ingest/{step}_{table}")
            if table in DATED:
                write_single(con, table, dated[table][0], records[table])
            steps.update()
        if "membership" in files:
            # The file's intervals passed on their own; merged with those already in the warehouse
            # (another start date is another row) they must not overlap either. A few ms.
            validate(con, "membership", "membership", "membership", str(files["membership"]),
                     settings.reports_dir, gx=gx,
                     context="merged with the warehouse's membership")
        mark("upsert")
        for t, folder in folders.items():
            steps.set_description(f"load {folder.name}/")
            folder_notes, parts = write_folder(con, t, dated[t], records[t])
            notes += folder_notes
            mark(f"{folder.name}/ files")
            timings.update({f"({folder.name}/ {k})": v for k, v in parts.items()})
            steps.update()
        run_sql(con, "ingest/create_ingest_log")
        totals = {t: count_rows(con, t, INPUT_TABLES) for t in staged}
        keys = _table_keys(con)
        feat_fp, fp = keys["feature_panel"], _digest(keys)
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
                          timings, notes)
    log.info("%s", report)
    return report
