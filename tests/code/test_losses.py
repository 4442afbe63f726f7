"""A training recipe's label handling and gradient clip (pipeline/losses.py, pipeline/engine/optim.py):
Qlib's CSZScoreNorm / CSRankNorm per day, MASTER's extreme-label drop, clip by value."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.engine import clip_per_cell
from pipeline.losses import cell_losses, drop_extreme, transform_labels

K, B, N = 2, 3, 40


def labels(seed: int = 0):
    """y (K, B, N) with ties, NaN labels and non-members; mask (K, B, N)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(K, B, N, generator=g)
    y[0, 0, :6] = 0.25                                  # ties
    y[0, 1, 3:9] = float("nan")                         # no label
    y[1, 2, ::7] = float("nan")
    mask = torch.rand(K, B, N, generator=g) > 0.15      # non-members
    mask[1, 0, 30:] = False                             # padding
    return y, mask


def pandas_reference(y, mask, kind: str) -> np.ndarray:
    """Qlib's processors on one day's labelled members (qlib/data/dataset/processor.py)."""
    out = np.full(y.shape, np.nan)
    for k in range(K):
        for b in range(B):
            s = pd.Series(y[k, b].numpy()).where(mask[k, b].numpy()).dropna()
            if kind == "cszscore":                      # CSZScoreNorm: (x - mean) / std
                t = (s - s.mean()) / s.std()
            else:                                       # CSRankNorm: (rank pct - 0.5) * 3.46
                t = (s.rank(pct=True) - 0.5) * 3.46
            out[k, b, t.index] = t.to_numpy()
    return out


