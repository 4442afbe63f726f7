"""Behaviour of every registered model (parametrized over the registry, timm-style).

Tiny sizes keep the file fast on 2 cores; a model missing from SMALL is tested at its defaults.
The anchors (lgbm, linear) are built fitted (on a tiny synthetic store, `pipeline.anchors`) and
take the interface tests; they have no gradient training, so the gradient tests run over NEURAL.
"""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.models import (ANCHORS, MODELS, ModelConfigError, create_model, model_config,
                             model_from_state, model_state)

B, N, T, D, M = 2, 6, 5, 7, 3



SMALL: dict[str, dict] = {
    "miga-conv": dict(hidden=8, num_layers=2, kernel_size=3, groups=3, experts=4, top_k=3, d_expert=8,
                      attn_heads=2),
    "miga-rec": dict(hidden=8, num_layers=1, groups=3, experts=4, top_k=3, d_expert=8, attn_heads=2),
    "miga-attn": dict(hidden=8, nhead=2, num_layers=1, dim_feedforward=16, groups=3, experts=4, top_k=3,
                      d_expert=8, attn_heads=2),
    "tcn": dict(hidden=8, num_layers=2, kernel_size=3),
    "lstm": dict(hidden=8),
    "transformer": dict(hidden=8, nhead=2, num_layers=1, dim_feedforward=16),
    "moderntcn": dict(n_vars=4, d_model=4),
    "mamba": dict(hidden=8, num_layers=1, d_state=4),
    "master": dict(d_model=8, t_nhead=2, s_nhead=2),
    "master-ref": dict(d_model=8, t_nhead=2, s_nhead=2, beta=10.0),   # MASTER, its authors' recipe
    # anchors: a small booster that early-stops within seconds on the tiny store
    "lgbm": dict(num_leaves=8, max_depth=3, lambda_l1=0.0, lambda_l2=1.0, num_boost_round=100,
                 early_stopping_rounds=10, num_threads=1),
}
NAMES = sorted(MODELS)
# Trained by gradients (pipeline.train); the anchors are fitted in closed form / by boosting.
NEURAL = [n for n in NAMES if n not in ANCHORS]


def build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    model = create_model(name, d_feat=D, d_market=M, **{**SMALL.get(name, {}), **extra})
    if name in ANCHORS:
        _fit_tiny(model, seed)
    return model


_TINY_STORE = []


def _fit_tiny(model, seed: int) -> None:
    """Fit an anchor on a tiny synthetic store with D features (made once per session)."""
    import tempfile
    from pathlib import Path

    from pipeline.anchors import fit_anchor
    from pipeline.train import StackCell
    from tests.synthetic_store import make_store

    if not _TINY_STORE:
        _TINY_STORE.append(make_store(Path(tempfile.mkdtemp()) / "tiny", d=D, m=M))
    store = _TINY_STORE[0]
    # seed moves the train days: two seeds give two fits (the ridge itself has no randomness)
    days = store.segment_days("train")[seed % 5:]
    fit_anchor(model, StackCell("all", seed, None, None, train_days=days), store)


def batch(seed: int = 0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, n, T, D, generator=g)
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[1, n - 2:] = False                               # day 1 has two padded slots
    market = torch.randn(B, T, M, generator=g)
    return x, mask, market


def test_registry_names():
    assert set(MODELS) >= {"miga-conv", "miga-rec", "miga-attn", "tcn", "lstm", "transformer",
                           "moderntcn", "mamba", "master", "master-ref", "lgbm", "linear"}
    assert set(ANCHORS) == {"lgbm", "linear"} and all(build(n).anchor for n in ANCHORS)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_finite(name):
    model = build(name)
    x, mask, market = batch()
    for train in (True, False):
        model.train(train)
        scores, aux = model(x, mask, market if model.needs_market else None)
        assert scores.shape == (B, N)
        assert aux.dim() == 0
        assert torch.isfinite(scores).all() and torch.isfinite(aux)
    assert isinstance(type(model).needs_market, bool)


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_real_scores(name):
    model = build(name).eval()
    x, mask, market = batch()
    with torch.no_grad():
        ref, ref_aux = model(x, mask, market)
        # garbage (huge values, NaN) in padded slots, and four more padded stocks per day
        x2 = torch.cat([x, torch.randn(B, 4, T, D) * 1e3], dim=1)
        x2[~torch.cat([mask, torch.zeros(B, 4, dtype=torch.bool)], 1)] = float("nan")
        mask2 = torch.cat([mask, torch.zeros(B, 4, dtype=torch.bool)], dim=1)
        out, aux = model(x2, mask2, market)
    torch.testing.assert_close(out[:, :N][mask], ref[mask])
    torch.testing.assert_close(aux, ref_aux)


