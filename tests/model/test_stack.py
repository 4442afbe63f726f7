"""A stack of K cells trains each cell exactly as it would train alone (pipeline/engine).

For every registered model: three cells with different seeds and stock sets (padded to the
widest set, dropout on) in one stack end with the same per-cell history, best epoch, weights and
test IC as three single-cell runs. A cell that stops early does not change the others, and a
killed stack resumed from its checkpoints ends as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.evaluation.ic import ic_metrics
from pipeline.train import StackCell, fit_stack, score_days, seed_everything
from tests.model.test_models import NEURAL, SMALL
from tests.synthetic_store import make_store

CFG = replace(load_config().train, max_epochs=3, lr=3e-3, patience=10, batch_days=1, device="cpu")
CELLS = ((0, "small"), (1, "large"), (2, "small"))     # (seed, stock set): 24 and 32 members
TOL = dict(rel=1e-4, abs=1e-5)
RANK_TOL = dict(rel=1e-4, abs=2e-3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("stack") / "s", days=60, n=48)


def _model(name, store, seed):
    from pipeline.models import create_model

    seed_everything(seed)
    return create_model(name, d_feat=len(store.feature_names), d_market=len(store.market_names),
                        **SMALL.get(name, {}))


def _recipe(name):
    """CFG with the model's own loss, label handling and clip (master-ref: MSE on z-scored labels,
    extremes dropped, clip by value; drop 10% so that the 24..32-member days drop some)."""
    r = load_config().train_for(name)
    return replace(CFG, loss=r.loss, label_transform=r.label_transform, clip_mode=r.clip_mode,
                   drop_extreme=0.1 if r.drop_extreme else 0.0)


def _cells(specs, cfgs=None, dirs=None):
    cfgs = cfgs or [CFG] * len(specs)
    dirs = dirs or [None] * len(specs)
    return [StackCell(s, seed, c, d) for (seed, s), c, d in zip(specs, cfgs, dirs)]


def _test_ic(model, store, stockset):
    return ic_metrics(score_days(model, store, stockset, store.segment_days("test")))["ic"]


def _strip(history):
    return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "train_seconds")} for r in history]


def _same_run(a, b, model_a, model_b, store, stockset):
    ha, hb = _strip(a.history), _strip(b.history)
    assert [r["epoch"] for r in ha] == [r["epoch"] for r in hb]
    for ra, rb in zip(ha, hb):
        for k in ra:
            # A rank IC is not continuous in the scores: float noise (1e-8) can swap two nearly
            # tied stocks, one swap moving a day's Spearman by ~12 / n^3 (n = 24..32 here); the
            # Pearson IC and the loss beside it stay at TOL.
            tol = RANK_TOL if "rank" in k else TOL
            assert ra[k] == pytest.approx(rb[k], **tol), k
    assert a.best_epoch == b.best_epoch and a.stopped_early == b.stopped_early
    # Weights are compared through what they do (validation curve above, test IC below): the IC
    # loss is blind to a score's shift, so the head's bias sees only rounding noise as a gradient,
    # which Adam rescales to full-size steps; it differs between any two float orders.
    assert _test_ic(model_a, store, stockset) == pytest.approx(_test_ic(model_b, store, stockset), **TOL)


@pytest.mark.parametrize("name", NEURAL)   # anchors (no gradient loop): tests/model/test_anchors.py
def test_stack_of_three_equals_three_single_runs(name, store):
    torch.set_num_threads(1)
    solo = []
    cfg = _recipe(name)
    for seed, s in CELLS:
        m = _model(name, store, seed)
        solo.append((fit_stack([m], _cells([(seed, s)], [cfg]), store, progress=False)[0], m))
    models = [_model(name, store, seed) for seed, _ in CELLS]
    stacked = fit_stack(models, _cells(CELLS, [cfg] * 3), store, progress=False)
    for (ref, ref_model), res, model, (_, s) in zip(solo, stacked, models, CELLS):
        assert res.stack_size == 3 and len(res.history) == CFG.max_epochs
        _same_run(res, ref, model, ref_model, store, s)
    # the cells really differ (a stack that trained one cell three times would pass the above)
    assert stacked[0].history[-1]["train_loss"] != stacked[2].history[-1]["train_loss"]


@pytest.mark.parametrize("name", ["tcn", "master", "moderntcn", "miga-attn"])
def test_several_days_per_step_key_dropout_by_day_and_stock(name, store):
    """B = 3 days per step: a per-stock tensor has B*N rows, N the padded width; its dropout
    masks are keyed by (day, stock), so a cell padded wider in a stack draws the same ones."""
    torch.set_num_threads(1)
    cfg = replace(CFG, batch_days=3, max_epochs=2)
    specs = CELLS[:2]
    solo = []
    for seed, s in specs:
        m = _model(name, store, seed)
        solo.append((fit_stack([m], _cells([(seed, s)], [cfg]), store, progress=False)[0], m))
    models = [_model(name, store, seed) for seed, _ in specs]
    stacked = fit_stack(models, _cells(specs, [cfg] * 2), store, progress=False)
    for (ref, ref_model), res, model, (_, s) in zip(solo, stacked, models, specs):
        _same_run(res, ref, model, ref_model, store, s)


@pytest.mark.parametrize("name", ["moderntcn", "miga-conv"])
def test_a_cell_whose_epoch_runs_out_of_days_is_left_alone(name, store):
    """Cells of a stack with epochs of different lengths (a stock set with fewer member days):
    the shorter cell sits out the last steps of each epoch (no update, batch-norm statistics
    untouched) and ends as it would alone."""
    torch.set_num_threads(1)
    cfg = replace(CFG, max_epochs=2)
    train = store.segment_days("train")
    days = [train, train[: len(train) // 2]]
    solo = []
    for k, (seed, s) in enumerate(CELLS[:2]):
        m = _model(name, store, seed)
        solo.append((fit_stack([m], [StackCell(s, seed, cfg, train_days=days[k])], store,
                               progress=False)[0], m))
    models = [_model(name, store, seed) for seed, _ in CELLS[:2]]
    cells = [StackCell(s, seed, cfg, train_days=days[k]) for k, (seed, s) in enumerate(CELLS[:2])]
    stacked = fit_stack(models, cells, store, progress=False)
    for (ref, ref_model), res, model, (_, s) in zip(solo, stacked, models, CELLS[:2]):
        _same_run(res, ref, model, ref_model, store, s)
    assert stacked[1].train_stock_days < stacked[0].train_stock_days


def test_early_stopping_of_one_cell_leaves_the_others_alone(store):
    cfgs = [CFG, replace(CFG, lr=0.0, patience=1, max_epochs=4), replace(CFG, max_epochs=4)]
    specs = CELLS
    models = [_model("tcn", store, seed) for seed, _ in specs]
    stacked = fit_stack(models, _cells(specs, cfgs), store, progress=False)
    assert stacked[1].stopped_early and stacked[1].epochs_run == 2 and stacked[1].best_epoch == 1
    assert len(stacked[2].history) == 4
    for k in (0, 2):
        m = _model("tcn", store, specs[k][0])
        ref = fit_stack([m], _cells([specs[k]], [cfgs[k]]), store, progress=False)[0]
        _same_run(stacked[k], ref, models[k], m, store, specs[k][1])


class Killed(RuntimeError):
    pass


def test_killed_stack_resumes_to_the_uninterrupted_result(store, tmp_path):
    name = "miga-conv"
    ref_models = [_model(name, store, seed) for seed, _ in CELLS]
    ref = fit_stack(ref_models, _cells(CELLS), store, progress=False)

    def kill(k, rec):
        if k == 1 and rec["epoch"] == 2:          # mid-stack: cell 0 and 1 saved epoch 2, cell 2 not
            raise Killed

    dirs = [tmp_path / f"c{k}" for k in range(3)]
    with pytest.raises(Killed):
        fit_stack([_model(name, store, seed) for seed, _ in CELLS], _cells(CELLS, dirs=dirs), store,
                  on_epoch=kill, progress=False)
    models = [_model(name, store, 99) for _ in CELLS]   # a fresh process: other initial weights
    seen = []
    res = fit_stack(models, _cells(CELLS, dirs=dirs), store, progress=False,
                    on_epoch=lambda k, rec: seen.append((k, rec["epoch"])))
    assert [r.resumed_from for r in res] == [2, 2, 1]
    assert sorted(seen) == [(0, 3), (1, 3), (2, 2), (2, 3)]
    for r, a, m, ma, (_, s) in zip(res, ref, models, ref_models, CELLS):
        _same_run(r, a, m, ma, store, s)


def test_checkpoints_load_without_unpickling(store, tmp_path):
    from pipeline.train import CHECKPOINT

    fit_stack([_model("tcn", store, 0)], _cells(CELLS[:1], [replace(CFG, max_epochs=1)], [tmp_path]),
              store, progress=False)
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 1 and isinstance(ck["history"], list) and "torch_rng" in ck


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("name", ["miga-conv", "tcn", "master"])
def test_graph_captured_step_equals_the_eager_step(name, store):
    runs = []
    for graph in (False, True):
        models = [_model(name, store, seed) for seed, _ in CELLS]
        runs.append((fit_stack(models, _cells(CELLS, [replace(CFG, device="cuda")] * 3), store,
                               progress=False, graph=graph), models))
    (eager, me), (graphed, mg) = runs
    for a, b, x, y, (_, s) in zip(eager, graphed, me, mg, CELLS):
        _same_run(b, a, y, x, store, s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_stack_equals_single_runs_on_gpu(store):
    cfg = replace(CFG, device="cuda")
    solo = []
    for seed, s in CELLS:
        m = _model("miga-conv", store, seed)
        solo.append((fit_stack([m], _cells([(seed, s)], [cfg]), store, progress=False)[0], m))
    models = [_model("miga-conv", store, seed) for seed, _ in CELLS]
    stacked = fit_stack(models, _cells(CELLS, [cfg] * 3), store, progress=False)
    for (ref, rm), res, m, (_, s) in zip(solo, stacked, models, CELLS):
        _same_run(res, ref, m, rm, store, s)


def test_padding_width_is_static_per_stack(store):
    from pipeline.engine import StackDays, member_table

    days = StackDays(store, ["small", "large"], torch.device("cpu"))
    assert days.width == 32
    b = days.gather(torch.tensor([[10], [-1]]))
    assert b.x.shape[:3] == (2, 1, 32)
    assert int(b.mask[0].sum()) == int(store.members["small"][10].sum())
    assert not b.mask[1].any() and torch.isnan(b.y[1]).all()
    t = member_table(store.members["small"], 32)
    assert (t[10, :24] == np.flatnonzero(store.members["small"][10])).all() and (t[10, 24:] == -1).all()
