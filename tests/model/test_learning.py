"""Every registered model learns a planted signal through the real trainer, store and loader;
with labels shuffled across stocks within each day there is nothing to learn (IC near 0)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pipeline.config import load_config
from pipeline.evaluation.ic import ic_metrics
from pipeline.loader import DayLoader
from pipeline.models import create_model
from pipeline.train import fit, score_loader
from tests.model.test_models import NEURAL, SMALL
from tests.synthetic_store import make_store

CFG = replace(load_config().train, max_epochs=4, lr=3e-3, patience=4, batch_days=4, device="cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    return {"signal": make_store(root / "signal", days=70, n=60),
            "shuffled": make_store(root / "shuffled", days=70, n=60, shuffle_labels=True)}


def _train_and_test(name: str, store, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = create_model(name, d_feat=len(store.feature_names), d_market=len(store.market_names),
                         **SMALL.get(name, {}))
    train = DayLoader(store, "train", "all", batch_days=CFG.batch_days, shuffle=True, seed=seed)
    valid = DayLoader(store, "valid", "all", batch_days=16)
    fit(model, train, valid, CFG, seed=seed, progress=False)
    return ic_metrics(score_loader(model, DayLoader(store, "test", "all", batch_days=16)))["ic"]


@pytest.mark.parametrize("name", NEURAL)   # anchors (no gradient loop): tests/model/test_anchors.py
def test_every_model_learns_the_planted_signal(name, stores):
    ic = _train_and_test(name, stores["signal"])
    assert ic > 0.2, f"{name}: test IC {ic:.3f}"


@pytest.mark.parametrize("name", NEURAL)   # anchors (no gradient loop): tests/model/test_anchors.py
def test_no_signal_no_ic(name, stores):
    ic = _train_and_test(name, stores["shuffled"])
    assert abs(ic) < 0.1, f"{name}: test IC {ic:.3f} on shuffled labels"