@pytest.mark.parametrize("name", NEURAL)       # anchors have no gradient training
def test_every_parameter_gets_a_gradient(name):
    model = build(name).train()
    seen = {n: False for n, p in model.named_parameters()}
    for step in range(4):                                  # top-k routing varies with the input
        x, mask, market = batch(seed=step)
        scores, aux = model(x, mask, market)
        y = torch.randn(B, N, generator=torch.Generator().manual_seed(100 + step))
        loss = ((scores - y)[mask] ** 2).mean() + aux
        model.zero_grad()
        loss.backward()
        for n, p in model.named_parameters():
            seen[n] |= p.grad is not None and bool(p.grad.abs().sum() > 0)
    assert [n for n, ok in seen.items() if not ok] == []


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    x, mask, market = batch()
    outs = []
    for _ in range(2):
        model = build(name, seed=3).train()
        torch.manual_seed(7)                               # same dropout draws
        outs.append(model(x, mask, market)[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    other = build(name, seed=4).eval()(x, mask, market)[0]
    assert not torch.allclose(other, build(name, seed=3).eval()(x, mask, market)[0])


@pytest.mark.parametrize("name", NEURAL)       # anchors have no gradient training
def test_learns_a_planted_signal(name):
    """A few dozen Adam steps on score = feature 0 of the last day must reach a clear IC."""
    model = build(name, **_no_dropout(name)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        x = torch.randn(2, 32, T, D, generator=g)
        mask = torch.ones(2, 32, dtype=torch.bool)
        market = torch.randn(2, T, M, generator=g)
        y = x[:, :, -1, 0]
        scores, aux = model(x, mask, market)
        loss = ((scores - y) ** 2).mean() + 2e-3 * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.randn(1, 200, T, D, generator=g)
    with torch.no_grad():
        scores, _ = model(x, torch.ones(1, 200, dtype=torch.bool), torch.randn(1, T, M, generator=g))
    ic = torch.corrcoef(torch.stack([scores[0], x[0, :, -1, 0]]))[0, 1]
    assert ic > 0.5, f"{name} IC {ic:.2f}"


def _no_dropout(name: str) -> dict:
    fields = {f for f in model_config(name).__dataclass_fields__}
    return {f: 0.0 for f in fields if "dropout" in f}


def test_unknown_override_and_name_are_clear_errors():
    with pytest.raises(ValueError, match="unknown setting.*hiden.*valid:.*hidden"):
        create_model("tcn", d_feat=D, hiden=8)
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        create_model("gpt", d_feat=D)
    with pytest.raises(ModelConfigError):
        MODELS["lstm"](D, bogus=1)
    with pytest.raises(ValueError, match="'hidden' must be int"):
        model_config("tcn", hidden="64")
    with pytest.raises(ValueError, match="'group_attention' must be bool"):
        model_config("miga-conv", group_attention=1)
    assert model_config("tcn", dropout=0).dropout == 0      # an int is a fine float


def test_documented_defaults():
    miga = model_config("miga-conv")
    assert (miga.groups, miga.experts, miga.top_k, miga.group_attention) == (7, 9, 8, True)
    tcn = model_config("tcn")
    assert (tcn.hidden, tcn.num_layers, tcn.kernel_size) == (32, 5, 7)
    # each MIGA router inherits its baseline's encoder defaults
    assert model_config("miga-rec").hidden == model_config("lstm").hidden == 64
    assert model_config("miga-attn").nhead == model_config("transformer").nhead == 2
    assert model_config("master").d_model == 256
    assert model_config("miga-conv", top_k=4).top_k == 4


@pytest.mark.parametrize("name", NAMES)
def test_full_width_features_default_config(name):
    """Paper-size D (158) at the default config, a handful of stocks."""
    torch.manual_seed(0)
    model = create_model(name, d_feat=158, d_market=4).eval()
    x = torch.randn(1, 3, T, 158)
    with torch.no_grad():
        scores, aux = model(x, torch.ones(1, 3, dtype=torch.bool), torch.randn(1, T, 4))
    assert scores.shape == (1, 3) and torch.isfinite(scores).all() and math.isfinite(float(aux))


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip(name, tmp_path):
    """model_state -> torch.save -> torch.load(weights_only=True) -> model_from_state scores the
    same (what a logged run's model and `pipeline.champion.load_run_model` rely on)."""
    model = build(name).eval()
    overrides = SMALL.get(name, {})
    torch.save(model_state(model, name, D, M, overrides, T), tmp_path / "state.pt")
    again = model_from_state(torch.load(tmp_path / "state.pt", weights_only=True))
    x, mask, market = batch()
    with torch.no_grad():
        torch.testing.assert_close(again(x, mask, market)[0], model(x, mask, market)[0],
                                   rtol=0, atol=0)


@pytest.mark.parametrize("name", NEURAL)       # anchors have no gradient training
def test_batch_without_members_is_harmless(name):
    model = build(name).train()
    x, _, market = batch()
    scores, aux = model(x, torch.zeros(B, N, dtype=torch.bool), market)
    (scores.sum() + aux).backward()
    assert scores.shape == (B, N) and torch.isfinite(scores).all() and float(aux.detach()) == 0.0


def test_moderntcn_folds_an_old_stem_bias_into_the_running_mean():
    """States saved when the stem conv had a bias (now dropped: the norm after it cancels it)
    load with the same eval-mode scores."""
    from torch import nn

    old = build("moderntcn", seed=1)
    conv = old.encoder.stem[0]
    old.encoder.stem[0] = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                    stride=conv.stride)         # the earlier architecture
    old.encoder._load_state_dict_pre_hooks.clear()
    state = old.state_dict()
    state["encoder.stem.1.running_mean"] = torch.randn_like(state["encoder.stem.1.running_mean"])
    state["encoder.stem.1.running_var"] = torch.rand_like(state["encoder.stem.1.running_var"]) + 0.5
    old.load_state_dict(state)
    new = build("moderntcn", seed=2)
    new.load_state_dict(state)
    x, mask, market = batch()
    ref, got = old.eval()(x, mask, market)[0], new.eval()(x, mask, market)[0]
    assert state["encoder.stem.0.bias"].abs().max() > 0.01
    assert torch.allclose(ref, got, atol=1e-5)


def test_master_ref_is_master_with_its_authors_recipe():
    """`miga train --model master-ref`: the registry and the command line know it; it is the
    MASTER model (same class and config), trained by its own recipe (tests/code/test_config.py)."""
    import contextlib
    import io

    from flows.cli import build_parser

    assert type(build("master-ref")) is type(build("master"))
    assert model_config("master-ref") == model_config("master")
    assert build_parser().parse_args(["train", "--model", "master-ref"]).model == "master-ref"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "master-ref" in out.getvalue()
