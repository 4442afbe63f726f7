"""A data folder's files: which file feeds which warehouse table, and opening one parquet file
exactly as named (used by `pipeline.data.ingest` and `pipeline.data.dated_files`).

Paths are literal: DuckDB's read_parquet expands `*`, `?` and `[...]` even in a list of files,
so those characters are escaped as one-character classes (`[*]`, `[?]`, `[[]`), and the pattern
is checked to name exactly the file. Column names are read from the parquet schema itself
(pyarrow): duplicates are refused, where DuckDB would rename the second copy.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.errors import DataError, interrupted

# warehouse table -> file in the data folder; the first three are required.
FILES = {"prices": "daily.parquet", "membership": "membership.parquet",
         "index_prices": "index.parquet", "feature_panel": "features.parquet"}
REQUIRED = ("prices", "membership", "index_prices")
INPUT_TABLES = tuple(FILES)
SOURCES = tuple(f"src_{t}" for t in FILES) + ("stage_feature_panel",)   # the ingest's own views
# the dated tables, fed by their file or by a folder of files (pipeline.data.dated_files)
FOLDERS = {"prices": "daily", "feature_panel": "features"}
DATED = tuple(FOLDERS)


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


def unreadable(path: Path, e: BaseException, rows: bool = False) -> DataError:
    """`e` (from reading `path`) as the 'readable parquet' DataError to raise; Ctrl-C, however
    it surfaced, is raised as it is. rows: the file opened but a row group did not read."""
    if interrupted(e):
        raise e
    first = str(e).splitlines()[0] if str(e) else ""
    what = f"on its rows ({first})" if rows else f"({type(e).__name__}: {first})"
    return DataError(f"{path}: expectation 'readable parquet' failed {what}. Re-export it as "
                     "parquet.", file=str(path), expectation="readable parquet")


def check_unique_columns(path: Path) -> list[str]:
    """Refuse a file whose schema repeats a column name (parquet allows it; DuckDB would
    rename the copy, e.g. f0001 -> f0001_1, and a features file would gain a column); returns
    the column names."""
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as f:   # a file object: pyarrow takes no path as a pattern or URI
            names = pq.read_schema(f).names
    except Exception as e:  # noqa: BLE001 - pyarrow's errors vary; DuckDB read it already
        raise unreadable(path, e) from e
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
    return names
