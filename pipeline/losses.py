"""Training losses over a batch of B days, masked and vectorised (no Python loop over days).

`valid = mask & isfinite(y)`: padding, non-members and stocks without a label take no part.
A training recipe (`[train]`, `[models.<name>.train]`) may drop each day's extreme labels
(`drop_extreme`) and transform the labels the loss sees (`transform_labels`: Qlib's
CSZScoreNorm or CSRankNorm); both act on the last (stock) axis of any (..., N) tensor.
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
CSRANK_SCALE = 3.46      # Qlib CSRankNorm: (rank pct - 0.5) * 3.46, about unit std (sqrt(12))


def drop_extreme(y: torch.Tensor, mask: torch.Tensor, frac: float) -> torch.Tensor:
    """`mask` without each day's floor(frac * n) lowest and highest labelled stocks (n: the day's
    labelled members), as MASTER's reference `drop_extreme` (base_model.py) does in training.

    y (..., N) float, mask (..., N) bool -> (..., N) bool. Ties are broken by stock position.
    """
    if frac <= 0:
        return mask
    valid = mask & torch.isfinite(y)
    key = torch.where(valid, y, torch.full_like(y, float("inf")))     # unlabelled sort last
    rank = key.argsort(dim=-1, stable=True).argsort(dim=-1)            # 0-based, labelled first
    n = valid.sum(-1, keepdim=True)
    # float64: int(0.025 * N) as the reference; 0.025 * 40 in float32 is just below 1
    k = torch.floor(n.double() * frac).long()
    extreme = valid & ((rank < k) | (rank >= n - k))
    return mask & ~extreme


def transform_labels(y: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The labels a training loss sees, per day over the valid stocks (mask & finite label):
    "none"; "cszscore" (Qlib CSZScoreNorm: (y - mean) / std, sample std); "csrank" (Qlib
    CSRankNorm: (rank / n - 0.5) * 3.46, ties averaged as pandas' rank(pct=True)).

    y (..., N), mask (..., N) bool -> (..., N) float, NaN where not valid (and for a z-score of
    a day whose labels are all equal).
    """
    if kind == "none":
        return y
    valid = mask & torch.isfinite(y)
    nan = torch.full_like(y, float("nan"))
    n = valid.sum(-1, keepdim=True).to(y.dtype)
    if kind == "cszscore":
        w = valid.to(y.dtype)
        t = torch.where(valid, y, torch.zeros_like(y))
        mean = t.sum(-1, keepdim=True) / n.clamp(min=1)
        var = (((t - mean) * w) ** 2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
        return torch.where(valid & (var > 0), (y - mean) / var.sqrt(), nan)
    if kind == "csrank":
        key = torch.where(valid, y, torch.full_like(y, float("inf")))
        ordered = key.sort(-1).values
        below = torch.searchsorted(ordered, key)                       # labels < y
        upto = torch.searchsorted(ordered, key, right=True)            # labels <= y
        pct = (below + upto + 1).to(y.dtype) / 2 / n.clamp(min=1)     # mean 1-based rank / n
        return torch.where(valid, (pct - 0.5) * CSRANK_SCALE, nan)
    raise ValueError(f"label_transform must be one of none, cszscore, csrank; got {kind!r}")


def total_loss(kind: str, scores, y, mask, aux, alpha: float, beta: float,
               label_transform: str = "none", drop: float = 0.0):
    """Eq. 12: beta x main loss + alpha x the model's auxiliary (router) loss, on the labels of
    the training recipe (`drop` extremes per tail, then `label_transform`).

    Returns (loss, mean daily IC of the batch against the labels the loss saw, detached).
    """
    mask = drop_extreme(y, mask, drop)
    y = transform_labels(y, mask, label_transform)
    main, ic = _loss(kind)(scores.float(), y, mask)
    return beta * main + alpha * aux.float(), ic


def cell_losses(kind: str, scores, y, mask, aux, alpha, beta, label_transform: str = "none",
                drop: float = 0.0):
    """Eq. 12 for each cell of a stack (pipeline.engine): scores, y, mask (K, B, N); aux, alpha,
    beta (K,); the recipe's label handling as in `total_loss` (shared by a stack's cells).
    Returns (loss (K,), mean daily IC (K,), detached); cells never mix."""
    mask = drop_extreme(y, mask, drop)
    y = transform_labels(y, mask, label_transform)
    main, ic = torch.func.vmap(_loss(kind))(scores.float(), y, mask)
    return beta * main + alpha * aux.float(), ic


def _loss(kind: str):
    if kind not in LOSSES:
        raise ValueError(f"train.loss must be one of {sorted(LOSSES)}, got {kind!r}")
    return LOSSES[kind]
