"""Synthetic data folder: layout of ../shared/data, deterministic, with a learnable planted signal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.data.synth import SynthSpec, oracle_ic, simulate, write_synthetic

SPEC = SynthSpec(n_stocks=300, n_days=750, seed=3)


@pytest.fixture(scope="module")
def panel():
    return simulate(SPEC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("synth"), SynthSpec(n_stocks=40, n_days=90, seed=1,
                                                                       n_features=12))


def test_layout_matches_shared_data(folder):
    daily = pq.read_schema(folder / "daily.parquet")
    assert daily.names == ["date", "instrument", "name", "open", "high", "low", "close", "volume",
                           "amount", "factor", "float_shares", "total_shares"]
    assert str(daily.field("date").type) == "timestamp[ms]"
    assert str(daily.field("volume").type) == "int64"
    assert pq.read_schema(folder / "membership.parquet").names == [
        "index_name", "instrument", "start_date", "end_date"]
    assert pq.read_schema(folder / "index.parquet").names == [
        "date", "index_name", "instrument", "open", "high", "low", "close", "volume"]
    feats = pq.read_table(folder / "features.parquet")
    assert feats.column_names[:3] == ["date", "instrument", "f0000"] and feats.num_columns == 14
    assert feats.num_rows == pq.read_metadata(folder / "daily.parquet").num_rows
    assert np.isfinite(feats.select(["f0000", "f0011"]).to_pandas().to_numpy()).all()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    spec = SynthSpec(n_stocks=30, n_days=60, seed=5, n_features=4)
    a, b = write_synthetic(tmp_path / "a", spec), write_synthetic(tmp_path / "b", spec)
    for f in ("daily", "membership", "index", "features"):
        assert (a / f"{f}.parquet").read_bytes() == (b / f"{f}.parquet").read_bytes(), f
    c = write_synthetic(tmp_path / "c", SynthSpec(n_stocks=30, n_days=60, seed=6))
    assert (a / "daily.parquet").read_bytes() != (c / "daily.parquet").read_bytes()


def test_prices_are_consistent(panel):
    d = panel.frames["daily"]
    assert (d[["open", "high", "low", "close", "factor"]] > 0).all().all()
    assert (d["low"] <= d[["open", "close"]].min(axis=1)).all()
    assert (d["high"] >= d[["open", "close"]].max(axis=1)).all()
    assert not d.duplicated(["date", "instrument"]).any()
    # The label's price: amount / volume * factor is the simulated adjusted average price.
    p = d["amount"] / d["volume"] * d["factor"]
    ti = np.searchsorted(panel.dates.values, d["date"].values.astype("datetime64[ns]"))
    si = np.searchsorted(panel.instruments, d["instrument"].to_numpy())
    np.testing.assert_allclose(p, np.exp(panel.logp[ti, si]), rtol=1e-6)


def test_market_events(panel):
    d = panel.frames["daily"]
    days, n = panel.traded.shape
    assert 0.9 < panel.traded.mean() < 0.995                     # suspensions: missing rows
    first = panel.traded.argmax(0)
    last = days - 1 - panel.traded[::-1].argmax(0)
    assert (first > 0).sum() >= 3 and (last < days - 1).sum() >= 3  # late listings, delistings
    splits = d.groupby("instrument")["factor"].nunique()
    assert (splits > 1).sum() >= 5
    assert set(d["date"].dt.dayofweek) <= {0, 1, 2, 3, 4}
    idx = panel.frames["index"]
    assert set(idx["index_name"]) == {"csi300", "csi500", "csi1000"}
    assert len(idx) == 3 * days


def test_membership_is_point_in_time_and_changes(panel):
    m = panel.frames["membership"]
    assert (m["start_date"] <= m["end_date"]).all()
    on = {}
    for day in (panel.dates[10], panel.dates[-10]):
        live = m[(m.start_date <= day) & (m.end_date >= day)]
        on[day] = live.groupby("index_name")["instrument"].apply(set)
        sizes = live.groupby("index_name").size()
        assert sizes["csi300"] < sizes["csi500"] < sizes["csi1000"] <= 0.5 * SPEC.n_stocks
        assert not (on[day]["csi300"] & on[day]["csi500"])    # disjoint sets
    a, b = on.values()
    assert a["csi300"] != b["csi300"] and a["csi1000"] != b["csi1000"]


def test_planted_signal_is_learnable_from_price_features(panel):
    assert 0.09 < oracle_ic(panel) < 0.2
    # Without the hidden state: 5-day close return, sign by the stock's 20-day volatility
    # (reversal stocks are the volatile ones). This is what Alpha158 features can see.
    d = panel.frames["daily"]
    p = (d.amount / d.volume * d.factor).groupby([d.date, d.instrument]).first().unstack()
    close = (d.close * d.factor).groupby([d.date, d.instrument]).first().unstack()
    y = p.shift(-2) / p.shift(-1) - 1
    roc5 = np.log(close / close.shift(5))
    std20 = np.log(close / close.shift(1)).rolling(20).std()
    sign = np.where(std20.rank(axis=1, pct=True) < 0.5, 1.0, -1.0)
    ic = (roc5 * sign).corrwith(y, axis=1).dropna()
    assert ic.mean() > 0.04
    assert (roc5.corrwith(y, axis=1).dropna().abs().mean()) < ic.mean()  # style matters


def test_feature_panel_carries_the_signal(folder):
    f = pd.read_parquet(folder / "features.parquet", columns=["date", "instrument", "f0000", "f0005"])
    assert f["f0000"].std() == pytest.approx(1.0, abs=0.1)
    assert abs(np.corrcoef(f["f0000"], f["f0005"])[0, 1]) < 0.1      # f0005.. are noise


def test_too_small_spec_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write_synthetic(tmp_path, SynthSpec(n_stocks=3, n_days=10))
