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

The feature panel, one `features.parquet` or a `features/` folder of parquet files of which
only the new and changed ones are read, and its part of the fingerprint (per-date hashes,
`panel_prefix_key`) are `pipeline.data.panel_files`; which file feeds which table, and how one
parquet file is opened literally, `pipeline.data.files`.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.data.files import (FILES, INPUT_TABLES, PANEL_DIR, PANEL_FILE, REQUIRED, SOURCES,
                                 check_unique_columns, literal_pattern, unreadable)
from pipeline.data.panel_files import (PanelFile, check_feature_columns, classify_files,
                                       ensure_date_hashes, feature_files, feature_fingerprint,
                                       file_records, stage_files, stage_files_meta, write_folder,
                                       write_single)
from pipeline.data.panel_files import panel_prefix_key  # noqa: F401 - callers import it from here
from pipeline.data.validate import TableValidation, validate
from pipeline.errors import DataError, interrupted
from pipeline.settings import Settings
from pipeline.warehouse import (MEMORY_LIMIT, count_rows, open_warehouse, run_sql, table_exists,
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

    prices, membership and index_prices are hashed live (a fraction of a second for the shared
    data). The wide feature_panel (seconds to minutes to scan) is read from its per-date hashes
    (`feature_panel_dates`, kept by the ingest, the only writer of input tables)."""
    return _combine(con, feature_fingerprint(con))


def _combine(con: duckdb.DuckDBPyConnection, feature_fp: str) -> str:
    parts = [f"{t}={table_fingerprint(con, t, INPUT_TABLES)}" for t in REQUIRED]
    parts.append(f"feature_panel={feature_fp}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]



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



def ingest(settings: Settings, data_dir: Path, memory_limit: str = MEMORY_LIMIT,
           gx: str = "failures") -> IngestReport:
    """Validate the folder's parquet files and upsert them into the warehouse (atomically).

    Every row is checked by the SQL full scan; GX re-runs the suite on the evidence rows
    when a file fails (`gx="always"`: also when it passes; `miga validate` does that).
    A features/ folder: only its new and changed files are read (`pipeline.data.panel_files`)."""
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
    folder = data_dir / PANEL_DIR
    if folder.exists():
        if "feature_panel" in paths:
            raise DataError(f"{data_dir}: expectation 'one feature panel' failed: the folder has "
                            f"both {PANEL_FILE} and {PANEL_DIR}/; keep one of them (move "
                            f"{PANEL_FILE} into {PANEL_DIR}/ to ingest it as one of its files)",
                            file=str(data_dir), expectation="one feature panel")
        if not folder.is_dir():
            raise DataError(f"{folder}: expectation 'features/ is a folder' failed: it is a file; "
                            f"name the single panel file {PANEL_FILE}", file=str(folder),
                            expectation="features/ is a folder")
    settings.ensure()
    # Spill to the home folder and cap memory (the wide panel is bigger than RAM); the keys, not
    # the insertion order, order the tables.
    con = open_warehouse(settings, create=True, memory_limit=memory_limit,
                         keep_insertion_order=False)
    steps = tqdm(total=2 * len(paths) + 3, desc="ingest", unit="step", file=sys.stderr,
                 disable=None, leave=False)
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
        records = file_records(con)
        panel_files: list[PanelFile] = []
        if folder.is_dir():
            steps.set_description(f"hash {PANEL_DIR}/")
            panel_files = classify_files(data_dir, feature_files(data_dir), records)
            mark("hash")
        elif "feature_panel" in paths:
            panel_files = classify_files(data_dir, [paths["feature_panel"]], records)
            mark("hash")
        todo = [f for f in panel_files if f.status != "unchanged"]
        for table, path in paths.items():
            steps.set_description(f"validate {path.name}")
            _source(con, table, path)
            try:
                validations.append(validate(
                    con, table, f"src_{table}", f"stage_{table}", str(path), settings.reports_dir,
                    gx=gx, prepare=lambda t=table, p=path: _stage(con, t, p)))
            except duckdb.Error as e:  # a view (feature panel) reads a bad row group only here
                raise unreadable(path, e, rows=True) from e
            staged[table] = validations[-1].rows
            steps.update()
            mark(f"validate {table}")
        if folder.is_dir() and todo:
            steps.set_description(f"validate {PANEL_DIR}/")
            validations.append(stage_files(con, data_dir, todo, settings, gx))
            staged["feature_panel"] = validations[-1].rows
            mark(f"validate {PANEL_DIR}/")
        elif "feature_panel" in paths:   # features.parquet: its rows and dates, for the record
            stage_files_meta(con, panel_files)
            mark("validate feature_panel")
        steps.update()
        for table, path in paths.items():
            steps.set_description(f"load {table}")
            if table == "feature_panel":
                check_feature_columns(con, path)
                ensure_date_hashes(con)
            for step in ("create", "delete", "insert"):
                run_sql(con, f"ingest/{step}_{table}")
            if table == "feature_panel":
                write_single(con, panel_files[0], records)
            steps.update()
        if "membership" in paths:
            # The file's intervals passed on their own; merged with those already in the warehouse
            # (another start date is another row) they must not overlap either. A few ms.
            validate(con, "membership", "membership", "membership", str(paths["membership"]),
                     settings.reports_dir, gx=gx,
                     context="merged with the warehouse's membership")
        mark("upsert")
        if folder.is_dir():
            steps.set_description(f"load {PANEL_DIR}/")
            folder_notes, parts = write_folder(con, panel_files, records)
            notes += folder_notes
            mark("panel files")
            timings.update({f"({k})": v for k, v in parts.items()})
        steps.update()
        run_sql(con, "ingest/create_ingest_log")
        has_panel = table_exists(con, "feature_panel")
        totals = {t: count_rows(con, t, INPUT_TABLES) for t in paths}
        if has_panel and (folder.is_dir() or "feature_panel" in paths):
            totals["feature_panel"] = count_rows(con, "feature_panel", INPUT_TABLES)
        feat_fp = feature_fingerprint(con)
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
    if folder.is_dir() and "feature_panel" not in staged and "feature_panel" in totals:
        staged["feature_panel"] = 0
    report = IngestReport(data_dir, staged, totals, validations, fp, time.perf_counter() - t0,
                          timings, notes)
    log.info("%s", report)
    return report
