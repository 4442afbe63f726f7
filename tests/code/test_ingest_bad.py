"""Bad input: a clear DataError (file, expectation, count, examples) in one short line, and an
unchanged warehouse."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import duckdb

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.data.ingest as ingest_module
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
    return _ingested(tmp_path_factory, "good", SynthSpec(n_stocks=20, n_days=40, seed=4, n_features=3))


def _ingested(tmp_path_factory, name: str, spec: SynthSpec):
    """(a synthetic data folder, the warehouse of a fresh home that holds it)."""
    folder = write_synthetic(tmp_path_factory.mktemp(name), spec)
    home = Settings.from_env(tmp_path_factory.mktemp(name + "home")).ensure()
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


def _overlap(frame):
    # a second interval of the first (index, instrument), starting inside the first one
    extra = frame.iloc[[0]].assign(start_date=frame["start_date"].iloc[0] + pd.Timedelta(days=1))
    return pd.concat([frame, extra], ignore_index=True)


def _duplicate_column(name, column):
    def apply(folder):
        t = pq.read_table(folder / f"{name}.parquet")
        names = t.column_names + [column]
        pq.write_table(pa.table(t.columns + [t.column(column)], names=names), folder / f"{name}.parquet")
    return apply


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
    # duplicate column names: parquet allows them, a reader renames the copy (f0001_1)
    "duplicate_feature_column": (_duplicate_column("features", "f0001"), "features.parquet",
                                 "unique column names", "f0001", 1),
    "duplicate_price_column": (_duplicate_column("daily", "close"), "daily.parquet",
                               "unique column names", "close", 1),
    "duplicate_membership_column": (_duplicate_column("membership", "end_date"), "membership.parquet",
                                    "unique column names", "end_date", 1),
    "duplicate_index_column": (_duplicate_column("index", "close"), "index.parquet",
                               "unique column names", "close", 1),
    # implausible values (bounds in expectations/*.json, from the real data's maxima)
    "huge_price": (_edit("daily", lambda d: _set(d, [6], "close", 1e300)),
                   "daily.parquet", "expect_column_values_to_be_between", "close", 1),
    "huge_amount": (_edit("daily", lambda d: _set(d, [3], "amount", 1e300)),
                    "daily.parquet", "expect_column_values_to_be_between", "amount", 1),
    "huge_volume": (_edit("daily", lambda d: _set(d, [3], "volume", 10 ** 15)),
                    "daily.parquet", "expect_column_values_to_be_between", "volume", 1),
    "huge_index_level": (_edit("index", lambda d: _set(d, [2], "close", 1e300)),
                         "index.parquet", "expect_column_values_to_be_between", "close", 1),
    "huge_feature": (_edit("features", lambda d: _set(d.astype({"f0001": "float64"}), [4], "f0001", -1e300)),
                     "features.parquet", "expect_column_values_to_be_between", "f0001", 1),
    # two intervals of one (index, instrument) that share days: refused, not merged
    "overlapping_membership": (_edit("membership", _overlap), "membership.parquet",
                               "expect_column_pair_values_a_to_be_greater_than_b", None, 1),
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
    assert "\n" not in str(err) and len(str(err)) < 600, str(err)
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


def _assert_unchanged(before, settings):
    after = snapshot(settings, TABLES)
    assert before.keys() == after.keys()
    for t in before:
        pd.testing.assert_frame_equal(before[t], after[t])


def _setup(good, settings, tmp_path) -> Path:
    folder, warehouse = good
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    shutil.copy(warehouse, settings.warehouse)
    return data


# ------------------------------------------------------------------ paths are literal
@pytest.mark.parametrize("name", ["d*", "d[1]", "d?"])
def test_data_folder_path_is_literal_not_a_glob(name, settings, tmp_path):
    """DuckDB's read_parquet expands * ? [..]: a folder named d* (or d[1], d?) must never read
    its sibling d1's files."""
    sibling = write_synthetic(tmp_path / "d1", SynthSpec(n_stocks=20, n_days=40, seed=4))
    mine = write_synthetic(tmp_path / name, SynthSpec(n_stocks=12, n_days=30, seed=5, n_features=2))
    report = ingest(settings, mine)
    expected = pq.read_table(mine / "daily.parquet").to_pandas()
    assert report.staged["prices"] == len(expected) != pq.read_metadata(sibling / "daily.parquet").num_rows
    con = open_warehouse(settings, read_only=True)
    try:
        got = con.execute("SELECT count(*), sum(close) FROM prices").fetchone()
        log = con.execute("SELECT data_dir FROM ingest_log").fetchall()
    finally:
        con.close()
    assert got[0] == len(expected) and got[1] == pytest.approx(expected["close"].sum())
    assert log == [(str(mine.resolve()),)]


