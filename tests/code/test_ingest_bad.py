"""Bad input: a clear DataError (file, expectation, count, examples) and an unchanged warehouse."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.errors import DataError
from pipeline.settings import Settings
from pipeline.warehouse import open_warehouse
from tests.warehouse_snapshot import snapshot

TABLES = ("prices", "membership", "index_prices", "feature_panel", "ingest_log")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A good data folder and a warehouse that already holds it."""
    folder = write_synthetic(tmp_path_factory.mktemp("good"),
                             SynthSpec(n_stocks=20, n_days=40, seed=4, n_features=3))
    home = Settings.from_env(tmp_path_factory.mktemp("home")).ensure()
    ingest(home, folder)
    return folder, home.warehouse


def _read(folder, name) -> pd.DataFrame:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def _write(folder, name, frame: pd.DataFrame) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")


def _edit(name, fn):
    def apply(folder):
        _write(folder, name, fn(_read(folder, name)))
    return apply


def _set(frame, rows, col, value):
    frame = frame.copy()
    if value is None:
        frame[col] = frame[col].astype(object)
    frame.loc[frame.index[rows], col] = value
    return frame


def _future(frame):
    frame = frame.copy()
    frame.loc[frame.index[-1], "date"] = pd.Timestamp(dt.date.today() + dt.timedelta(days=30))
    return frame


