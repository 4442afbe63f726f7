"""Alpha158 in SQL against the independent pandas reference; `miga features` build/extend."""
from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.features.alpha158 import (FEATURE_NAMES, LOOKBACK_ROWS, NETWORK_WINDOWS, QUANTILES,
                                        comparators, render_sql, sorted_position)
from pipeline.features.build import _stock_batches, build_features
from pipeline.warehouse import SQL_DIR, sql_text
from tests.code.alpha158_reference import alpha158_reference

QLIB_OPS = ["ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK",
            "RSV", "IMAX", "IMIN", "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN",
            "SUMD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD"]


def hand_made_prices(n_stocks=4, n_days=150, seed=0) -> pd.DataFrame:
    """Random-walk stocks with suspensions, a split (factor x2, raw prices /2), a zero-volume
    day, a flat stretch at a high adjusted price, repeated highs (ties) and a late listing."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2016-01-04", periods=n_days)
    rows = []
    for s in range(n_stocks):
        logp = np.cumsum(rng.normal(0, 0.02, n_days)) + np.log(10 + 5 * s)
        close = np.round(np.exp(logp), 2)
        open_ = np.round(close * np.exp(rng.normal(0, 0.01, n_days)), 2)
        # 2-decimal raw prices like the exchange's, so equal prices are exact ties
        high = np.round(np.maximum(open_, close) + rng.uniform(0, 0.2, n_days), 2)
        low = np.round(np.minimum(open_, close) - rng.uniform(0, 0.2, n_days), 2)
        high[40:45] = high[40]  # ties for IdxMax
        vol = rng.integers(1_000, 100_000, n_days).astype(np.int64)
        factor = np.ones(n_days)
        if s == 1:  # 2-for-1 split on day 70: raw prices halve, factor doubles
            for a in (open_, high, low, close):
                a[70:] = np.round(a[70:] / 2, 2)
            factor[70:] = 2.0
            vol[70:] *= 2
        if s == 2:
            vol[30] = 0  # no trade recorded: vwap falls back to OHLC/4
            # a high adjusted price level with a flat stretch (price and volume unchanged for
            # 14 days): std 0 exactly, and the 2e-5 rules of RSQR/CORR/CORD apply
            factor[:] = 300.0
            if n_days > 114:
                for a in (open_, high, low, close):
                    a[100:114] = close[100]
                vol[100:114] = vol[100]
        amount = vol * (open_ + high + low + close) / 4 * rng.uniform(0.99, 1.01, n_days)
        traded = np.ones(n_days, bool)
        if s == 0:
            traded[[d for d in (20, 21, 22, 90) if d < n_days]] = False  # suspensions
        if s == 3:
            traded[:25] = False  # listed later
        for i in np.flatnonzero(traded):
            rows.append((dates[i], f"S{s:03d}", "N", open_[i], high[i], low[i], close[i], int(vol[i]),
                         amount[i], factor[i], 10**8, 10**9))
    return pd.DataFrame(rows, columns=["date", "instrument", "name", "open", "high", "low", "close",
                                       "volume", "amount", "factor", "float_shares", "total_shares"])


def make_warehouse(path: Path, prices: pd.DataFrame, membership: pd.DataFrame | None = None,
                   index: pd.DataFrame | None = None) -> None:
    """A warehouse built directly from DataFrames, with the ingest's column types."""
    if membership is None:
        membership = pd.DataFrame({"index_name": ["csi300"], "instrument": [prices["instrument"].iloc[0]],
                                   "start_date": [prices["date"].min()], "end_date": [pd.NaT]})
    if index is None:
        d = np.sort(prices["date"].unique())
        rng = np.random.default_rng(1)
        index = pd.DataFrame({"date": d, "index_name": "csi300", "instrument": "SH000300",
                              "close": 3000 * np.exp(np.cumsum(rng.normal(0, 0.01, len(d)))),
                              "volume": rng.uniform(1e9, 2e9, len(d))})
        index["open"] = index["high"] = index["low"] = index["close"]
    con = duckdb.connect(str(path))
    con.register("p", prices)
    con.register("m", membership)
    con.register("ix", index)
    con.execute("CREATE OR REPLACE TABLE prices AS SELECT CAST(date AS DATE) date, instrument, name, "
                "open, high, low, close, CAST(volume AS BIGINT) volume, amount, factor, "
                "CAST(float_shares AS BIGINT) float_shares, CAST(total_shares AS BIGINT) total_shares FROM p")
    con.execute("CREATE OR REPLACE TABLE membership AS SELECT index_name, instrument, "
                "CAST(start_date AS DATE) start_date, CAST(end_date AS DATE) end_date FROM m")
    con.execute("CREATE OR REPLACE TABLE index_prices AS SELECT CAST(date AS DATE) date, index_name, "
                "instrument, open, high, low, close, volume FROM ix")
    con.close()


