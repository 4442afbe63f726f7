"""A features/ folder of many parquet files (issue 22): only new and changed files are read,
validated and appended atomically; a changed file is re-ingested for its dates; overlaps are
reported; bad files are refused in one line naming the file, the warehouse left as it was.
`prefix_key` of the panel (the tensor store's extension key) follows exactly the rows up to a date."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.errors import DataError
from pipeline.settings import Settings
from tests.dated_folders import day_rows, month_rows, prefix_of, table_rows, write_parquet
from tests.dated_folders import make_folder as dated_folder
from tests.warehouse_snapshot import refused, snapshot

TABLES = ("prices", "membership", "index_prices", "feature_panel", "ingest_log", "ingest_files",
          "feature_panel_dates", "prices_dates")
SPEC = SynthSpec(n_stocks=12, n_days=60, seed=3, n_features=6)   # 2016-01-04 .. 2016-03-25
BASE = ("daily", "membership", "index")


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("full"), SPEC)


@pytest.fixture(scope="module")
def panel(full) -> pd.DataFrame:
    return pd.read_parquet(full / "features.parquet")


def make_folder(full: Path, out: Path, files: dict[str, pd.DataFrame]) -> Path:
    return dated_folder(full, out, "features", files, BASE)


@pytest.fixture()
def two_months(full, panel, tmp_path, settings):
    """features/2016-01.parquet and 2016-02.parquet, ingested."""
    data = make_folder(full, tmp_path / "data", {"2016-01.parquet": month_rows(panel, "2016-01"),
                                                  "2016-02.parquet": month_rows(panel, "2016-02")})
    ingest(settings, data)
    return data


# ---- prefix_key: the contract the tensor store's extension relies on -------------------

def test_prefix_key_changes_only_with_rows_up_to_its_date(settings, panel, two_months):
    jan, feb = prefix_of(settings, "feature_panel", "2016-01-29"), prefix_of(settings, "feature_panel", "2016-02-29")
    assert jan and feb and jan != feb
    assert prefix_of(settings, "feature_panel", "2016-03-01") == feb          # no rows after February yet
    # a new day's file: keys up to February stay, the key through the new day moves
    write_parquet(two_months / "features" / "2016-03-01.parquet", day_rows(panel, "2016-03-01"))
    ingest(settings, two_months)
    assert (prefix_of(settings, "feature_panel", "2016-01-29"), prefix_of(settings, "feature_panel", "2016-02-29")) == (jan, feb)
    assert prefix_of(settings, "feature_panel", "2016-03-01") != feb
    # one value of February changed: January's key stays, February's moves
    edited = month_rows(panel, "2016-02")
    edited.loc[3, "f0002"] += 1.0
    write_parquet(two_months / "features" / "2016-02.parquet", edited)
    report = ingest(settings, two_months)
    assert prefix_of(settings, "feature_panel", "2016-01-29") == jan and prefix_of(settings, "feature_panel", "2016-02-29") != feb
    assert "re-ingested features/2016-02.parquet (changed): dates 2016-02-01..2016-02-29" in report.notes
    # the change back restores the rows, and so the key (it is a hash of the rows)
    write_parquet(two_months / "features" / "2016-02.parquet", month_rows(panel, "2016-02"))
    ingest(settings, two_months)
    assert prefix_of(settings, "feature_panel", "2016-02-29") == feb


def test_prefix_key_of_a_single_features_file(settings, full, panel, tmp_path):
    def single(name, frame):
        out = make_folder(full, tmp_path / name, {})
        write_parquet(out / "features.parquet", frame)
        return out

    upto = panel[panel.date <= "2016-03-01"].reset_index(drop=True)
    ingest(settings, single("a", upto[upto.date < "2016-03-01"]))
    jan, feb = prefix_of(settings, "feature_panel", "2016-01-04"), prefix_of(settings, "feature_panel", "2016-02-29")
    ingest(settings, single("b", upto))                     # the file grew by one day
    assert (prefix_of(settings, "feature_panel", "2016-01-04"), prefix_of(settings, "feature_panel", "2016-02-29")) == (jan, feb)
    edited = upto.copy()
    edited.loc[0, "f0001"] += 0.5                           # its first day revised
    ingest(settings, single("c", edited))
    assert prefix_of(settings, "feature_panel", "2016-01-04") != jan and prefix_of(settings, "feature_panel", "2016-02-29") != feb
    ingest(settings, single("d", upto))                     # and back
    assert prefix_of(settings, "feature_panel", "2016-02-29") == feb


def test_prefix_key_is_none_without_a_panel(settings, full, tmp_path):
    ingest(settings, make_folder(full, tmp_path / "noft", {}))
    assert prefix_of(settings, "feature_panel", "2016-03-01") is None


# ---- layouts, the daily append, removed files ------------------------------------------------

@pytest.mark.parametrize("by", ["day", "month", "year"])
def test_every_layout_gives_the_single_files_panel(full, tmp_path, by):
    single = Settings.from_env(tmp_path / "single").ensure()
    one = ingest(single, full)
    data = write_synthetic(tmp_path / by, SynthSpec(**{**SPEC.__dict__, "panel_files": by}))
    assert (data / "features").is_dir() and not (data / "features.parquet").exists()
    split = Settings.from_env(tmp_path / "split").ensure()
    many = ingest(split, data)
    pd.testing.assert_frame_equal(table_rows(single, "feature_panel"), table_rows(split, "feature_panel"))   # no hive column (year=...)
    assert many.fingerprint == one.fingerprint                     # the fingerprint is the rows'
    if by == "year":
        assert (data / "features" / "year=2016" / "part-0.parquet").exists()


def test_daily_append_reads_only_the_new_file(settings, full, panel, two_months, tmp_path):
    # an old file garbled in place, same size and mtime: skipped without being read
    old = two_months / "features" / "2016-01.parquet"
    st = old.stat()
    old.write_bytes(b"\0" * st.st_size)
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    day = day_rows(panel, "2016-03-01")
    write_parquet(two_months / "features" / "2016-03-01.parquet", day)
    report = ingest(settings, two_months)
    assert report.staged["feature_panel"] == len(day)
    assert report.notes[0] == "features/: 3 files, 1 new, 0 changed, 2 unchanged (not read)"
    expected = panel[panel.date <= "2016-03-01"]
    assert report.totals["feature_panel"] == len(expected)
    # the same rows as one ingest of the same rows as features.parquet
    fresh = Settings.from_env(tmp_path / "fresh").ensure()
    single = make_folder(full, tmp_path / "single", {})
    write_parquet(single / "features.parquet", expected.reset_index(drop=True))
    assert ingest(fresh, single).fingerprint == report.fingerprint
    pd.testing.assert_frame_equal(table_rows(settings, "feature_panel"), table_rows(fresh, "feature_panel"))


def test_removed_files_keep_their_rows(settings, two_months):
    before = snapshot(settings, ("feature_panel",))
    (two_months / "features" / "2016-01.parquet").unlink()
    report = ingest(settings, two_months)
    assert "1 ingested file(s) no longer in features/, rows kept (e.g. features/2016-01.parquet)" \
        in report.notes
    pd.testing.assert_frame_equal(before["feature_panel"], table_rows(settings, "feature_panel"))


def test_overlap_with_different_values_is_reingested_and_reported(settings, panel, two_months):
    again = day_rows(panel, "2016-02-10")
    again.loc[[0, 1], "f0004"] = [7.0, 8.0]
    write_parquet(two_months / "features" / "fix-2016-02-10.parquet", again)
    report = ingest(settings, two_months)
    note = ("features/fix-2016-02-10.parquet overlaps 1 ingested date(s) 2016-02-10: re-ingested "
            f"for those dates ({len(again)} rows replaced, 2 with different values)")
    assert note in report.notes
    got = table_rows(settings, "feature_panel")
    got = got[got.date == pd.Timestamp("2016-02-10")].sort_values("instrument")
    assert sorted(got.f0004.round(6))[-2:] == [7.0, 8.0]
    assert report.totals["feature_panel"] == len(month_rows(panel, "2016-01")) + len(month_rows(panel, "2016-02"))


def test_a_changed_file_with_fewer_dates_clears_the_dates_it_dropped(settings, panel, two_months):
    short = month_rows(panel, "2016-02")
    short = short[short.date < "2016-02-15"].reset_index(drop=True)
    write_parquet(two_months / "features" / "2016-02.parquet", short)
    report = ingest(settings, two_months)
    assert report.totals["feature_panel"] == len(month_rows(panel, "2016-01")) + len(short)
    assert "re-ingested features/2016-02.parquet (changed): dates 2016-02-01..2016-02-29" in report.notes


# ---- bad input: one line naming the file, the warehouse as before ----------------------------

def _refused(settings, data, *needles) -> DataError:
    return refused(settings, data, TABLES, *needles)


def _new_march(panel, edit):
    march = month_rows(panel, "2016-03")
    return edit(march.copy())


def test_missing_feature_column_is_refused(settings, panel, two_months):
    write_parquet(two_months / "features" / "2016-03.parquet", _new_march(panel, lambda f: f.drop(columns=["f0003"])))
    e = _refused(settings, two_months, "2016-03.parquet", "same feature columns", "1 missing (f0003)")
    assert e.column == "f0003"


def test_extra_feature_column_is_refused(settings, panel, two_months):
    write_parquet(two_months / "features" / "2016-03.parquet",
           _new_march(panel, lambda f: f.assign(f0999=1.0, zz=2.0)))
    _refused(settings, two_months, "2016-03.parquet", "2 extra (f0999, zz)")


def test_truncated_file_is_refused(settings, panel, two_months):
    write_parquet(two_months / "features" / "2016-03.parquet", month_rows(panel, "2016-03"))
    bad = two_months / "features" / "2016-03.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    _refused(settings, two_months, str(bad), "readable parquet")


def test_garbled_pages_in_one_of_several_new_files_name_that_file(settings, panel, two_months):
    march = month_rows(panel, "2016-03")
    write_parquet(two_months / "features" / "2016-03a.parquet", march.iloc[:60])
    bad = two_months / "features" / "2016-03b.parquet"
    pq.write_table(pa.Table.from_pandas(march.iloc[60:], preserve_index=False), bad,
                   compression="snappy")
    b = bytearray(bad.read_bytes())
    b[200: len(b) // 2] = b"\xff" * (len(b) // 2 - 200)   # footer intact, pages garbled
    bad.write_bytes(bytes(b))
    _refused(settings, two_months, str(bad))


@pytest.mark.parametrize("value, expectation", [(np.nan, "expect_column_values_to_not_be_null"),
                                                (np.inf, "expect_column_values_to_be_between")])
def test_nan_or_inf_in_one_cell_names_the_file(settings, panel, two_months, value, expectation):
    march = month_rows(panel, "2016-03")
    write_parquet(two_months / "features" / "2016-03-a.parquet", march.iloc[:50])
    bad = march.iloc[50:].reset_index(drop=True)
    bad.loc[4, "f0005"] = value
    write_parquet(two_months / "features" / "2016-03-b.parquet", bad)
    e = _refused(settings, two_months, "2016-03-b.parquet", expectation, "f0005")
    assert e.file.endswith("2016-03-b.parquet") and e.count == 1


def test_duplicate_key_in_a_file_is_refused(settings, panel, two_months):
    march = month_rows(panel, "2016-03")
    write_parquet(two_months / "features" / "2016-03.parquet", pd.concat([march, march.iloc[[5]]]))
    _refused(settings, two_months, "2016-03.parquet", "expect_compound_columns_to_be_unique")


def test_duplicate_key_across_two_new_files_names_both(settings, panel, two_months):
    march = month_rows(panel, "2016-03")
    write_parquet(two_months / "features" / "2016-03.parquet", march)
    write_parquet(two_months / "features" / "2016-03-again.parquet", march.iloc[[5]])
    _refused(settings, two_months, "features/2016-03-again.parquet and features/2016-03.parquet",
             "expect_compound_columns_to_be_unique")


def test_both_features_file_and_folder_are_refused(settings, full, panel, two_months):
    shutil.copyfile(full / "features.parquet", two_months / "features.parquet")
    _refused(settings, two_months, "both features.parquet and features/", "keep one")


# ---- the command line: synth writes the folder, ingest and the store read it -----------------

def test_cli_synth_panel_files_ingest_store(tmp_path, capsys):
    from flows.cli import main

    home, data = str(tmp_path / "home"), tmp_path / "d"
    assert main(["synth", "--out", str(data), "--stocks", "12", "--days", "60", "--features", "6",
                 "--panel-files", "month"]) == 0
    assert sorted(p.name for p in (data / "features").iterdir()) == [
        "2016-01.parquet", "2016-02.parquet", "2016-03.parquet"]
    assert main(["--home", home, "ingest", "--data", str(data)]) == 0
    assert "features/: 3 files, 3 new, 0 changed, 0 unchanged" in capsys.readouterr().out
    assert main(["--home", home, "ingest", "--data", str(data)]) == 0
    assert "0 new, 0 changed, 3 unchanged (not read)" in capsys.readouterr().out
    assert main(["--home", home, "validate"]) == 0
    assert "feature_panel" in capsys.readouterr().out


def test_the_flows_ingest_cache_key_sees_a_new_file(full, panel, tmp_path):
    from flows.cache import folder_signature, stable_key

    data = make_folder(full, tmp_path / "d", {"2016-01.parquet": month_rows(panel, "2016-01")})
    before = stable_key(folder_signature(data))
    assert stable_key(folder_signature(data)) == before
    write_parquet(data / "features" / "2016-02.parquet", month_rows(panel, "2016-02"))
    assert stable_key(folder_signature(data)) != before


def test_a_panel_from_before_these_tables_is_hashed_once(settings, full, tmp_path):
    """A warehouse ingested by an older miga (no ingest_files, no feature_panel_dates): the
    prefix key falls back to the whole panel's fingerprint, and the next ingest hashes it."""
    import duckdb

    fresh = Settings.from_env(tmp_path / "fresh").ensure()
    want = ingest(fresh, full).fingerprint
    ingest(settings, full)
    con = duckdb.connect(str(settings.warehouse))
    con.execute("DROP TABLE feature_panel_dates")
    con.execute("DROP TABLE ingest_files")
    con.close()
    assert prefix_of(settings, "feature_panel", "2016-02-29").startswith("panel-")
    assert ingest(settings, full).fingerprint == want
    assert prefix_of(settings, "feature_panel", "2016-02-29") == prefix_of(fresh, "feature_panel", "2016-02-29")