@pytest.mark.parametrize("kind", ["cszscore", "csrank"])
def test_label_transforms_match_qlib_per_day(kind):
    y, mask = labels()
    ref = pandas_reference(y, mask, kind)
    got = transform_labels(y, mask, kind)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)   # NaN where ref is NaN
    # vmap-safe: the same per cell under the engine's cell axis
    under_vmap = torch.func.vmap(lambda a, m: transform_labels(a, m, kind))(y, mask)
    np.testing.assert_allclose(under_vmap.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert transform_labels(y, mask, "none") is y


def test_drop_extreme_takes_exactly_the_top_and_bottom_k_of_each_day_out_of_the_loss():
    y, mask = labels(1)
    frac = 0.1                                           # int(0.1 n) per tail: 2 or 3 of each day
    scores = torch.randn(K, B, N, requires_grad=True)
    zeros = torch.zeros(K)
    loss, _ = cell_losses("mse", scores, y, mask, zeros, zeros, torch.ones(K), "cszscore", frac)
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    kept = drop_extreme(y, mask, frac)
    dropped_any = 0
    for k in range(K):
        for b in range(B):
            valid = (mask[k, b] & torch.isfinite(y[k, b])).numpy()
            n = int(valid.sum())
            j = int(frac * n)                            # as base_model.py drop_extreme
            order = np.flatnonzero(valid)[np.argsort(y[k, b].numpy()[valid], kind="stable")]
            out = set(order[:j]) | set(order[n - j:])
            dropped = set(np.flatnonzero(mask[k, b].numpy() & ~kept[k, b].numpy()))
            assert dropped == out                        # exactly the k lowest and k highest
            dropped_any += len(out)
            g = grad[k, b].numpy()
            assert all(g[i] == 0 for i in out)           # no gradient from a dropped stock
            assert all(g[i] != 0 for i in set(np.flatnonzero(valid)) - out)
    assert dropped_any > 0
    # MASTER's 2.5%: days of 40 and 80 labelled stocks drop 1 and 2 per tail (0.025 * 40 is 1)
    frac = 0.025
    y2 = torch.arange(80, dtype=torch.float32).flip(0).reshape(1, 80)
    m2 = torch.ones(1, 80, dtype=torch.bool)
    assert (~drop_extreme(y2, m2, frac)).sum() == 4
    assert (~drop_extreme(y2[:, :40], m2[:, :40], frac)).sum() == 2
    assert drop_extreme(y, mask, 0.0) is mask


def test_zscore_after_the_drop_uses_the_kept_stocks():
    """The reference z-scores the labels that remain after the drop (base_model.py train_epoch)."""
    y, mask = labels(2)
    kept = drop_extreme(y, mask, 0.1)
    z = transform_labels(y, kept, "cszscore")
    for k in range(K):
        for b in range(B):
            zz = z[k, b][torch.isfinite(z[k, b])]
            assert abs(float(zz.mean())) < 1e-5 and abs(float(zz.std()) - 1) < 1e-5


def test_clip_by_value_bounds_every_entry_per_cell():
    g = torch.randn(3, 500) * 10
    bound = torch.tensor([3.0, 0.5, 0.0])                # 0 = off
    out = clip_per_cell(g, bound, "value")
    assert out[0].abs().max() <= 3.0 and out[1].abs().max() <= 0.5
    assert torch.equal(out[2], g[2])
    inside = g[0].abs() <= 3.0
    assert torch.equal(out[0][inside], g[0][inside])    # entries within the bound are untouched
    p = torch.nn.Parameter(torch.zeros(500))
    p.grad = g[0].clone()
    torch.nn.utils.clip_grad_value_([p], 3.0)            # what MASTER's reference calls
    assert torch.equal(out[0], p.grad)
    # clip by norm (the default) keeps the direction and bounds the norm instead
    n = clip_per_cell(g, bound, "norm")
    assert n[0].norm() <= 3.0 + 1e-4 and n[0].abs().max() < g[0].abs().max()
    with pytest.raises(ValueError, match="clip mode"):
        clip_per_cell(g, bound, "both")


def test_a_stack_step_uses_the_cells_recipe(tmp_path, monkeypatch):
    """fit_stack's step hands the recipe's label handling to the loss and its clip mode to the
    clip (pipeline.train._Engine._step), and refuses a stack whose cells' recipes differ."""
    from dataclasses import replace

    from pipeline import train
    from pipeline.config import Segments, load_config
    from pipeline.models import create_model
    from pipeline.store.arrays import TensorStore
    from datetime import date

    days, n = 40, 6
    rng = np.random.default_rng(0)
    store = TensorStore.from_arrays(
        tmp_path / "store", np.arange("2016-01-04", days, dtype="datetime64[D]"),
        np.array([f"S{i}" for i in range(n)]), ["f0", "f1"],
        rng.normal(size=(days, n, 2)).astype(np.float32), np.ones((days, n), bool),
        rng.normal(size=(days, n)).astype(np.float32),
        {"csi300": np.ones((days, n), bool), "all": np.ones((days, n), bool)},
        np.zeros((days, 0), np.float32), [],
        Segments(train=(date(2016, 1, 4), date(2016, 1, 25)), valid=(date(2016, 1, 28), date(2016, 2, 1)),
                 test=(date(2016, 2, 4), date(2016, 2, 12)), embargo_days=2), window=5)
    cfg = replace(load_config().train_for("master-ref"), max_epochs=1, device="cpu")
    seen = {"loss": [], "clip": []}
    real_loss, real_clip = train.cell_losses, train.clip_per_cell

    def spy_loss(*a):
        seen["loss"].append(a[0:1] + a[7:])
        return real_loss(*a)

    def spy_clip(grad, bound, mode):
        seen["clip"].append(mode)
        out = real_clip(grad, bound, mode)
        assert out.abs().max() <= 3.0
        return out

    monkeypatch.setattr(train, "cell_losses", spy_loss)
    monkeypatch.setattr(train, "clip_per_cell", spy_clip)
    model = lambda: create_model("tcn", d_feat=2, hidden=4, num_layers=1, kernel_size=2)  # noqa: E731
    train.fit_stack([model()], [train.StackCell("csi300", 0, cfg)], store, progress=False)
    assert seen["loss"] and set(seen["loss"]) == {("mse", "cszscore", 0.025)}
    assert seen["clip"] and set(seen["clip"]) == {"value"}
    other = replace(cfg, label_transform="none")
    with pytest.raises(ValueError, match="label_transform"):
        train.fit_stack([model(), model()], [train.StackCell("csi300", 0, cfg),
                                             train.StackCell("csi300", 1, other)], store, progress=False)