def run_alpha158(con, instruments, after="1900-01-01") -> pd.DataFrame:
    return con.execute(sql_text("features/alpha158") + " ORDER BY instrument, date",
                       {"instruments": list(instruments), "after": after,
                        "lookback": LOOKBACK_ROWS}).df()


def assert_matches_reference(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    got = got.sort_values(["instrument", "date"]).reset_index(drop=True)
    ref = ref.sort_values(["instrument", "date"]).reset_index(drop=True)
    assert len(got) == len(ref)
    assert (pd.to_datetime(got["date"]).to_numpy() == pd.to_datetime(ref["date"]).to_numpy()).all()
    bad = []
    for name in FEATURE_NAMES:
        a, b = got[name].to_numpy(float), ref[name].to_numpy(float)
        if (np.isnan(a) != np.isnan(b)).any():
            bad.append(f"{name}: NaN pattern differs at {np.flatnonzero(np.isnan(a) != np.isnan(b))[:5]}")
            continue
        ok = np.isnan(a) | np.isclose(a, b, rtol=1e-5, atol=1e-7)
        if not ok.all():
            i = np.flatnonzero(~ok)[:3]
            bad.append(f"{name}: {(~ok).sum()} values differ, e.g. {a[i]} vs {b[i]}")
    assert not bad, "\n".join(bad)


def test_feature_names_are_qlibs_158():
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 158
    assert FEATURE_NAMES[:13] == ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT",
                                  "KSFT2", "OPEN0", "HIGH0", "LOW0", "VWAP0"]
    assert FEATURE_NAMES[13:] == [f"{op}{w}" for op in QLIB_OPS for w in (5, 10, 20, 30, 60)]


def test_sql_file_is_generated_from_the_operator_table():
    assert (SQL_DIR / "features" / "alpha158.sql").read_text() == render_sql()


@pytest.mark.parametrize("w", NETWORK_WINDOWS)
def test_comparator_network_selects_the_quantiles_sorted_positions(w):
    """QTLU/QTLD of short windows read sorted positions from a pruned comparator network: by the
    0-1 principle it selects them for every input iff it does for every 0/1 input."""
    need = {p + k for q in QUANTILES for p, f in [sorted_position(w, q)] for k in ((0, 1) if f else (0,))}
    net = comparators(w, need)
    assert len(net) < w * (w - 1) // 2           # pruned, not a bubble sort
    for bits in itertools.product((0, 1), repeat=w):
        x = list(bits)
        for i, j, _, _ in net:
            x[i], x[j] = min(x[i], x[j]), max(x[i], x[j])
        assert all(x[k] == sorted(bits)[k] for k in need), bits


def test_alpha158_sql_matches_pandas_reference_on_hand_made_prices():
    prices = hand_made_prices()
    con = duckdb.connect()
    make_db = prices.copy()
    con.register("p", make_db)
    con.execute("CREATE TABLE prices AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) FROM p")
    got = run_alpha158(con, prices["instrument"].unique())
    assert list(got.columns) == ["date", "instrument"] + FEATURE_NAMES
    assert_matches_reference(got, alpha158_reference(prices))
    # the flat stretch of S002 (rows 100-113): a flat 10-day window (rows 109-113) has std 0
    # and no RSQR/CORR; 10 unchanged one-day changes (rows 110-113) have no CORD
    s2 = got[got.instrument == "S002"].reset_index(drop=True)
    assert (s2["STD10"].iloc[109:114] == 0).all()
    assert s2[["RSQR10", "CORR10"]].iloc[109:114].isna().all().all()
    assert s2["CORD10"].iloc[110:114].isna().all() and s2["CORD10"].iloc[60:109].notna().all()
    assert s2[["RSQR10", "CORR10"]].iloc[60:100].notna().all().all()
    # windows are the stock's own trading days: S003 lists on day 25, MA60 starts on its 60th row
    s3 = got[got.instrument == "S003"].reset_index(drop=True)
    assert s3["MA60"].iloc[:59].isna().all() and s3["MA60"].iloc[59:].notna().all()
    assert s3["SUMP60"].iloc[:60].isna().all() and s3["SUMP60"].iloc[60:].notna().all()
    # across the split the adjusted series is continuous: no -50% ROC5 on S001
    s1 = got[got.instrument == "S001"].dropna(subset=["ROC5", "VMA5"])
    assert len(s1) > 100
    assert s1["ROC5"].between(0.7, 1.3).all()