def test_literal_pattern_matches_only_the_file(tmp_path):
    for d in ("a1", "a*", "a[1]", "a?", "a[*]"):
        (tmp_path / d).mkdir()
        pq.write_table(pa.table({"x": [len(d)]}), tmp_path / d / "f.parquet")
    con = duckdb.connect()
    for d in ("a1", "a*", "a[1]", "a?", "a[*]"):
        pattern = ingest_module.literal_pattern(con, tmp_path / d / "f.parquet")
        assert con.read_parquet(pattern).fetchall() == [(len(d),)]


# ------------------------------------------------------------------ plausibility of daily moves
def _steady_row(daily: pd.DataFrame) -> int:
    """A row of a stock that traded the market days before and after it with the same factor."""
    d = daily.sort_values(["instrument", "date"]).reset_index()
    days = {v: i for i, v in enumerate(sorted(daily["date"].unique()))}
    k = d["date"].map(days)
    same = (d["instrument"] == d["instrument"].shift(1)) & (d["instrument"] == d["instrument"].shift(-1))
    steady = same & (k.shift(1) == k - 1) & (k.shift(-1) == k + 1) & \
        (d["factor"].shift(1) == d["factor"]) & (d["factor"].shift(-1) == d["factor"])
    return int(d.loc[steady[steady].index[len(steady[steady]) // 2], "index"])


def _scale_prices(frame: pd.DataFrame, row: int, by: float) -> pd.DataFrame:
    frame = frame.copy()
    cols = ["open", "high", "low", "close"]
    frame.loc[row, cols] = frame.loc[row, cols].to_numpy() * by
    return frame


def test_price_in_the_wrong_unit_is_refused(good, settings, tmp_path):
    """One day's prices x10 (a unit slip): that day's and the next day's adjusted move are
    implausible; no bound on the level catches it."""
    data = _setup(good, settings, tmp_path)
    daily = _read(data, "daily")
    row = _steady_row(daily)
    _write(data, "daily", _scale_prices(daily, row, 10.0))
    before = snapshot(settings, TABLES)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    err, msg = info.value, str(info.value)
    print(msg)
    assert err.expectation == "expect_column_values_to_be_between" and err.column == "adj_close_ratio"
    assert err.count == 2 and "2 bad rows" in msg
    assert daily.loc[row, "instrument"] in msg and "adj_close_ratio" in msg and "moved more than 5x" in msg
    assert "\n" not in msg and len(msg) < 600
    _assert_unchanged(before, settings)


def test_a_large_legitimate_move_passes(good, tmp_path):
    """+110% in a day (a STAR stock's second day reached +108.5% in the real data) and back."""
    data = tmp_path / "data"
    shutil.copytree(good[0], data)
    daily = _read(data, "daily")
    _write(data, "daily", _scale_prices(daily, _steady_row(daily), 2.1))
    ingest(Settings.from_env(tmp_path / "home").ensure(), data)


# ------------------------------------------------------------------ overlapping membership
def test_overlapping_intervals_name_both_intervals(good, settings, tmp_path):
    data = _setup(good, settings, tmp_path)
    m = _read(data, "membership")
    _write(data, "membership", _overlap(m))
    before = snapshot(settings, TABLES)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    msg = str(info.value)
    print(msg)
    first = m.iloc[0]
    for text in (first["index_name"], first["instrument"], "overlaps an earlier interval",
                 f"overlapped_start={first['start_date'].date()}",
                 f"overlapped_end={first['end_date'].date()}",
                 f"start_date={(first['start_date'] + pd.Timedelta(days=1)).date()}"):
        assert text in msg
    assert "\n" not in msg and len(msg) < 600
    _assert_unchanged(before, settings)


def test_interval_overlapping_one_already_in_the_warehouse_is_refused(good, settings, tmp_path):
    """A file whose intervals are fine on their own, but one starts a day later than the
    warehouse's interval of the same (index, instrument): merged, they overlap."""
    data = _setup(good, settings, tmp_path)
    m = _read(data, "membership")
    m.loc[0, "start_date"] = m.loc[0, "start_date"] + pd.Timedelta(days=1)
    _write(data, "membership", m)
    before = snapshot(settings, TABLES)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    msg = str(info.value)
    print(msg)
    assert info.value.file.endswith("membership.parquet") and info.value.count == 1
    assert "merged with the warehouse's membership" in msg and m.loc[0, "instrument"] in msg
    assert "\n" not in msg and len(msg) < 600
    _assert_unchanged(before, settings)


# ------------------------------------------------------------------ short messages, wide files
@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A features file of the paper's width (626 columns), few rows, already in a warehouse."""
    return _ingested(tmp_path_factory, "wide", SynthSpec(n_stocks=10, n_days=30, seed=6, n_features=626))


def _one_inf(f):
    return _set(f, [7], "f0123", np.inf)


def _nan_in_100_columns(f):
    f = f.copy()
    f.loc[f.index[11], [f"f{j:04d}" for j in range(200, 300)]] = np.nan
    return f


@pytest.mark.parametrize("case", ["one_inf", "nan_in_100_columns"])
def test_error_on_a_626_column_file_stays_short(case, wide, settings, tmp_path):
    data = _setup(wide, settings, tmp_path)
    feats = _read(data, "features")
    breaker, row = {"one_inf": (_one_inf, 7), "nan_in_100_columns": (_nan_in_100_columns, 11)}[case]
    _write(data, "features", breaker(feats))
    before = snapshot(settings, TABLES)
    with pytest.raises(DataError) as info:
        ingest(settings, data)
    err, msg = info.value, str(info.value)
    print(f"{len(msg)} chars: {msg}")
    assert len(msg) < 600 and "\n" not in msg
    bad = feats.iloc[row]
    assert bad["instrument"] in msg and str(bad["date"].date()) in msg   # the row at fault
    if case == "one_inf":
        assert err.column == "f0123" and err.count == 1 and "f0123=inf" in msg
    else:
        assert err.column == "f0200" and err.count == 1
        assert all(f"f{j:04d}" in msg for j in range(200, 205)) and "and 95 more" in msg
        assert "f0205" not in msg
    assert err.report and err.report in msg and Path(err.report).is_file()
    full = json.loads(Path(err.report).read_text())   # the full report names every failure
    assert sum(not c["success"] for c in full["full_scan"]) == (1 if case == "one_inf" else 100)
    _assert_unchanged(before, settings)


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_during_validation_leaves_the_warehouse_unchanged(good, settings, tmp_path, monkeypatch):
    """KeyboardInterrupt after daily.parquet was staged and validated, while membership is
    being validated: rolled back, and it stays a KeyboardInterrupt (no DataError)."""
    data = _setup(good, settings, tmp_path)
    _edit("daily", lambda d: d.assign(close=d["close"].clip(d["low"], d["high"] * 0.999 + d["low"] * 0.001)))(data)
    real = ingest_module.validate

    def validate(con, table, *args, **kw):
        if table == "membership":
            raise KeyboardInterrupt
        return real(con, table, *args, **kw)

    monkeypatch.setattr(ingest_module, "validate", validate)
    before = snapshot(settings, TABLES)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings, data)
    _assert_unchanged(before, settings)


@pytest.mark.parametrize("exc", [duckdb.InterruptException("INTERRUPT Error: Interrupted!"),
                                 RuntimeError("Query interrupted"), KeyboardInterrupt()],
                         ids=["duckdb_interrupt", "duckdb_sigint", "keyboard"])
def test_ctrl_c_during_the_insert_is_rolled_back_as_keyboard_interrupt(exc, good, settings, tmp_path,
                                                                        monkeypatch):
    """Interrupted after prices were deleted and re-inserted, during membership's insert: how
    DuckDB reports Ctrl-C in a query (InterruptException from interrupt(), RuntimeError 'Query
    interrupted' on SIGINT) becomes KeyboardInterrupt, after the rollback."""
    data = _setup(good, settings, tmp_path)
    _edit("daily", lambda d: d.assign(close=d["close"].clip(d["low"], d["high"] * 0.999 + d["low"] * 0.001)))(data)
    real = ingest_module.run_sql

    def run_sql(con, name, params=None):
        if name == "ingest/insert_membership":
            raise exc
        return real(con, name, params)

    monkeypatch.setattr(ingest_module, "run_sql", run_sql)
    before = snapshot(settings, TABLES)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings, data)
    _assert_unchanged(before, settings)


def test_duckdb_interrupt_while_reading_is_not_a_data_error(good, settings, tmp_path, monkeypatch):
    """_source turns DuckDB errors into 'readable parquet' DataErrors: never an interrupt."""
    data = _setup(good, settings, tmp_path)
    monkeypatch.setattr(ingest_module, "count_rows", lambda *a: (_ for _ in ()).throw(
        duckdb.InterruptException("INTERRUPT Error: Interrupted!")))
    before = snapshot(settings, TABLES)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings, data)
    _assert_unchanged(before, settings)
