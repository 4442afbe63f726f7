"""A daily/ folder of price files (issue 22's daily append, for the prices): only new and changed
files are read and validated, a new day is checked against the warehouse's day before, bad
files are refused in one line naming the file with the warehouse as before, the prices' prefix
key (the feature build's and the store's extension key) is read from per-date hashes, and the
flow's validate step checks the rows the last ingest wrote."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.data.validate import validate_warehouse
from pipeline.errors import DataError
from pipeline.settings import Settings
from tests.dated_folders import day_rows, month_rows, prefix_of, table_rows, write_parquet
from tests.dated_folders import make_folder as dated_folder
from tests.warehouse_snapshot import refused

TABLES = ("prices", "membership", "index_prices", "ingest_log", "ingest_files", "prices_dates")
SPEC = SynthSpec(n_stocks=12, n_days=60, seed=5)   # 2016-01-04 .. 2016-03-25


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("full"), SPEC)


@pytest.fixture(scope="module")
def prices(full) -> pd.DataFrame:
    return pd.read_parquet(full / "daily.parquet")


def make_folder(full: Path, out: Path, files: dict[str, pd.DataFrame]) -> Path:
    return dated_folder(full, out, "daily", files, ("membership", "index"))


@pytest.fixture()
def two_months(full, prices, tmp_path, settings):
    """daily/2016-01.parquet and daily/2016-02.parquet, ingested."""
    data = make_folder(full, tmp_path / "data", {"2016-01.parquet": month_rows(prices, "2016-01"),
                                                  "2016-02.parquet": month_rows(prices, "2016-02")})
    ingest(settings, data)
    return data


@pytest.mark.parametrize("by", ["month", "year"])
def test_a_daily_folder_gives_the_single_files_prices(full, tmp_path, by):
    single = Settings.from_env(tmp_path / "single").ensure()
    one = ingest(single, full)
    data = write_synthetic(tmp_path / by, SynthSpec(**{**SPEC.__dict__, "price_files": by}))
    assert (data / "daily").is_dir() and not (data / "daily.parquet").exists()
    split = Settings.from_env(tmp_path / "split").ensure()
    many = ingest(split, data)
    pd.testing.assert_frame_equal(table_rows(single, "prices"), table_rows(split, "prices"))   # no hive column (year=...)
    assert many.fingerprint == one.fingerprint                       # the fingerprint is the rows'
    assert prefix_of(split, "prices", "2016-02-29") == prefix_of(single, "prices", "2016-02-29")


def test_daily_append_reads_only_the_new_file(settings, full, prices, two_months, tmp_path):
    through = "2016-02-29"
    key = prefix_of(settings, "prices", through)
    # an old file garbled in place, same size and mtime: skipped without being read
    old = two_months / "daily" / "2016-01.parquet"
    st = old.stat()
    old.write_bytes(b"\0" * st.st_size)
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    day = day_rows(prices, "2016-03-01")
    write_parquet(two_months / "daily" / "2016-03-01.parquet", day)
    report = ingest(settings, two_months)
    assert report.staged["prices"] == len(day)
    assert "daily/: 3 files, 1 new, 0 changed, 2 unchanged (not read)" in report.notes
    expected = prices[prices.date <= "2016-03-01"]
    assert report.totals["prices"] == len(expected)
    assert prefix_of(settings, "prices", through) == key            # a later day leaves the history's key alone
    assert prefix_of(settings, "prices", "2016-03-01") != key
    # the same rows as one daily.parquet: the same table and fingerprint
    fresh = Settings.from_env(tmp_path / "fresh").ensure()
    single = make_folder(full, tmp_path / "single", {})
    write_parquet(single / "daily.parquet", expected)
    assert ingest(fresh, single).fingerprint == report.fingerprint
    pd.testing.assert_frame_equal(table_rows(settings, "prices"), table_rows(fresh, "prices"))


def test_a_changed_file_is_reingested_and_changes_the_key(settings, prices, two_months):
    jan = month_rows(prices, "2016-01").copy()
    jan.loc[jan.index[3], "volume"] += 100
    write_parquet(two_months / "daily" / "2016-01.parquet", jan)
    before = prefix_of(settings, "prices", "2016-02-29")
    report = ingest(settings, two_months)
    assert any(n.startswith("re-ingested daily/2016-01.parquet (changed)") for n in report.notes)
    assert prefix_of(settings, "prices", "2016-02-29") != before
    row = jan.iloc[3]
    got = table_rows(settings, "prices").set_index(["date", "instrument"]).loc[(row.date, row.instrument)]
    assert got.volume == row.volume


def test_a_new_day_is_checked_against_the_day_before_in_the_warehouse(settings, prices, two_months):
    """Alone, a one-day file has no previous row to compare a close with; the warehouse's
    day before is the look-back (sql/ingest/earlier_prices.sql)."""
    day = day_rows(prices, "2016-03-01").copy()
    for c in ("open", "high", "low", "close"):          # in the wrong unit: x10
        day.loc[day.index[0], c] *= 10
    write_parquet(two_months / "daily" / "2016-03-01.parquet", day)
    e = refused(settings, two_months, TABLES, "2016-03-01.parquet", "adjusted close moved more than 5x")
    assert e.file.endswith("2016-03-01.parquet")


def test_missing_price_column_is_refused_extra_ones_ignored(settings, prices, two_months):
    march = month_rows(prices, "2016-03")
    write_parquet(two_months / "daily" / "2016-03.parquet", march.drop(columns=["factor"]))
    e = refused(settings, two_months, TABLES, "2016-03.parquet", "1 missing (factor)")
    assert e.column == "factor"
    write_parquet(two_months / "daily" / "2016-03.parquet", march.assign(vendor_code="x"))
    assert ingest(settings, two_months).totals["prices"] == len(prices)


def test_duplicate_key_across_two_new_files_names_both(settings, prices, two_months):
    march = month_rows(prices, "2016-03")
    write_parquet(two_months / "daily" / "2016-03a.parquet", march.iloc[:30])
    write_parquet(two_months / "daily" / "2016-03b.parquet", march.iloc[29:])
    refused(settings, two_months, TABLES, "daily/2016-03a.parquet and daily/2016-03b.parquet",
            "several files")


def test_truncated_daily_file_is_refused(settings, prices, two_months):
    bad = two_months / "daily" / "2016-03.parquet"
    write_parquet(bad, month_rows(prices, "2016-03"))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    refused(settings, two_months, TABLES, str(bad), "readable parquet")


def test_both_daily_file_and_folder_are_refused(settings, full, two_months):
    shutil.copyfile(full / "daily.parquet", two_months / "daily.parquet")
    refused(settings, two_months, TABLES, "both daily.parquet and daily/", "keep one")


def test_the_flows_validate_step_checks_what_the_last_ingest_wrote(settings, prices, two_months):
    day = day_rows(prices, "2016-03-01")
    write_parquet(two_months / "daily" / "2016-03-01.parquet", day)
    ingest(settings, two_months)
    latest = validate_warehouse(settings, gx="failures", latest=True)
    checked = {t.table: t.rows for t in latest.tables}
    assert checked["prices"] == len(day)                    # one day, not the history
    assert validate_warehouse(settings, gx="failures").tables[0].rows == len(
        prices[prices.date <= "2016-03-01"])
    ingest(settings, two_months)                            # nothing new
    assert "prices" in validate_warehouse(settings, gx="failures", latest=True).unwritten
    # a row of an old day broken inside the warehouse: `miga validate` (every row) finds it
    con = duckdb.connect(str(settings.warehouse))
    con.execute("UPDATE prices SET high = -1 WHERE date = DATE '2016-01-05'")
    con.close()
    with pytest.raises(DataError, match="prices"):
        validate_warehouse(settings, gx="failures")


def test_cli_synth_price_files_and_the_cache_key(tmp_path, capsys):
    from flows.cache import folder_signature, stable_key
    from flows.cli import main

    home, data = str(tmp_path / "home"), tmp_path / "d"
    assert main(["synth", "--out", str(data), "--stocks", "12", "--days", "60",
                 "--price-files", "month"]) == 0
    assert sorted(p.name for p in (data / "daily").iterdir()) == [
        "2016-01.parquet", "2016-02.parquet", "2016-03.parquet"]
    assert main(["--home", home, "ingest", "--data", str(data)]) == 0
    assert "daily/: 3 files, 3 new, 0 changed, 0 unchanged" in capsys.readouterr().out
    before = stable_key(folder_signature(data))
    write_parquet(data / "daily" / "2016-04-01.parquet", pd.read_parquet(data / "daily" / "2016-03.parquet").iloc[:0])
    assert stable_key(folder_signature(data)) != before


def test_overlap_with_different_values_is_reingested_and_reported(settings, prices, two_months):
    again = day_rows(prices, "2016-02-10")
    again.loc[[0, 1], "volume"] += 5
    write_parquet(two_months / "daily" / "fix-2016-02-10.parquet", again)
    report = ingest(settings, two_months)
    assert ("daily/fix-2016-02-10.parquet overlaps 1 ingested date(s) 2016-02-10: re-ingested "
            f"for those dates ({len(again)} rows replaced, 2 with different values)") in report.notes
    got = table_rows(settings, "prices").set_index(["date", "instrument"])
    for _, row in again.iloc[:2].iterrows():
        assert got.loc[(row.date, row.instrument), "volume"] == row.volume


@pytest.mark.parametrize("value, expectation", [(float("nan"), "expect_column_values_to_not_be_null"),
                                                (float("inf"), "expect_column_values_to_be_between")])
def test_nan_or_inf_in_one_price_names_the_file(settings, prices, two_months, value, expectation):
    march = month_rows(prices, "2016-03")
    write_parquet(two_months / "daily" / "2016-03-a.parquet", march.iloc[:40])
    bad = march.iloc[40:].reset_index(drop=True)
    bad.loc[4, "amount"] = value
    write_parquet(two_months / "daily" / "2016-03-b.parquet", bad)
    e = refused(settings, two_months, TABLES, "2016-03-b.parquet", expectation, "amount")
    assert e.file.endswith("2016-03-b.parquet")


def test_duplicate_key_in_a_daily_file_is_refused(settings, prices, two_months):
    march = month_rows(prices, "2016-03")
    write_parquet(two_months / "daily" / "2016-03.parquet", pd.concat([march, march.iloc[[5]]]))
    refused(settings, two_months, TABLES, "2016-03.parquet", "expect_compound_columns_to_be_unique")
