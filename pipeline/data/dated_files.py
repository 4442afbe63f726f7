"""The dated input tables' files and hashes: `prices` and `feature_panel`, each fed by one file
(`daily.parquet`, `features.parquet`) or by a folder of parquet files (`daily/`, `features/`)
of which an ingest reads only the new and changed ones; the `ingest_files` records that tell new,
changed and unchanged files apart; and the per-date hashes behind the tables' fingerprints.

A folder may hold its parquet files at any depth: one file per day, month or year as a vendor
delivers them, hive folders such as features/year=2019/part-0.parquet too; names starting with
`.` or `_` are not data; hive folder names add no column. A data folder holding both the file
and the folder of one table is refused (keep one). Per file, `ingest_files` records its path
relative to the data folder, size, sha256 of its bytes (hashlib, streamed), rows, dates (min,
max and the distinct list) and when it was written. A file is known by that relative path: the
same names in another data folder ingested into the same home are the same files.

- new / unchanged / changed is decided by (path, size, sha256). A file whose size and mtime
  equal its record is unchanged without being hashed; unchanged files are never read by
  DuckDB, so a daily append reads (and validates) one file per table whatever the history.
- The new and changed files of a table are opened as one view (by column name) and validated
  together over every row with the table's suite (so a key in two files is caught too). On a
  failure each file is checked alone so that the one-line error names the file at fault (a
  truncated footer or a repeated column name is found before, per file; garbled pages on a
  cursor of its own, because a DuckDB error aborts the transaction); a key in two new files
  names both. Columns: every features file must have exactly the panel's columns (the first
  file's for a new panel; the order may differ); every daily file must have the prices suite's
  columns (extra ones are ignored, as in daily.parquet). Refused naming the differing columns.
- The prices suite's checks across rows (a stock's adjusted close against its previous row)
  look back into the warehouse: the rows of the few weeks before the staged ones are the
  context (`sql/ingest/earlier_prices.sql`), so a new day is checked against the day before.
- A changed file is re-ingested for its dates: the table's rows on the dates it held before and
  the dates it holds now are deleted (whole dates: a vendor's files partition by date), except
  dates another recorded file of the same table also holds, and its rows inserted. The report
  says "re-ingested features/2019-03.parquet (changed): dates 2019-03-01..2019-03-29".
- A new (or changed) file whose dates the table holds already overlaps: its rows replace the
  table's rows of the same (date, instrument) (other rows of those dates stay) and the report
  says how many rows were replaced and how many of them differ.
- A recorded file no longer in the folder: its rows are kept, the report says so.
- daily.parquet and features.parquet keep their rules: read, validated and upserted by key
  every time.

No fingerprint scans the tables: `prices_dates` and `feature_panel_dates` hold, per date, the
row count and an order-free hash of that date's rows, and an ingest re-hashes only the dates it
wrote or cleared (every date for a single file). A table's part of `data_fingerprint` and
`prefix_key(con, table, through)` (equal exactly while the rows up to `through` are unchanged:
the feature build's and the tensor store's extension key) are digests of those rows. Being
hashes of the rows, not of the file records, they also come back when a file is changed back,
and a folder and a single file of the same rows give the same fingerprint. A table ingested
before these hashes existed is hashed once by the next ingest.

Cost (benchmarks/bench_panel_ingest.py, 1,000 stocks x 1,000 days x 626 float32 features in
47 month files): the first ingest 58 s at 2.9 GiB peak RSS, 1.2x DuckDB's bare `INSERT INTO t
SELECT * FROM read_parquet(files)` of the same files (1.4x the bare insert with the ingest's
preserve_insertion_order=false); the insert itself is 40 of the 58 s. At 2,000 x 2,500 days
(11.3 GiB, 116 files, prices in daily/ too): 158 s at 3.3 GiB, 0.97x / 1.61x. The daily append:
benchmarks/bench_panel_store.py (a daily/ and a features/ file, at two history lengths).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.data.checks import load_suite
from pipeline.data.files import (DATED, FILES, FOLDERS, INPUT_TABLES, SOURCES,
                                 check_unique_columns, literal_pattern, unreadable)
from pipeline.data.recent import earlier_rows
from pipeline.data.validate import TableValidation, validate
from pipeline.errors import DataError, interrupted
from pipeline.settings import Settings
from pipeline.warehouse import (columns, count_rows, first_row, run_sql, run_table_sql,
                                table_exists, table_fingerprint)

log = logging.getLogger(__name__)

_HASHED = DATED + tuple(f"{t}_dates" for t in DATED)


def _sql(con: duckdb.DuckDBPyConnection, name: str, table: str, params: dict | None = None):
    """sql/ingest/<name>.sql written for any dated table (`{table}` in its text)."""
    return run_table_sql(con, f"ingest/{name}", table, DATED, params)


@dataclass
class DatedFile:
    """One file of a dated table in a data folder and what this ingest makes of it."""

    rel: str                       # path relative to the data folder, e.g. features/2019.parquet
    path: Path
    size: int
    mtime_ns: int
    sha256: str = ""
    status: str = "new"            # new | changed | unchanged
    old: dict | None = None        # its ingest_files record, if ingested before
    rows: int = 0
    dates: list = field(default_factory=list)   # distinct dates, ascending (staged files)


def folder_files(data_dir: Path, table: str) -> list[Path]:
    """The parquet files under `data_dir`/<table's folder>/ (any depth, hive folders included),
    ordered by relative path; names starting with `.` or `_` (_SUCCESS, _metadata, .crc) and
    files not ending in .parquet are not data."""
    root = Path(data_dir) / FOLDERS[table]
    out = [q for q in root.rglob("*.parquet") if q.is_file() and not any(
        part.startswith((".", "_")) for part in q.relative_to(root).parts)]
    return sorted(out, key=lambda q: q.relative_to(root).as_posix())


def owned(rel: str, table: str) -> bool:
    """Is the recorded file `rel` one of `table`'s (its single file or a file of its folder)?"""
    return rel == FILES[table] or rel.startswith(FOLDERS[table] + "/")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_records(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, dict]:
    """path -> the ingest_files record of every file of `table` ingested before."""
    if not table_exists(con, "ingest_files"):
        return {}
    cur = run_sql(con, "ingest/current_ingest_files")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall() if owned(r[0], table)}


