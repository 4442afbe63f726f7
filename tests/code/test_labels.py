"""Labels (paper eq. 1) on hand-made prices: suspension gaps, a split, the vwap fallback."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.features.build import build_features
from tests.code.test_features import make_warehouse

D = pd.bdate_range("2016-03-01", periods=6)  # market days d0..d5


def row(day, inst, price, volume=100, factor=1.0, amount=None):
    amount = price * volume if amount is None else amount
    return dict(date=D[day], instrument=inst, name="N", open=price, high=price * 1.02,
                low=price * 0.98, close=price, volume=volume, amount=amount, factor=factor,
                float_shares=1, total_shares=1)


def prices_frame() -> pd.DataFrame:
    rows = []
    # A: 2-for-1 split on d3: raw prices halve, factor doubles; adjusted p = 10, 11, 12, 13, 14, 15
    for d, raw, f in [(0, 10, 1), (1, 11, 1), (2, 12, 1), (3, 6.5, 2), (4, 7, 2), (5, 7.5, 2)]:
        rows.append(row(d, "A", raw, factor=f))
    # B: suspended on d2 (no row)
    for d, p in [(0, 20), (1, 21), (3, 22), (4, 23), (5, 24)]:
        rows.append(row(d, "B", p))
    # C: vwap 30 + d, except d2 where volume is 0 -> p = (open+high+low+close)/4
    for d in range(6):
        rows.append(row(d, "C", 30 + d, volume=0 if d == 2 else 100))
    return pd.DataFrame(rows)


@pytest.fixture
def labels(settings):
    make_warehouse(settings.warehouse, prices_frame())
    build_features(settings)
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    df = con.execute("SELECT * FROM labels ORDER BY instrument, date").df()
    con.close()
    return {(r.instrument, D.get_loc(pd.Timestamp(r.date))): r.label for r in df.itertuples()}


def test_label_is_next_two_market_days_average_price_return(labels):
    # A across the split: adjusted prices continue 12 -> 13 (raw 12 -> 6.5)
    assert labels[("A", 0)] == pytest.approx(12 / 11 - 1)
    assert labels[("A", 1)] == pytest.approx(13 / 12 - 1)
    assert labels[("A", 2)] == pytest.approx(14 / 13 - 1)
    assert labels[("A", 3)] == pytest.approx(15 / 14 - 1)


def test_label_null_across_suspension_and_at_the_end(labels):
    # B has no row on d2: labels of d0 (needs d1, d2) and d1 (needs d2, d3) are NULL,
    # never 22/21 - 1 spanning the gap
    assert np.isnan(labels[("B", 0)]) and np.isnan(labels[("B", 1)])
    assert labels[("B", 3)] == pytest.approx(24 / 23 - 1)
    for inst in "ABC":  # the last two market days have no t+2 yet
        assert np.isnan(labels[(inst, 4)]) and np.isnan(labels[(inst, 5)])
    assert ("B", 2) not in labels  # a label row only for days the stock traded


def test_vwap_falls_back_to_ohlc_mean_when_no_volume(labels):
    p2 = (32 + 32 * 1.02 + 32 * 0.98 + 32) / 4  # = 32: the bar's mean price
    assert labels[("C", 0)] == pytest.approx(p2 / 31 - 1)
    assert labels[("C", 1)] == pytest.approx(33 / p2 - 1)


def test_market_features_columns_and_warmup(settings):
    make_warehouse(settings.warehouse, prices_frame())
    build_features(settings)
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    mf = con.execute("SELECT * FROM market_features ORDER BY date").df()
    ix = con.execute("SELECT close FROM index_prices ORDER BY date").df()["close"].to_numpy()
    con.close()
    expected = ["date", "csi300_ret"] + [f"csi300_{k}_{w}" for w in (5, 10, 20, 30, 60)
                                         for k in ("ret_mean", "ret_std", "vol_mean_rel", "vol_std_rel")]
    assert list(mf.columns) == expected
    assert mf["csi300_ret"].iloc[1:].to_numpy() == pytest.approx(ix[1:] / ix[:-1] - 1)
    m5 = mf["csi300_ret_mean_5"]
    assert m5.iloc[:5].isna().all()  # 5 returns need 6 rows
    assert m5.iloc[5] == pytest.approx(np.mean(ix[1:] / ix[:-1] - 1))
    assert mf["csi300_vol_mean_rel_5"].iloc[:4].isna().all() and mf["csi300_vol_mean_rel_5"].iloc[4] > 0


def _market_features(settings, index: pd.DataFrame) -> pd.DataFrame:
    from tests.code.test_features import hand_made_prices

    make_warehouse(settings.warehouse, hand_made_prices(n_stocks=2, n_days=150), index=index)
    build_features(settings, force=True)
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    mf = con.execute("SELECT * FROM market_features ORDER BY date").df()
    con.close()
    return mf.set_index("date")


def test_market_features_are_scale_free_as_masters_reference(settings):
    """MASTER's reference feeds its gate Mean($amount, w)/$amount and Std($amount, w)/$amount
    (volume here): a market that trades 1000x more, or on a steady growth trend, gives the same
    (bounded) inputs, so test days are not pushed out of range by a train-fitted normalisation."""
    d = pd.bdate_range("2016-01-04", periods=150)
    rng = np.random.default_rng(3)
    vol = rng.uniform(1e9, 2e9, len(d)) * np.exp(np.linspace(0, 3, len(d)))   # 20x growth
    index = pd.DataFrame({"date": d, "index_name": "csi300", "instrument": "SH000300",
                          "close": 3000 * np.exp(np.cumsum(rng.normal(0, 0.01, len(d)))),
                          "volume": vol})
    index["open"] = index["high"] = index["low"] = index["close"]
    mf = _market_features(settings, index)
    mf_big = _market_features(settings, index.assign(volume=index["volume"] * 1000))
    pd.testing.assert_frame_equal(mf, mf_big, rtol=1e-9)
    v = pd.Series(vol, index=mf.index)
    for w in (20, 60):
        want = v.rolling(w).mean() / v
        got = mf[f"csi300_vol_mean_rel_{w}"]
        assert got.iloc[:w - 1].isna().all()
        np.testing.assert_allclose(got.iloc[w - 1:], want.iloc[w - 1:], rtol=1e-9)
        np.testing.assert_allclose(mf[f"csi300_vol_std_rel_{w}"].iloc[w - 1:],
                                   (v.rolling(w).std() / v).iloc[w - 1:], rtol=1e-9)
    rel = mf.filter(like="_rel_").stack().dropna()
    assert rel.between(0, 10).all()           # bounded, although volume grew 20x (and 1000x)
