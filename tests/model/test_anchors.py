"""The anchors (pipeline/anchors.py): the ridge is the closed-form ridge of an independent
implementation on the loader's own batches, the validation segment picks its penalty, LightGBM
stops early on the validation segment and is deterministic per seed, and both learn a planted
signal and find none in shuffled labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.anchors import fit_anchor
from pipeline.evaluation.ic import ic_metrics
from pipeline.loader import DayLoader
from pipeline.models import create_model
from pipeline.train import StackCell, score_loader
from tests.synthetic_store import make_store

SMALL_LGBM = dict(num_leaves=8, max_depth=3, lambda_l1=0.0, lambda_l2=1.0, num_boost_round=300,
                  early_stopping_rounds=10, num_threads=1)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchors")
    return {"signal": make_store(root / "signal", days=70, n=60),
            "shuffled": make_store(root / "shuffled", days=70, n=60, shuffle_labels=True),
            "noisy": make_store(root / "noisy", days=70, n=60, noise=4.0)}


def _fit(name, store, stockset="all", seed=0, **overrides):
    model = create_model(name, d_feat=len(store.feature_names), d_market=len(store.market_names),
                         **overrides)
    days = {s: DayLoader(store, s, stockset).days for s in ("train", "valid")}
    res = fit_anchor(model, StackCell(stockset, seed, None, None, train_days=days["train"],
                                      valid_days=days["valid"]), store)
    return model, res


def _loader_rows(store, segment, stockset):
    """(x (n, D), label (n,), day (n,)) of the members, read through DayLoader batches."""
    xs, ys, ds = [], [], []
    for b in DayLoader(store, segment, stockset, batch_days=4):
        m = b.mask
        xs.append(b.x[:, :, -1, :][m].numpy())
        ys.append(b.y[m].numpy())
        ds.append(b.day_idx[:, None].expand_as(m)[m].numpy())
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys), np.concatenate(ds)


def test_linear_is_the_closed_form_ridge_on_per_day_zscored_labels(stores):
    from sklearn.linear_model import Ridge

    store = stores["signal"]
    model, res = _fit("linear", store, "large", alphas=(0.05,))
    x, y, day = _loader_rows(store, "train", "large")
    df = pd.DataFrame({"y": y.astype(np.float64), "day": day}).dropna()
    g = df.groupby("day")["y"]
    z = ((df["y"] - g.transform("mean")) / g.transform("std")).to_numpy()   # Qlib CSZScoreNorm
    xk = x[df.index.to_numpy()]
    ref = Ridge(alpha=0.05 * len(z), fit_intercept=True).fit(xk, z)
    np.testing.assert_allclose(model.linear.weight.detach().numpy()[0], ref.coef_, rtol=1e-5, atol=1e-6)
    assert float(model.linear.bias.detach()) == pytest.approx(ref.intercept_, abs=1e-6)
    rec = res.history[0]
    assert rec["ridge_alpha"] == 0.05 and res.best_epoch == res.epochs_run == 1
    assert rec["train_loss"] == pytest.approx(np.mean((ref.predict(xk) - z) ** 2), rel=1e-6)
    # the record's valid IC is the fitted model's, scored by the loader like any model
    valid = score_loader(model, DayLoader(store, "valid", "large", batch_days=8))
    assert rec["valid_ic"] == pytest.approx(ic_metrics(valid)["ic"], abs=1e-6)


def test_linear_keeps_the_penalty_with_the_best_validation_ic(stores):
    store = stores["noisy"]
    alphas = (0.0, 0.1, 10.0)
    single = {a: _fit("linear", store, alphas=(a,))[1].history[0]["valid_ic"] for a in alphas}
    _, res = _fit("linear", store, alphas=alphas)
    best = max(single, key=single.get)
    assert res.history[0]["ridge_alpha"] == best
    assert res.history[0]["valid_ic"] == pytest.approx(single[best], abs=1e-9)
    assert len({round(v, 6) for v in single.values()}) > 1          # the penalties do differ


def test_lgbm_stops_early_on_the_validation_segment_and_is_deterministic(stores):
    store = stores["noisy"]
    model, res = _fit("lgbm", store, seed=1, **SMALL_LGBM)
    best = res.history[0]["best_iteration"]
    assert 1 <= best < SMALL_LGBM["num_boost_round"] - SMALL_LGBM["early_stopping_rounds"] + 1
    assert model.booster().num_trees() == best                     # cut at the best iteration
    again, _ = _fit("lgbm", store, seed=1, **SMALL_LGBM)
    assert torch.equal(again.model_string, model.model_string)
    other, _ = _fit("lgbm", store, seed=2, **SMALL_LGBM)             # column sampling follows the seed
    assert not torch.equal(other.model_string, model.model_string)


@pytest.mark.parametrize("name,overrides", [("linear", {}), ("lgbm", SMALL_LGBM)])
def test_anchor_learns_the_planted_signal_and_not_shuffled_labels(name, overrides, stores):
    def test_ic(store):
        model, _ = _fit(name, store, **overrides)
        return ic_metrics(score_loader(model, DayLoader(store, "test", "all", batch_days=8)))["ic"]

    assert test_ic(stores["signal"]) > 0.4
    assert abs(test_ic(stores["shuffled"])) < 0.1
