"""Tensor store written from arrays: layout, segments with embargo, normalisation fitted on train."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.normalize import apply_robust, fit_robust
from pipeline.store import TensorStore


def tiny_arrays(days=30, n=6, d=3, seed=0):
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2020-01-01") + np.arange(days)
    feats = rng.normal(size=(days, n, d)).astype(np.float32) * 2 + 1
    traded = rng.random((days, n)) > 0.2
    labels = np.where(traded, rng.normal(size=(days, n)), np.nan).astype(np.float32)
    members = {"csi300": np.zeros((days, n), bool)}
    members["csi300"][:, :3] = True
    market = rng.normal(size=(days, 2)).astype(np.float32)
    segs = {"train": (dates[0], dates[14]), "valid": (dates[15], dates[21]),
            "test": (dates[22], dates[-1]), "embargo_days": 2}
    return dict(dates=dates, instruments=[f"S{i}" for i in range(n)],
                feature_names=[f"f{i}" for i in range(d)], features=feats, traded=traded,
                labels=labels, members=members, market=market, market_names=["a", "b"],
                segments=segs, window=5)


def test_from_arrays_roundtrip_and_layout(tmp_path):
    a = tiny_arrays()
    st = TensorStore.from_arrays(tmp_path / "s", **a, normalize=False)
    for f in ("features.f32", "labels.npy", "traded.npy", "members_csi300.npy", "members_all.npy",
              "market.npy", "meta.json", "norm_stats.json"):
        assert (st.root / f).is_file(), f
    assert isinstance(st.features, np.memmap) and st.features.dtype == np.float32
    exp = np.where(a["traded"][..., None], a["features"], 0)
    np.testing.assert_array_equal(st.features, exp)  # zero where not traded
    np.testing.assert_array_equal(st.members["all"], a["traded"])
    np.testing.assert_array_equal(st.members["csi300"], a["members"]["csi300"] & a["traded"])
    assert st.dates.dtype == np.dtype("datetime64[D]") and st.instruments[2] == "S2"
    reopened = TensorStore(st.root)
    assert reopened.fingerprint == st.fingerprint
    assert "6 instruments" in reopened.describe()


def test_segment_days_embargo_and_history(tmp_path):
    st = TensorStore.from_arrays(tmp_path / "s", **tiny_arrays())
    train, valid, test = (st.segment_days(s) for s in ("train", "valid", "test"))
    assert train.tolist() == list(range(4, 13))  # window-1 history; last 2 of 0..14 embargoed
    assert valid.tolist() == list(range(15, 20))  # 15..21 minus the last 2
    assert test.tolist() == list(range(22, 30))   # test is not followed by a segment
    # no training label (uses days t+1, t+2) reaches into valid
    assert train.max() + 2 <= 14 and valid.max() + 2 <= 21


def test_normalisation_fitted_on_train_only(tmp_path):
    a = tiny_arrays()
    st1 = TensorStore.from_arrays(tmp_path / "a", **a)
    b = dict(a, features=a["features"].copy(), market=a["market"].copy())
    b["features"][15:] *= 100  # alter valid and test
    b["market"][15:] += 50
    st2 = TensorStore.from_arrays(tmp_path / "b", **b)
    assert st1.norm_stats["median"] == st2.norm_stats["median"]
    assert st1.norm_stats["scale"] == st2.norm_stats["scale"]
    assert st1.norm_stats["market_scale"] == st2.norm_stats["market_scale"]
    np.testing.assert_array_equal(st1.features[:15], st2.features[:15])
    # and the train values are robust z-scores of train data, clipped
    tr = a["traded"][:15]
    med, scale = fit_robust(a["features"][:15][tr])
    np.testing.assert_allclose(st1.norm_stats["median"], med)
    np.testing.assert_allclose(st1.features[:15][tr], apply_robust(a["features"][:15][tr], med, scale, 3.0),
                               rtol=1e-6)
    assert np.abs(np.asarray(st2.features)).max() <= 3.0
    assert json.loads((st1.root / "norm_stats.json").read_text())["clip"] == 3.0


def test_robust_fit_handles_constant_and_nan():
    v = np.array([[1.0, 0.0, np.nan], [1.0, 0.0, np.nan], [1.0, 5.0, np.nan], [3.0, 0.0, np.nan]])
    med, scale = fit_robust(v)
    assert med.tolist() == [1.0, 0.0, 0.0]
    assert np.all(scale > 0)  # MAD 0 falls back to std, then to 1
    z = apply_robust(v, med, scale, 3.0)
    assert np.isfinite(z).all() and (z[:, 2] == 0).all()


def test_shape_mismatch_is_an_error(tmp_path):
    a = tiny_arrays()
    a["traded"] = a["traded"][:, :5]
    with pytest.raises(ValueError, match="shape mismatch"):
        TensorStore.from_arrays(tmp_path / "s", **a)
