"""The training loop: learns, restores the best epoch, stops early, resumes exactly after a kill."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.config import load_config
from pipeline.evaluation.ic import ic_metrics
from pipeline.loader import DayLoader
from pipeline.train import fit, score_loader
from tests.synthetic_store import make_store


class TinyModel(torch.nn.Module):
    """Follows the model contract: (x (B,N,T,D), mask, market) -> (scores (B,N), aux)."""

    needs_market = False

    def __init__(self, d: int, t: int = 5):
        super().__init__()
        self.drop = torch.nn.Dropout(0.2)           # uses the torch RNG: resume must restore it
        self.lin = torch.nn.Linear(d * t, 1)

    def forward(self, x, mask, market=None):
        b, n, t, d = x.shape
        h = self.drop(x.reshape(b, n, t * d))
        return self.lin(h).squeeze(-1), (self.lin.weight ** 2).sum()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s")


def _loaders(store, batch_days=4, seed=0):
    return (DayLoader(store, "train", "all", batch_days=batch_days, shuffle=True, seed=seed),
            DayLoader(store, "valid", "all", batch_days=8))


def _cfg(**kw):
    base = dict(max_epochs=3, lr=1e-2, patience=5, device="cpu", batch_days=4)
    base.update(kw)
    return replace(load_config().train, **base)


def _model(seed=0, d=6):
    torch.manual_seed(seed)
    return TinyModel(d)


def test_fit_learns_and_restores_best_epoch(store):
    tr, va = _loaders(store)
    model = _model()
    res = fit(model, tr, va, _cfg(max_epochs=4), progress=False)
    assert len(res.history) == res.epochs_run == 4
    rec = res.history[0]
    assert set(rec) >= {"epoch", "train_loss", "train_ic", "valid_ic", "valid_rank_ic", "epoch_seconds"}
    best = max(h["valid_ic"] for h in res.history)
    assert res.best_valid_ic == best > 0.3
    assert res.history[res.best_epoch - 1]["valid_ic"] == best
    # the restored weights are the best epoch's: predicting again gives its validation IC
    again = ic_metrics(score_loader(model, va, store=store))["ic"]
    assert again == pytest.approx(best, abs=1e-6)
    assert res.throughput > 0


def test_same_seed_same_numbers_and_batch_sizes(store):
    runs = []
    for _ in range(2):
        tr, va = _loaders(store, batch_days=1)
        m = _model(1)
        runs.append((fit(m, tr, va, _cfg(max_epochs=2), seed=1, progress=False), m))
    (r1, m1), (r2, m2) = runs
    assert [h["valid_ic"] for h in r1.history] == [h["valid_ic"] for h in r2.history]
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    tr, va = _loaders(store, batch_days=16)
    r16 = fit(_model(1), tr, va, _cfg(max_epochs=2, loss="mse"), progress=False)
    assert len(r16.history) == 2 and math.isfinite(r16.history[-1]["train_loss"])


def test_early_stopping_on_flat_validation_ic(store):
    tr, va = _loaders(store)
    res = fit(_model(), tr, va, _cfg(max_epochs=10, lr=0.0, patience=2), progress=False)
    # lr 0: the validation IC never improves after epoch 1 -> stops after 1 + patience epochs
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1


class Killed(RuntimeError):
    pass


def test_resume_after_kill_gives_the_same_result(store, tmp_path):
    cfg = _cfg(max_epochs=3)
    tr, va = _loaders(store)
    ref_model = _model(2)
    ref = fit(ref_model, tr, va, cfg, seed=2, checkpoint_dir=tmp_path / "ref", progress=False)

    def kill_after_first(rec):
        if rec["epoch"] == 1:
            raise Killed

    tr, va = _loaders(store)
    with pytest.raises(Killed):
        fit(_model(2), tr, va, cfg, seed=2, checkpoint_dir=tmp_path / "run",
            on_epoch=kill_after_first, progress=False)
    seen = []
    tr, va = _loaders(store)
    model = _model(99)                                  # a fresh process: other initial weights
    res = fit(model, tr, va, cfg, seed=2, checkpoint_dir=tmp_path / "run",
              on_epoch=seen.append, progress=False)
    assert res.resumed_from == 1 and [r["epoch"] for r in seen] == [2, 3]
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "train_seconds")} for r in h]  # noqa: E731
    assert strip(res.history) == strip(ref.history)
    assert res.best_epoch == ref.best_epoch
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert ic_metrics(score_loader(model, va))["ic"] == ic_metrics(score_loader(ref_model, va))["ic"]