def _truncate(folder):
    p = folder / "daily.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _corrupt_pages(folder):
    # Footer intact, data pages garbled: only reading the rows can tell.
    p = folder / "features.parquet"
    b = bytearray(p.read_bytes())
    b[len(b) // 4: len(b) // 2] = b"\xff" * (len(b) // 2 - len(b) // 4)
    p.write_bytes(bytes(b))


def _swap_high_low(frame):
    frame = frame.copy()
    rows = frame.index[[3, 7]]
    frame.loc[rows, ["high", "low"]] = frame.loc[rows, ["low", "high"]].to_numpy()
    return frame


def _end_before_start(frame):
    frame = frame.copy()
    rows = frame.index[[0, 1]]
    frame.loc[rows, "end_date"] = frame.loc[rows, "start_date"] - pd.Timedelta(days=3)
    return frame


def _new_prices_and_fewer_features(folder):
    # Valid new prices are upserted before the feature panel's columns are compared:
    # the failure then has to undo writes already made inside the transaction.
    _edit("daily", lambda d: d.assign(close=d["close"].clip(d["low"], d["high"] * 0.999 + d["low"] * 0.001)))(folder)
    _edit("features", lambda d: d.drop(columns=["f0002"]))(folder)


# case id -> (how to break the folder, file named, expectation, column, count)
CASES = {
    "missing_file": (lambda f: (f / "membership.parquet").unlink(),
                     "membership.parquet", "file exists", None, None),
    "not_parquet": (lambda f: (f / "index.parquet").write_text("date,index_name\n2020-01-01,csi300\n"),
                    "index.parquet", "readable parquet", None, None),
    "truncated": (_truncate, "daily.parquet", "readable parquet", None, None),
    "corrupt_pages": (_corrupt_pages, "features.parquet", "readable parquet", None, None),
    "zero_byte_file": (lambda f: (f / "membership.parquet").write_bytes(b""),
                       "membership.parquet", "readable parquet", None, None),
    "missing_column": (_edit("daily", lambda d: d.drop(columns=["close"])),
                       "daily.parquet", "expect_column_to_exist", "close", 1),
    "price_as_strings": (_edit("daily", lambda d: d.assign(open=d["open"].map(lambda v: f"{v:.2f}"))),
                         "daily.parquet", "expect_column_values_to_be_in_type_list", "open", 1),
    "duplicate_keys": (_edit("daily", lambda d: pd.concat([d, d.iloc[[1, 5, 9]]])),
                       "daily.parquet", "expect_compound_columns_to_be_unique", "date,instrument", 6),
    "null_keys": (_edit("daily", lambda d: _set(d, [2, 4], "instrument", None)),
                  "daily.parquet", "expect_column_values_to_not_be_null", "instrument", 2),
    "zero_price": (_edit("daily", lambda d: _set(d, [6], "close", 0.0)),
                   "daily.parquet", "expect_column_values_to_be_between", "close", 1),
    "negative_price": (_edit("daily", lambda d: _set(d, [6, 8, 10], "open", -1.5)),
                       "daily.parquet", "expect_column_values_to_be_between", "open", 3),
    "high_below_low": (_edit("daily", _swap_high_low),
                       "daily.parquet", "expect_column_pair_values_a_to_be_greater_than_b", None, 2),
    "nan_feature": (_edit("features", lambda d: _set(d, [1, 2], "f0001", np.nan)),
                    "features.parquet", "expect_column_values_to_not_be_null", "f0001", 2),
    "inf_feature": (_edit("features", lambda d: _set(d, [5], "f0002", np.inf)),
                    "features.parquet", "expect_column_values_to_be_between", "f0002", 1),
    "end_before_start": (_edit("membership", _end_before_start),
                         "membership.parquet", "expect_column_pair_values_a_to_be_greater_than_b", None, 2),
    "unknown_index": (_edit("membership", lambda m: _set(m, [0], "index_name", "csi999")),
                      "membership.parquet", "expect_column_values_to_be_in_set", "index_name", 1),
    "empty_file": (_edit("daily", lambda d: d.iloc[:0]),
                   "daily.parquet", "expect_table_row_count_to_be_between", None, 1),
    "feature_columns_changed": (_new_prices_and_fewer_features, "features.parquet",
                                "same feature columns as feature_panel", "f0002", 1),
    "future_dates": (_edit("index", _future),
                     "index.parquet", "expect_column_values_to_be_between", "date", 1),
}


SCHEMA_LEVEL = ("expect_column_to_exist", "expect_column_values_to_be_in_type_list",
                "expect_table_row_count_to_be_between", "expect_compound_columns_to_be_unique")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_warehouse_unchanged(case, good, settings, tmp_path):
    folder, warehouse = good
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    shutil.copy(warehouse, settings.warehouse)
    breaker, file, expectation, column, count = CASES[case]
    breaker(data)
    before = snapshot(settings, TABLES)

    with pytest.raises(DataError) as info:
        ingest(settings, data)

    err = info.value
    assert err.file.endswith(file) and file in str(err)
    assert err.expectation == expectation and expectation in str(err)
    if column is not None:
        assert err.column == column
    if count is not None:
        assert err.count == count and str(count) in str(err)
    if expectation.startswith("expect_"):
        if expectation not in SCHEMA_LEVEL:
            assert len(err.examples) == min(count, 5)  # a few bad rows, also in the message
        report = json.loads(open(err.report).read())
        assert report["success"] is False and report["gx_result"]["success"] is False
    after = snapshot(settings, TABLES)
    assert before.keys() == after.keys()
    for t in before:
        pd.testing.assert_frame_equal(before[t], after[t])


def test_failed_first_ingest_leaves_no_tables(settings, good, tmp_path):
    folder, _ = good
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    _edit("index", _future)(data)  # index is validated after daily and membership
    with pytest.raises(DataError):
        ingest(settings, data)
    assert snapshot(settings, TABLES) == {}


def test_gx_agrees_on_the_failed_expectation(settings, good, tmp_path):
    folder, _ = good
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    _edit("daily", _swap_high_low)(data)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    report = json.loads(open(info.value.report).read())
    gx_failed = {(r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column_A"))
                 for r in report["gx_result"]["results"] if not r["success"]}
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "high") in gx_failed
    scan = {(c["type"], c["kwargs"].get("column_A")): c["unexpected_count"] for c in report["full_scan"]}
    assert scan[("expect_column_pair_values_a_to_be_greater_than_b", "high")] >= 2