def classify_files(data_dir: Path, files: list[Path], records: dict[str, dict]) -> list[DatedFile]:
    """new / unchanged / changed by (path, size, sha256); a file whose size and mtime match its
    record is taken as unchanged without being read (its hash is the recorded one)."""
    out = []
    for q in files:
        st = q.stat()
        f = DatedFile(q.relative_to(data_dir).as_posix(), q, st.st_size, st.st_mtime_ns)
        f.old = records.get(f.rel)
        if f.old and f.old["size"] == f.size and f.old["mtime_ns"] == f.mtime_ns:
            f.sha256, f.status = f.old["sha256"], "unchanged"
        else:
            f.sha256 = file_sha256(q)
            f.status = ("new" if f.old is None else "unchanged"
                        if (f.old["size"], f.old["sha256"]) == (f.size, f.sha256) else "changed")
        out.append(f)
    return out


# ---------------------------------------------------------- validating new and changed files
def _columns_check(con: duckdb.DuckDBPyConnection, table: str, files: list[DatedFile],
                   names: dict[str, list[str]]) -> None:
    """feature_panel: every file exactly the panel's columns (the first file's, for a new
    panel), in any order. prices: every file has the suite's columns (others are ignored, as
    in daily.parquet). Refused naming the missing and extra columns."""
    if table == "prices":
        ref = {e["kwargs"]["column"] for e in load_suite("prices")["expectations"]
               if e["type"] == "expect_column_to_exist"}
        against, exact = "the prices suite (expectations/prices.json)", False
    elif table_exists(con, table):
        ref, against, exact = set(columns(con, table, INPUT_TABLES)), table, True
    else:
        ref, against, exact = set(names[files[0].rel]), files[0].rel, True
    what = "same feature columns as feature_panel" if exact else "the prices columns"
    for f in files:
        have = set(names[f.rel])
        missing, extra = sorted(ref - have), sorted(have - ref) if exact else []
        if missing or extra:
            parts = [f"{len(missing)} missing ({_few(missing)})" if missing else "",
                     f"{len(extra)} extra ({_few(extra)})" if extra else ""]
            fresh = " (or ingest into a fresh home folder, MIGA_HOME)" if exact else ""
            raise DataError(
                f"{f.path}: expectation '{what}' failed: columns "
                f"{' and '.join(x for x in parts if x)} compared with {against}; re-export the "
                f"file with exactly those columns{fresh}",
                file=str(f.path), column=(missing + extra)[0], expectation=what,
                count=len(missing) + len(extra), examples=(missing + extra)[:5])


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _open_files(con: duckdb.DuckDBPyConnection, table: str, files: list[DatedFile],
                patterns: list[str]) -> None:
    """src_<table> over `files` (by column name, no hive columns)."""
    try:
        con.read_parquet(patterns, union_by_name=True, hive_partitioning=False).create_view(
            f"src_{table}", replace=True)
        count_rows(con, f"src_{table}", SOURCES)
    except duckdb.Error as e:
        if len(files) == 1:
            raise unreadable(files[0].path, e) from e
        raise


