"""Helpers of the tests of daily/ and features/ folders: files cut by date, written as parquet,
and a dated table's prefix key and rows read back."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.dated_files import prefix_key
from pipeline.settings import Settings
from pipeline.warehouse import open_warehouse
from tests.warehouse_snapshot import snapshot


def month_rows(frame: pd.DataFrame, m: str) -> pd.DataFrame:
    return frame[frame.date.dt.strftime("%Y-%m") == m].reset_index(drop=True)


def day_rows(frame: pd.DataFrame, d: str) -> pd.DataFrame:
    return frame[frame.date == pd.Timestamp(d)].reset_index(drop=True)


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), path)


def prefix_of(settings: Settings, table: str, through: str) -> str | None:
    """`prefix_key` of `table` through the date `through` (ISO)."""
    con = open_warehouse(settings, read_only=True)
    try:
        return prefix_key(con, table, dt.date.fromisoformat(through))
    finally:
        con.close()


def table_rows(settings: Settings, table: str) -> pd.DataFrame:
    return snapshot(settings, (table,))[table]


def make_folder(full: Path, out: Path, folder: str, files: dict[str, pd.DataFrame],
                copied: tuple[str, ...]) -> Path:
    """A data folder in `out`: the files `copied` (names less .parquet) of the data folder
    `full`, and `folder`/<name> written from `files`."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    for name in copied:
        shutil.copyfile(full / f"{name}.parquet", out / f"{name}.parquet")
    for rel, frame in files.items():
        write_parquet(out / folder / rel, frame)
    return out