def test_alpha158_sql_matches_pandas_reference_on_real_stocks(shared_data):
    con = duckdb.connect()
    daily = str(shared_data / "daily.parquet")
    insts = [r[0] for r in con.execute(
        "SELECT DISTINCT instrument FROM read_parquet($f) ORDER BY hash(instrument) LIMIT 6",
        {"f": daily}).fetchall()]
    # and the hard cases: the highest adjusted prices (rounding of the window sums) and
    # zero-volume days (log volume ratios that are not finite)
    insts += [r[0] for r in con.execute(
        "SELECT instrument FROM read_parquet($f) GROUP BY 1 ORDER BY max(close * factor) DESC LIMIT 3",
        {"f": daily}).fetchall()]
    insts += [r[0] for r in con.execute(
        "SELECT DISTINCT instrument FROM read_parquet($f) WHERE volume = 0 ORDER BY 1 LIMIT 3",
        {"f": daily}).fetchall()]
    con.execute("CREATE TABLE prices AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) "
                "FROM read_parquet($f) WHERE list_contains($i, instrument)", {"f": daily, "i": insts})
    got = run_alpha158(con, insts)
    ref = alpha158_reference(con.execute("SELECT * FROM prices").df())
    assert_matches_reference(got, ref)
    assert got[FEATURE_NAMES].notna().mean().min() > 0.9  # not vacuous: values past warm-up


def test_build_features_noop_then_extend_equals_rebuild(settings):
    prices = hand_made_prices(n_days=140)
    cut = prices["date"].sort_values().unique()[119]
    make_warehouse(settings.warehouse, prices[prices.date <= cut])
    # small statements (one stock each, then two) here; the forced rebuild below is one statement
    s1 = build_features(settings, batch_rows=150)
    assert [a for _, a, _, _ in s1.steps] == ["built (alpha158)", "built", "built"]
    assert not build_features(settings).changed  # unchanged inputs: a no-op
    # ingest of 20 new days (appended to prices): features and labels extend
    con = duckdb.connect(str(settings.warehouse))
    con.register("new", prices[prices.date > cut])
    con.execute("INSERT INTO prices SELECT CAST(date AS DATE), * EXCLUDE (date) FROM new")
    con.close()
    s2 = build_features(settings, batch_rows=170)
    actions = {t: a for t, a, _, _ in s2.steps}
    assert actions["features"] == "extended (alpha158)" and actions["labels"].startswith("extended")
    con = duckdb.connect(str(settings.warehouse))
    inc = con.execute("SELECT * FROM features ORDER BY instrument, date").df()
    inc_labels = con.execute("SELECT * FROM labels ORDER BY instrument, date").df()
    con.close()
    build_features(settings, force=True)
    con = duckdb.connect(str(settings.warehouse))
    full = con.execute("SELECT * FROM features ORDER BY instrument, date").df()
    full_labels = con.execute("SELECT * FROM labels ORDER BY instrument, date").df()
    con.close()
    assert len(inc) == len(full) == len(prices)
    pd.testing.assert_frame_equal(inc, full)
    pd.testing.assert_frame_equal(inc_labels, full_labels)
    assert full_labels["label"].notna().sum() > 0.9 * len(prices)


def test_stock_batches_pack_rows_and_keep_every_stock():
    rows = [("A", 100), ("B", 62), ("C", 62), ("D", 500), ("E", 1)]
    assert _stock_batches(rows, 130) == [["A"], ["B", "C"], ["D"], ["E"]]
    assert _stock_batches(rows, 10_000) == [["A", "B", "C", "D", "E"]]
    assert _stock_batches([], 100) == []


def test_feature_panel_replaces_alpha158(settings):
    prices = hand_made_prices(n_days=100)
    make_warehouse(settings.warehouse, prices)
    con = duckdb.connect(str(settings.warehouse))
    con.execute("CREATE TABLE feature_panel AS SELECT date, instrument, close AS f0, volume * 1.0 AS f1 FROM prices")
    con.close()
    s = build_features(settings)
    assert s.steps[0][1] == "view on feature_panel"
    con = duckdb.connect(str(settings.warehouse))
    cols = [r[0] for r in con.execute("DESCRIBE features").fetchall()]
    con.close()
    assert cols == ["date", "instrument", "f0", "f1"]