def stage(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """stage_<table> from the view src_<table> (sql/ingest/stage_<table>.sql)."""
    run_sql(con, f"ingest/stage_{table}")


def _validate_files(con: duckdb.DuckDBPyConnection, table: str, files: list[DatedFile],
                    patterns: list[str], source: str, settings: Settings,
                    gx: str) -> TableValidation:
    """The table's suite over every row of `files` together (duplicates across files
    included). On a failure, each file is checked alone so the error names the file at fault;
    a failure only together (a key in two files) names the files holding its first key."""
    from pipeline.data.validate import check_relation

    def run(src: str, report: bool):
        if report:
            return validate(con, table, f"src_{table}", f"stage_{table}", src,
                            settings.reports_dir, gx=gx, prepare=lambda: stage(con, table),
                            earlier=lambda: earlier_rows(con, table))
        return check_relation(con, table, f"src_{table}", f"stage_{table}", src,
                              prepare=lambda: stage(con, table),
                              earlier=lambda: earlier_rows(con, table))[0]

    try:
        _open_files(con, table, files, patterns)
        return run(source, True)
    except (DataError, duckdb.Error) as e:
        if interrupted(e):
            raise
        together = e
    if isinstance(together, duckdb.Error):
        # a DuckDB error aborts the transaction: find the file on a cursor of its own
        side = con.cursor()
        try:
            for f, pat in zip(files, patterns):
                try:
                    run_sql(side, "ingest/read_every_value", {"file": pat}).fetchall()
                except duckdb.Error as e:
                    raise unreadable(f.path, e, rows=True) from e
        finally:
            side.close()
        raise unreadable(Path(source), together, rows=True) from together
    for f, pat in zip(files, patterns):
        _open_files(con, table, [f], [pat])
        try:
            if not run(str(f.path), False).success:   # again, with GX and a report: raises
                run(str(f.path), True)
        except duckdb.Error as e:
            raise unreadable(f.path, e, rows=True) from e
    if isinstance(together, DataError) and together.examples:
        ex = together.examples[0]
        if "date" in ex and "instrument" in ex:
            rel = {str(f.path.absolute()): f.rel for f in files}
            held = [rel.get(str(Path(r[0]).absolute()), r[0]) for r in run_sql(
                con, "ingest/files_with_key",
                {"files": patterns, "date": ex["date"], "instrument": ex["instrument"]}).fetchall()]
            raise DataError(f"{' and '.join(held)}: the same (date, instrument) in several files: "
                            f"{together}", file=held[0] if held else source,
                            column=together.column, expectation=together.expectation,
                            count=together.count, examples=together.examples,
                            report=together.report) from together
    raise together


def stage_files(con: duckdb.DuckDBPyConnection, table: str, data_dir: Path,
                files: list[DatedFile], settings: Settings, gx: str) -> TableValidation:
    """Check and validate the new and changed files of `table`'s folder (one view over all of
    them), then read each one's rows and dates (two narrow columns)."""
    names = {f.rel: check_unique_columns(f.path) for f in files}   # a truncated file fails here
    _columns_check(con, table, files, names)
    patterns = [literal_pattern(con, f.path) for f in files]
    source = (str(files[0].path) if len(files) == 1 else
              f"{data_dir / FOLDERS[table]} ({len(files)} new or changed files)")
    result = _validate_files(con, table, files, patterns, source, settings, gx)
    stage_files_meta(con, files)
    return result


def stage_files_meta(con: duckdb.DuckDBPyConnection, files: list[DatedFile]) -> None:
    """Rows and distinct dates of already validated files (for their ingest_files records)."""
    patterns = [literal_pattern(con, f.path) for f in files]
    by_name = {str(f.path.absolute()): f for f in files}
    for filename, rows, dates in run_sql(con, "ingest/file_dates", {"files": patterns}).fetchall():
        f = by_name[str(Path(filename).absolute())]
        f.rows, f.dates = int(rows), sorted(dates)


def check_feature_columns(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """features.parquet (staged): exactly the columns of the warehouse's feature_panel, if any."""
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


# ---------------------------------------------------------- writing a dated table
def ensure_date_hashes(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """<table>_dates, filled once for a table that predates it."""
    if not table_exists(con, f"{table}_dates"):
        _sql(con, "create_dates", table)
        if table_exists(con, table):
            _sql(con, "all_dates_hashes", table)


def _rehash(con: duckdb.DuckDBPyConnection, table: str, dates: set) -> None:
    """Re-hash the table's rows on `dates` (every date an ingest wrote or cleared)."""
    if not dates:
        return
    ds = sorted(dates)
    _sql(con, "delete_dates_hashes", table, {"dates": ds})
    _sql(con, "insert_dates_hashes", table, {"dates": ds, "lo": ds[0], "hi": ds[-1]})


def _record(con: duckdb.DuckDBPyConnection, f: DatedFile) -> None:
    if f.status == "unchanged":
        if f.old and f.old["mtime_ns"] != f.mtime_ns:
            run_sql(con, "ingest/touch_ingest_file", {"path": f.rel, "mtime_ns": f.mtime_ns})
        return
    run_sql(con, "ingest/delete_ingest_file", {"path": f.rel})
    run_sql(con, "ingest/insert_ingest_file", {
        "path": f.rel, "size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256, "rows": f.rows,
        "min_date": f.dates[0] if f.dates else None, "max_date": f.dates[-1] if f.dates else None,
        "dates": f.dates, "status": f.status})


def _span(dates) -> str:
    ds = sorted(dates)
    return f"{ds[0]}..{ds[-1]}" if len(ds) > 1 else f"{ds[0]}"


def _write_files(con: duckdb.DuckDBPyConnection, table: str, files: list[DatedFile],
                 records: dict[str, dict], timings: dict[str, float] | None = None) -> list[str]:
    """Write the validated new and changed files into `table`; returns the report's notes.

    A changed file's dates (those it held before and those it holds now) are cleared first,
    except dates another ingested file also holds; rows on dates the table already holds are
    replaced by key (the overlap case, reported with how many differ); the rest is appended."""
    notes: list[str] = []
    run_sql(con, f"ingest/create_{table}")
    ensure_date_hashes(con, table)
    mine = {f.rel for f in files}
    others = {d for rel, r in records.items() if rel not in mine for d in (r["dates"] or [])}
    clear: set = set()
    for f in files:
        if f.status == "changed":
            own = set(f.old["dates"] or []) | set(f.dates)
            clear |= own - others
            notes.append(f"re-ingested {f.rel} (changed): dates {_span(own)}")
    if clear:
        ds = sorted(clear)
        _sql(con, "delete_dates", table, {"dates": ds, "lo": ds[0], "hi": ds[-1]})
        _sql(con, "delete_dates_hashes", table, {"dates": ds})
    staged = sorted({d for f in files for d in f.dates})
    held = [r[0] for r in _sql(con, "dates_in", table, {"dates": staged}).fetchall()]
    if held:   # keys the table holds already: compare, report, replace them
        span = {"dates": held, "lo": held[0], "hi": held[-1]}
        _sql(con, "stage_overlap", table)
        _sql(con, "insert_stage_overlap", table, span)
        diff = {d: (n, k) for d, n, k in _sql(
            con, "overlap_differences", table, {"lo": held[0], "hi": held[-1]}).fetchall()}
        con.execute("DROP TABLE stage_overlap")
        held_set = set(held)
        for f in files:
            mine_held = sorted(held_set.intersection(f.dates))
            if mine_held:
                rows = sum(diff.get(d, (0, 0))[0] for d in mine_held)
                differ = sum(diff.get(d, (0, 0))[1] for d in mine_held)
                notes.append(f"{f.rel} overlaps {len(mine_held)} ingested date(s) "
                             f"{_span(mine_held)}: re-ingested for those dates ({rows:,} rows "
                             f"replaced, {differ:,} with different values)")
        run_sql(con, f"ingest/delete_{table}")
    t0 = time.perf_counter()
    run_sql(con, f"ingest/insert_{table}")
    t1 = time.perf_counter()
    _rehash(con, table, clear | set(staged))
    if timings is not None:
        timings["insert"], timings["rehash"] = t1 - t0, time.perf_counter() - t1
    run_sql(con, "ingest/create_ingest_files")
    for f in files:
        _record(con, f)
    for note in notes:
        log.info("%s", note)
    return notes


def write_folder(con: duckdb.DuckDBPyConnection, table: str, files: list[DatedFile],
                 records: dict[str, dict]) -> tuple[list[str], dict[str, float]]:
    """A folder once its new and changed files are staged: write those (`_write_files`), record
    the rest, and sum up in the report's notes how many files were new, changed and unchanged
    and which recorded ones are no longer there (their rows are kept). Returns the notes and
    the seconds of the insert and of the re-hash."""
    todo = [f for f in files if f.status != "unchanged"]
    notes: list[str] = []
    timings: dict[str, float] = {}
    if todo:
        notes += _write_files(con, table, todo, records, timings)
    else:
        run_sql(con, "ingest/create_ingest_files")
        for f in files:
            _record(con, f)
    folder = FOLDERS[table]
    new = sum(f.status == "new" for f in files)
    changed = sum(f.status == "changed" for f in files)
    notes.insert(0, f"{folder}/: {len(files)} files, {new} new, {changed} "
                    f"changed, {len(files) - new - changed} unchanged (not read)")
    here = {f.rel for f in files}
    gone = sorted(r for r in records if r.startswith(folder + "/") and r not in here)
    if gone:
        notes.append(f"{len(gone)} ingested file(s) no longer in {folder}/, rows kept "
                     f"(e.g. {gone[0]})")
    return notes, timings


def write_single(con: duckdb.DuckDBPyConnection, table: str, f: DatedFile,
                 records: dict[str, dict]) -> None:
    """daily.parquet or features.parquet was upserted as ever: re-hash its dates (unless it is
    unchanged and the only file that ever wrote the table: then its rows were rewritten with
    the same values)."""
    ensure_date_hashes(con, table)
    if f.status != "unchanged" or set(records) - {f.rel}:
        _rehash(con, table, set(f.dates))
    run_sql(con, "ingest/create_ingest_files")
    _record(con, f)


# ---------------------------------------------------------- the tables' fingerprints
def table_key(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A dated table's part of `pipeline.data.ingest.data_fingerprint`: "absent" without it,
    else a digest of its per-date hashes (a scan for a table that predates them)."""
    if not table_exists(con, table):
        return "absent"
    if table_exists(con, f"{table}_dates"):
        return _dates_key(con, table, dt.date.max)
    cols = ",".join(columns(con, table, INPUT_TABLES))
    if table == "feature_panel" and table_exists(con, "ingest_log"):
        # a panel ingested before feature_panel_dates existed: its hash from ingest_log
        rows = count_rows(con, "feature_panel", INPUT_TABLES)
        hit = run_sql(con, "ingest/last_feature_fingerprint", {"rows": rows}).fetchall()
        if hit:
            return hit[0][0]
    content = table_fingerprint(con, table, INPUT_TABLES)
    return hashlib.sha256(f"{cols};{content}".encode()).hexdigest()[:16]


def _dates_key(con: duckdb.DuckDBPyConnection, table: str, through: dt.date) -> str:
    """Digest of the table's columns and of its per-date row hashes on or before `through`."""
    cols = ",".join(columns(con, table, INPUT_TABLES))
    n, h = _sql(con, "dates_key", table, {"through": through}).fetchall()[0]
    return hashlib.sha256(f"{cols};{n}:{int(h):x}".encode()).hexdigest()[:16]


def prefix_key(con: duckdb.DuckDBPyConnection, table: str, through: dt.date) -> str | None:
    """A short hash that stays the same exactly as long as `table`'s rows with date <= `through`
    are unchanged (and its columns); None without the table.

    Read from `<table>_dates` (a row count and an order-free hash of the rows of each date,
    re-hashed by every ingest for the dates it touched): adding only later dates leaves it
    alone, any change to an earlier row (a changed file, an overlapping file, a re-delivered
    single file with one value edited) changes it. The feature build and the tensor store
    extend (rather than rebuild) while the prices' key, and the store the panel's, is the one
    they recorded. A table ingested before these hashes existed: a scan of its rows up to
    `through` (prices) or its whole fingerprint (feature_panel: any change, a new key)."""
    if not table_exists(con, table):
        return None
    if table_exists(con, f"{table}_dates"):
        return _dates_key(con, table, through)
    if table == "prices":
        n, h = first_row(con, "features/prices_prefix_fingerprint", {"until": through})
        return f"{n}:{int(h) & 0xFFFFFFFFFFFFFFFF:016x}"
    return "panel-" + table_key(con, table)
