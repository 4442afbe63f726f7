"""Ingest of good data folders: tables, types, idempotence, incremental days, feature panel, log."""
from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.ingest import data_fingerprint, ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.settings import Settings
from pipeline.warehouse import open_warehouse
from tests.warehouse_snapshot import snapshot

TABLES = ("prices", "membership", "index_prices", "feature_panel")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("data"),
                           SynthSpec(n_stocks=30, n_days=80, seed=2, n_features=6))


def split_by_date(src, dst, last_day) -> None:
    """A copy of folder `src` holding only days <= last_day (membership/index too)."""
    dst.mkdir()
    for name, col in (("daily", "date"), ("index", "date"), ("features", "date"),
                      ("membership", "start_date")):
        t = pq.read_table(src / f"{name}.parquet").to_pandas()
        pq.write_table(pa.Table.from_pandas(t[t[col] <= last_day], preserve_index=False),
                       dst / f"{name}.parquet")


def test_ingest_creates_typed_tables(settings, folder):
    report = ingest(settings, folder)
    daily_rows = pq.read_metadata(folder / "daily.parquet").num_rows
    assert report.staged["prices"] == report.totals["prices"] == daily_rows
    assert "prices" in str(report) and report.fingerprint
    con = open_warehouse(settings, read_only=True)
    types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_name = 'prices'").fetchall())
    assert types["date"] == "DATE" and types["volume"] == "BIGINT" and types["close"] == "DOUBLE"
    assert con.execute("SELECT count(*) FROM feature_panel").fetchone()[0] == daily_rows
    cols = [r[0] for r in con.execute("DESCRIBE feature_panel").fetchall()]
    assert cols == ["date", "instrument"] + [f"f{j:04d}" for j in range(6)]
    log = con.execute("SELECT data_dir, prices_rows, fingerprint FROM ingest_log").fetchall()
    assert log == [(str(folder.resolve()), daily_rows, report.fingerprint)]
    assert data_fingerprint(con) == report.fingerprint
    con.close()
    assert list(settings.reports_dir.glob("validation-prices-*.json"))


def test_same_folder_twice_gives_same_tables(settings, folder):
    first = ingest(settings, folder)
    before = snapshot(settings, TABLES)
    second = ingest(settings, folder)
    after = snapshot(settings, TABLES)
    assert first.fingerprint == second.fingerprint
    for t in TABLES:
        pd.testing.assert_frame_equal(before[t], after[t])


def test_later_days_are_added(settings, folder, tmp_path):
    dates = pd.read_parquet(folder / "daily.parquet", columns=["date"])["date"].unique()
    early = tmp_path / "early"
    split_by_date(folder, early, dates[59])
    ingest(settings, early)
    fp_early = ingest(settings, early).fingerprint
    con = open_warehouse(settings, read_only=True)
    assert con.execute("SELECT max(date) FROM prices").fetchone()[0] == pd.Timestamp(dates[59]).date()
    con.close()
    full = ingest(settings, folder)
    assert full.fingerprint != fp_early
    incremental = snapshot(settings, TABLES)

    fresh = Settings.from_env(tmp_path / "fresh").ensure()
    ingest(fresh, folder)
    at_once = snapshot(fresh, TABLES)
    for t in TABLES:
        pd.testing.assert_frame_equal(incremental[t], at_once[t])


def test_features_file_is_optional(settings, folder, tmp_path):
    no_feats = tmp_path / "nofeat"
    no_feats.mkdir()
    for f in ("daily", "membership", "index"):
        (no_feats / f"{f}.parquet").write_bytes((folder / f"{f}.parquet").read_bytes())
    report = ingest(settings, no_feats)
    assert "feature_panel" not in report.totals
    assert "feature_panel" not in snapshot(settings, TABLES)


def _with_one_value_changed(folder, out, name: str, column: str, row: int, delta: float):
    """A copy of the data folder `folder` in `out` whose `name`.parquet has one value changed."""
    out.mkdir()
    for f in ("daily", "membership", "index", "features"):
        if (folder / f"{f}.parquet").exists() and f != name:
            (out / f"{f}.parquet").write_bytes((folder / f"{f}.parquet").read_bytes())
    frame = pq.read_table(folder / f"{name}.parquet").to_pandas()
    frame.loc[frame.index[row], column] += delta
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / f"{name}.parquet")
    return out


def test_fingerprint_follows_content(settings, folder, tmp_path):
    """One price changed in a re-delivered daily.parquet: another fingerprint, and the old one
    back with the old file. (The fingerprint of prices and of the panel is read from per-date
    hashes the ingest keeps: the ingest is the only writer of input tables.)"""
    first = ingest(settings, folder).fingerprint
    second = ingest(settings, _with_one_value_changed(folder, tmp_path / "changed", "daily",
                                                      "volume", 11, 1)).fingerprint
    assert second != first
    con = duckdb.connect(str(settings.warehouse))
    assert data_fingerprint(con) == second
    con.execute("UPDATE index_prices SET close = close * 1.01")   # a small table is hashed live
    assert data_fingerprint(con) != second
    con.close()


def test_fingerprint_follows_feature_values(settings, folder, tmp_path):
    first = ingest(settings, folder).fingerprint
    second = ingest(settings, _with_one_value_changed(folder, tmp_path / "changed", "features",
                                                      "f0003", 7, 1.0)).fingerprint
    assert second != first
    con = open_warehouse(settings, read_only=True)
    assert data_fingerprint(con) == second      # read back without rescanning the panel
    con.close()
    assert ingest(settings, folder).fingerprint == first


def test_cli_synth_ingest_validate(tmp_path, capsys):
    from flows.cli import main

    home = str(tmp_path / "home")
    assert main(["synth", "--out", str(tmp_path / "d"), "--stocks", "20", "--days", "40"]) == 0
    assert main(["--home", home, "ingest", "--data", str(tmp_path / "d")]) == 0
    assert "prices" in capsys.readouterr().out
    (tmp_path / "d" / "index.parquet").write_text("not parquet")
    assert main(["--home", home, "ingest", "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "index.parquet" in err and "readable parquet" in err and "Traceback" not in err
    assert main(["--home", home, "validate"]) == 0
    assert "index_prices" in capsys.readouterr().out
