"""Store built from a warehouse: point-in-time stock sets, embargo, train-only normalisation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.settings import Settings
from pipeline.store import TensorStore, build_store, current_store
from tests.code.test_features import hand_made_prices, make_warehouse

SEGMENTS = {"train": ["2016-01-04", "2016-04-29"], "valid": ["2016-05-02", "2016-06-15"],
            "test": ["2016-06-16", "2016-12-30"], "embargo_days": 2}
TRAIN_END = np.datetime64("2016-04-29")


def membership() -> pd.DataFrame:
    return pd.DataFrame({
        "index_name": ["csi300", "csi300", "csi300", "csi500"],
        "instrument": ["S000", "S001", "S002", "S003"],
        "start_date": pd.to_datetime(["2015-12-31", "2016-06-01", "2015-12-31", "2016-01-01"]),
        "end_date": pd.to_datetime(["2030-01-01", None, "2016-03-31", None]),
    })


def config():
    return load_config(overrides={"segments": SEGMENTS, "data": {"stocksets": ["csi300", "csi500", "csi1000"]}})


def build(home, prices) -> TensorStore:
    s = Settings.from_env(home).ensure()
    make_warehouse(s.warehouse, prices, membership())
    return build_store(s, config())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same market twice, the second with every price after the train segment altered."""
    prices = hand_made_prices(n_stocks=4, n_days=150)
    altered = prices.copy()
    later = altered["date"] > pd.Timestamp(TRAIN_END)
    rng = np.random.default_rng(5)
    k = rng.uniform(0.5, 1.5, later.sum())
    for c in ("open", "high", "low", "close", "amount"):
        altered.loc[later, c] = altered.loc[later, c] * k
    root = tmp_path_factory.mktemp("stores")
    return build(root / "a", prices), build(root / "b", altered)


def test_store_matches_warehouse_shapes(stores):
    a, _ = stores
    days, n, d = a.shape
    assert (n, d) == (4, 158) and days == 150
    assert a.features.dtype == np.float32 and np.abs(np.asarray(a.features)).max() <= 3.0
    assert a.feature_names[0] == "KMID" and a.market_names[0] == "csi300_ret"
    assert a.traded.sum() == 150 * 4 - 4 - 25  # suspensions and the late listing
    assert (np.asarray(a.features)[~a.traded] == 0).all()
    assert set(a.members) == {"csi300", "csi500", "csi1000", "all"}
    assert not a.members["csi1000"].any()  # no membership rows: empty, not an error


def test_membership_is_point_in_time(stores):
    a, _ = stores
    m = a.members["csi300"]
    j = {s: i for i, s in enumerate(a.instruments)}
    joined = a.dates >= np.datetime64("2016-06-01")
    assert not m[~joined, j["S001"]].any()  # joined mid-2016: absent before
    assert m[joined, j["S001"]].all()
    left = a.dates > np.datetime64("2016-03-31")
    assert m[~left, j["S002"]].all() and not m[left, j["S002"]].any()  # left: in while a member
    assert (m[:, j["S000"]] == a.traded[:, j["S000"]]).all()  # member, but not on suspended days
    assert not m[:, j["S003"]].any() and a.members["csi500"][:, j["S003"]].sum() == a.traded[:, j["S003"]].sum()


def test_embargo_no_train_label_uses_valid_or_test_prices(stores):
    a, b = stores
    train = a.segment_days("train")
    assert a.dates[train].max() <= TRAIN_END and len(train) > 50
    assert (a.dates[train + 2] <= TRAIN_END).all()  # t+1, t+2 inside train
    # altering every later price leaves every training label unchanged ...
    np.testing.assert_array_equal(a.labels[train], b.labels[train])
    # ... while the two embargoed days' labels did change: the embargo is needed
    last = np.flatnonzero(a.dates <= TRAIN_END)[-2:]
    assert not np.allclose(a.labels[last], b.labels[last], equal_nan=True)
    valid = a.segment_days("valid")
    assert a.dates[valid + 2].max() <= np.datetime64("2016-06-15")


def test_normalisation_unchanged_when_later_data_altered(stores):
    a, b = stores
    assert a.fingerprint != b.fingerprint
    for k in ("median", "scale", "market_median", "market_scale"):
        assert a.norm_stats[k] == b.norm_stats[k]
    train = np.flatnonzero(a.dates <= TRAIN_END)
    np.testing.assert_array_equal(a.features[train], b.features[train])
    test = a.segment_days("test")
    assert not np.array_equal(a.features[test], b.features[test])


def test_store_reused_while_inputs_unchanged(settings):
    prices = hand_made_prices(n_stocks=3, n_days=90)
    make_warehouse(settings.warehouse, prices, membership())
    s1 = build_store(settings, config())
    mtime = (s1.root / "features.f32").stat().st_mtime_ns
    s2 = build_store(settings, config())
    assert s2.root == s1.root and (s2.root / "features.f32").stat().st_mtime_ns == mtime
    assert current_store(settings, config()).fingerprint == s1.fingerprint
    other = load_config(overrides={"segments": dict(SEGMENTS, embargo_days=3)})
    assert build_store(settings, other).fingerprint != s1.fingerprint
    assert "158 features" in s1.describe()
