"""Mamba baseline (Gu & Dao 2023): selective state-space blocks in plain PyTorch.

Follows johnma2006/mamba-minimal (pre-norm residual blocks, RMSNorm, in_proj -> causal depthwise
conv -> SiLU -> selective scan, gated by SiLU(res) -> out_proj) with the official dt/A init.
The scan is sequential over the T = 5 days; no mamba-ssm CUDA kernels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import PerStockModel


@dataclass
class MambaConfig:
    # d_state=16, expand=2, d_conv=4, dt_rank=ceil(d_model/16): mamba-minimal ModelArgs defaults.
    # hidden=64 and 2 layers: the MIGA paper gives none; matched to the Qlib LSTM/Transformer.
    hidden: int = 64          # d_model
    num_layers: int = 2
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int = 0          # 0 = ceil(hidden / 16)
    dt_min: float = 1e-3      # official init range of the step size
    dt_max: float = 0.1


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaBlock(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        d, di, ns = cfg.hidden, cfg.expand * cfg.hidden, cfg.d_state
        self.dt_rank = cfg.dt_rank or math.ceil(d / 16)
        self.d_state = ns
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * ns, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di)
        # Official init: dt = softplus(bias) log-uniform in [dt_min, dt_max]; A = -(1..N).
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(di) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, ns + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, T, d) -> (n, T, d)
        T = x.shape[1]
        u, res = self.in_proj(x).chunk(2, dim=-1)          # (n, T, di) each
        u = F.silu(self.conv(u.transpose(1, 2))[:, :, :T].transpose(1, 2))  # causal depthwise conv
        dt, Bm, Cm = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))                  # (n, T, di)
        A = -torch.exp(self.A_log)                         # (di, N)
        state = u.new_zeros(u.shape[0], u.shape[2], self.d_state)  # (n, di, N)
        ys = []
        for t in range(T):                                 # selective scan, ZOH discretisation
            dA = torch.exp(dt[:, t, :, None] * A)          # (n, di, N)
            dBu = (dt[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
            state = dA * state + dBu
            ys.append(torch.bmm(state, Cm[:, t, :, None]).squeeze(-1))  # (n, di)
        y = torch.stack(ys, dim=1) + u * self.D            # (n, T, di)
        return self.out_proj(y * F.silu(res))


class MambaEncoder(nn.Module):
    """(n, T, D) -> (n, hidden): embedding, pre-norm residual Mamba blocks, final RMSNorm, last day."""

    def __init__(self, cfg: MambaConfig, d_feat: int):
        super().__init__()
        self.embed = nn.Linear(d_feat, cfg.hidden)
        self.blocks = nn.ModuleList([MambaBlock(cfg) for _ in range(cfg.num_layers)])
        self.norms = nn.ModuleList([RMSNorm(cfg.hidden) for _ in range(cfg.num_layers)])
        self.norm_f = RMSNorm(cfg.hidden)
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        for norm, block in zip(self.norms, self.blocks):
            z = z + block(norm(z))
        return self.norm_f(z)[:, -1]


class Mamba(PerStockModel):
    encoder_cls = MambaEncoder
