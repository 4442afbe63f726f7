"""Training losses over a batch of B days, masked and vectorised (no Python loop over days).

`valid = mask & isfinite(y)`: padding, non-members and stocks without a label take no part.
"""
from __future__ import annotations

import torch


def daily_ic(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
             eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson IC per day between scores and labels over that day's valid stocks.

    scores, y: (B, N) float; mask: (B, N) bool. Returns (ic (B,), day_ok (B,) bool), where a
    day is ok when it has at least two valid stocks; its ic is 0 otherwise.
    """
    valid = mask & torch.isfinite(y)                      # (B, N)
    w = valid.to(scores.dtype)
    s = torch.where(valid, scores, torch.zeros_like(scores))
    t = torch.where(valid, y.to(scores.dtype), torch.zeros_like(scores))
    n = w.sum(dim=1)                                      # (B,)
    n_safe = n.clamp(min=1.0)
    s = (s - (s.sum(1) / n_safe)[:, None]) * w            # demeaned over valid stocks
    t = (t - (t.sum(1) / n_safe)[:, None]) * w
    cov = (s * t).sum(1)
    var = (s * s).sum(1) * (t * t).sum(1)
    ic = cov / torch.sqrt(var + eps)
    ok = n >= 2
    return torch.where(ok, ic, torch.zeros_like(ic)), ok


def ic_loss(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 10: minus the mean daily IC over the batch's days. Returns (loss, mean IC detached)."""
    ic, ok = daily_ic(scores, y, mask)
    k = ok.sum().clamp(min=1)
    mean_ic = ic.sum() / k
    return -mean_ic, mean_ic.detach()


def mse_loss(scores: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over valid stocks (for baselines whose papers use it), plus the mean IC."""
    valid = mask & torch.isfinite(y)
    diff = torch.where(valid, scores - torch.nan_to_num(y.to(scores.dtype)), torch.zeros_like(scores))
    loss = (diff * diff).sum() / valid.sum().clamp(min=1)
    ic, ok = daily_ic(scores.detach(), y, mask)
    return loss, (ic.sum() / ok.sum().clamp(min=1)).detach()


LOSSES = {"ic": ic_loss, "mse": mse_loss}


def total_loss(kind: str, scores, y, mask, aux, alpha: float, beta: float):
    """Eq. 12: beta x main loss + alpha x the model's auxiliary (router) loss.

    Returns (loss, mean daily IC of the batch, detached).
    """
    main, ic = _loss(kind)(scores.float(), y, mask)
    return beta * main + alpha * aux.float(), ic


def cell_losses(kind: str, scores, y, mask, aux, alpha, beta):
    """Eq. 12 for each cell of a stack (pipeline.engine): scores, y, mask (K, B, N); aux, alpha,
    beta (K,). Returns (loss (K,), mean daily IC (K,), detached); cells never mix."""
    main, ic = torch.func.vmap(_loss(kind))(scores.float(), y, mask)
    return beta * main + alpha * aux.float(), ic


def _loss(kind: str):
    if kind not in LOSSES:
        raise ValueError(f"train.loss must be one of {sorted(LOSSES)}, got {kind!r}")
    return LOSSES[kind]
