"""Linear anchor: a ridge regression on the last day's features (no neural network).

Not trained by the torch loop: `pipeline.anchors.fit_anchor` fits it in closed form on the
train segment's per-day z-scored labels and sets the weights of its `nn.Linear(D, 1)`, so it
scores, saves and loads like every other model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LinearConfig:
    # Ridge penalties tried, each as a multiple of the training rows n (alpha = a * n: the
    # same shrinkage on any stock set or segment length, the features being robust z-scores).
    # The one with the best mean daily validation IC is kept, as the neural models keep their
    # best epoch by validation IC. Our choice (no reference recipe): 0 (OLS) to strong shrinkage.
    alphas: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1, 1.0)


class Linear(nn.Module):
    """score = w . x[t] + b on the window's last day t (the store's normalised features)."""

    needs_market = False
    anchor = True              # fitted by pipeline.anchors, not by pipeline.train

    def __init__(self, cfg: LinearConfig, d_feat: int, d_market: int = 0):
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(d_feat, 1)

    def set_weights(self, weight, bias: float) -> None:
        """Load a fitted ridge: weight (D,), bias scalar."""
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(1, -1))
            self.linear.bias.fill_(float(bias))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, market=None):
        scores = self.linear(x[:, :, -1, :]).squeeze(-1)                 # (B, N, D) -> (B, N)
        scores = torch.where(mask, scores, torch.zeros_like(scores))     # padding may hold NaN
        return scores, scores.new_zeros(())
