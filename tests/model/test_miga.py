"""MIGA specifics: top-k routing (eq. 4), inner-group attention (eqs. 6-8), router loss (eq. 11)."""
from __future__ import annotations

import pytest
import torch

from pipeline.models import create_model
from pipeline.models.miga import GroupAttention, route_topk, router_loss

B, N, T, D = 2, 5, 5, 6


G, E, K = 3, 4, 5
SMALL = dict(hidden=8, num_layers=1, groups=G, experts=E, top_k=K, d_expert=8, attn_heads=2)


def build(name="miga-rec", **extra):
    torch.manual_seed(0)
    return create_model(name, d_feat=D, **{**SMALL, **extra}).eval()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, -1] = False
    return torch.randn(B, N, T, D, generator=g), mask


@pytest.mark.parametrize("name", ["miga-conv", "miga-rec", "miga-attn"])
def test_routing_weights_k_nonzero_summing_to_one(name):
    model = build(name, **({"kernel_size": 3} if name == "miga-conv" else {}))
    x, mask = batch()
    model(x, mask)
    w = model.last_routing
    assert w.shape == (B, N, G, E) and not w.requires_grad
    real = w[mask].reshape(-1, G * E)
    assert ((real > 0).sum(-1) == K).all()
    torch.testing.assert_close(real.sum(-1), torch.ones(len(real)))
    assert (w[~mask] == 0).all()


def test_route_topk_is_softmax_over_the_largest_k():
    logits = torch.tensor([[3.0, -1.0, 2.0, 0.5, 1.0]])
    w = route_topk(logits, 3)
    expected = torch.zeros(1, 5)
    expected[0, [0, 2, 4]] = torch.softmax(torch.tensor([3.0, 2.0, 1.0]), 0)
    torch.testing.assert_close(w, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA autocast needs a GPU")
@pytest.mark.parametrize("name", ["miga-conv", "miga-rec", "miga-attn"])
def test_forward_and_backward_under_cuda_bf16_autocast(name):
    """The trainer's bf16 path: under CUDA autocast softmax runs in float32 while the router's
    logits are bfloat16 (route_topk once failed there: scatter of float32 into bfloat16)."""
    model = build(name).cuda().train()
    x, mask = batch()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        scores, aux = model(x.cuda(), mask.cuda())
    assert torch.isfinite(scores[mask.cuda()]).all()
    (scores[mask.cuda()].float().pow(2).mean() + aux).backward()
    w = model.last_routing[mask.cuda()].reshape(-1, G * E).float()
    torch.testing.assert_close(w.sum(-1), torch.ones(len(w), device="cuda"), atol=1e-2, rtol=0)


def test_score_is_routing_weighted_sum_of_expert_predictions():
    model = build()
    x, mask = batch()
    scores, _ = model(x, mask)
    h = model.encoder(x[mask])
    _, w, preds = model.heads(h)
    torch.testing.assert_close(scores[mask], (w * preds).sum((-1, -2)))


@pytest.mark.parametrize("residual", [True, False])
def test_group_attention_mixes_experts_within_a_group_only(residual):
    torch.manual_seed(0)
    attn = GroupAttention(8, heads=2, residual=residual).eval()
    o = torch.randn(3, G, E, 8)
    ref = attn(o)
    o2 = o.clone()
    o2[:, 1, 2] += torch.randn(3, 8)                       # change expert 2 of group 1
    out = attn(o2)
    others = [e for e in range(E) if e != 2]
    # every other expert of group 1 sees the change ...
    assert ((out[:, 1, others] - ref[:, 1, others]).abs().amax(-1) > 1e-4).all()
    # ... and no expert of another group does
    torch.testing.assert_close(out[:, [0, 2]], ref[:, [0, 2]], rtol=0, atol=0)


def test_group_attention_is_permutation_equivariant():
    torch.manual_seed(0)
    attn = GroupAttention(8, heads=4).eval()
    o = torch.randn(3, G, E, 8)
    perm = torch.randperm(E)
    while (perm == torch.arange(E)).all():
        perm = torch.randperm(E)
    torch.testing.assert_close(attn(o[:, :, perm]), attn(o)[:, :, perm])


@pytest.mark.parametrize("attention", [True, False])
def test_attention_switch_controls_sharing_between_experts(attention):
    """Perturbing one expert's weights moves its group-mates' predictions only with attention on."""
    model = build(group_attention=attention)
    x, mask = batch()
    with torch.no_grad():
        h = model.encoder(x[mask])
        _, _, ref = model.heads(h)
        model.expert_w[1, 2] += 0.5
        _, _, out = model.heads(h)
    changed = (out - ref).abs().amax(0) > 1e-5           # (G, E)
    expected = torch.zeros(G, E, dtype=torch.bool)
    expected[1, 2] = True
    if attention:
        expected[1] = True
    assert torch.equal(changed, expected)
    assert (model.group_attn is not None) == attention


def test_experts_are_one_batched_einsum():
    model = build()
    h = torch.randn(4, model.encoder.out_dim)
    o = model.experts(h)
    assert o.shape == (4, G, E, 8)
    g, e = 2, 1
    torch.testing.assert_close(o[:, g, e], h @ model.expert_w[g, e] + model.expert_b[g, e])


def test_router_loss_is_masked_squared_deviation_from_mean():
    model = build()
    x, mask = batch()
    _, aux = model(x, mask)
    logits = model.router(model.encoder(x[mask]))        # (n_real, G*E)
    expected = ((logits - logits.mean(-1, keepdim=True)) ** 2).sum(-1).mean()
    torch.testing.assert_close(aux, expected)
    assert float(router_loss(torch.ones(3, G * E))) == 0.0   # equal logits -> no penalty


def test_router_loss_gradient_reaches_router_and_encoder():
    model = build().train()
    x, mask = batch()
    _, aux = model(x, mask)
    aux.backward()
    assert model.router.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert model.expert_w.grad is None                    # the router loss does not touch experts


def test_group_expert_k_settings_for_the_ablation():
    model = build(groups=2, experts=3, top_k=6, attn_heads=2)
    x, mask = batch()
    model(x, mask)
    assert model.last_routing.shape == (B, N, 2, 3)
    assert (model.last_routing[mask] > 0).all()           # k = G*E: every expert used
    with pytest.raises(ValueError, match="top_k"):
        build(groups=2, experts=3, top_k=7)
