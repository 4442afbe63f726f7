"""Adam and gradient clipping for a stack: K independent optimizers as a few (K, P) ops.

Adam is elementwise, so one Adam over the stacked parameters is K Adams; what must stay per
cell is made so explicitly: the learning rate, weight decay and clip bound are (K,) tensors, the
step count is per cell, and a cell that is not `active` in a step (its epoch has no day left,
or it stopped early) is left exactly as it was: parameters, moments and step count. The update
follows torch.optim.Adam (L2 weight decay added to the gradient; bias corrections) and
`clip_grad_norm_` (coefficient max_norm / (norm + 1e-6), at most 1) or `clip_grad_value_`, per
cell. Everything is tensor ops on the device: nothing here reads a value back to the host, so a
step can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch


class StackAdam:
    def __init__(self, flat: torch.Tensor, lr: torch.Tensor, weight_decay: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        K = flat.shape[0]
        self.flat, self.betas, self.eps = flat, betas, eps
        self.lr = lr.reshape(K, 1).to(flat)
        self.wd = weight_decay.reshape(K, 1).to(flat)
        self.m = torch.zeros_like(flat, requires_grad=False)
        self.v = torch.zeros_like(flat, requires_grad=False)
        self.step_count = torch.zeros(K, 1, dtype=flat.dtype, device=flat.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        """grad (K, P); active (K,) bool."""
        b1, b2 = self.betas
        a = active.reshape(-1, 1)
        p = self.flat
        g = grad + self.wd * p
        self.step_count.add_(a.to(p.dtype))
        self.m.copy_(torch.where(a, b1 * self.m + (1 - b1) * g, self.m))
        self.v.copy_(torch.where(a, b2 * self.v + (1 - b2) * g * g, self.v))
        t = self.step_count.clamp(min=1.0)
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        update = (self.lr / bc1) * self.m / (self.v.sqrt() / bc2.sqrt() + self.eps)
        p.copy_(torch.where(a, p - update, p))

    def cell_state(self, k: int) -> dict[str, torch.Tensor]:
        return {"adam_m": self.m[k].cpu().clone(), "adam_v": self.v[k].cpu().clone(),
                "adam_step": self.step_count[k].cpu().clone()}

    @torch.no_grad()
    def load_cell(self, k: int, state: dict[str, torch.Tensor]) -> None:
        self.m[k].copy_(state["adam_m"].to(self.m))
        self.v[k].copy_(state["adam_v"].to(self.v))
        self.step_count[k].copy_(state["adam_step"].to(self.step_count))


def clip_per_cell(grad: torch.Tensor, max_norm: torch.Tensor, mode: str = "norm") -> torch.Tensor:
    """grad (K, P) clipped per cell at max_norm[k] (0 = no clipping): mode "norm" scales the
    row to norm <= max_norm[k] (clip_grad_norm_); "value" clamps every entry to
    [-max_norm[k], max_norm[k]] (clip_grad_value_, MASTER's reference)."""
    if mode == "value":
        c = max_norm[:, None]                                          # (K, 1)
        return torch.where(c > 0, torch.clamp(grad, -c, c), grad)
    if mode != "norm":
        raise ValueError(f"clip mode must be 'norm' or 'value', got {mode!r}")
    norm = grad.pow(2).sum(1).sqrt()                                   # (K,)
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    return grad * coef[:, None]
