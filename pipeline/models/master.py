"""MASTER baseline (Li et al., AAAI 2024; reference SJTU-DMTai/MASTER master.py).

market-guided feature gate -> linear embedding + positions -> intra-stock attention over T
-> inter-stock attention across the day's members (padding masked) -> temporal attention
pooling -> linear decoder. Deviations from the reference (all shape-only): batched over B days
with a member mask; attention written out (`layers.attention`) so it runs under the engine's
vmap, with keyed dropout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.layers import KeyedDropout, PositionalEncoding, attention


@dataclass
class MASTERConfig:
    # Reference main.py: d_model=256, t_nhead=4, s_nhead=2, dropout=0.5 (both), beta=5 (csi800;
    # 10 for csi300). The gate reads the market features of the window's last day.
    d_model: int = 256
    t_nhead: int = 4
    s_nhead: int = 2
    t_dropout: float = 0.5
    s_dropout: float = 0.5
    beta: float = 5.0         # gate softmax temperature


class _AttnBlock(nn.Module):
    """The reference's TAttention/SAttention: LN -> MHA (no qkv bias) -> +LN'd input -> LN -> +FFN.

    The residual adds the *normalised* input, as in the reference. `scale=None` is 1/sqrt(head
    size) (SAttention); TAttention uses no scaling (scale=1).
    """

    def __init__(self, d: int, heads: int, dropout: float, scale: float | None, stock_dim: int):
        super().__init__()
        # stock_dim: the stock axis of (S, L, d) (0 for intra-stock, 1 for inter-stock), which
        # keys the dropout masks independently of the padding.
        self.heads, self.dropout, self.scale, self.stock_dim = heads, dropout, scale, stock_dim
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), KeyedDropout(dropout, stock_dim),
                                 nn.Linear(d, d), KeyedDropout(dropout, stock_dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (S, L, d); key_mask (S, L) bool, True = may be attended to
        S, L, d = x.shape
        x = self.norm1(x)
        q, k, v = self.qkv(x).view(S, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # attention weights (S, h, L, L): the stock axis is S (intra) or the query axis L (inter)
        att = attention(q, k, v, key_mask, self.scale, self.dropout, self.training,
                        stock_dim=0 if self.stock_dim == 0 else (2, 3))
        xt = self.norm2(x + att.transpose(1, 2).reshape(S, L, d))
        return xt + self.ffn(xt)


class MASTER(nn.Module):
    needs_market = True

    def __init__(self, cfg: MASTERConfig, d_feat: int, d_market: int = 0):
        super().__init__()
        if cfg.d_model % cfg.t_nhead or cfg.d_model % cfg.s_nhead:
            raise ValueError(f"d_model={cfg.d_model} must be divisible by t_nhead and s_nhead")
        self.cfg, self.d_feat, self.d_market = cfg, d_feat, d_market
        # Gate(m) = D * softmax((W m + b) / beta). With no market features (d_market = 0, or market
        # None at call time) the gate sees zeros: D * softmax(b / beta), a learned feature scaling.
        self.gate = nn.Linear(d_market, d_feat, bias=False) if d_market else None
        self.gate_bias = nn.Parameter(torch.zeros(d_feat))
        self.embed = nn.Linear(d_feat, cfg.d_model)
        self.pos = PositionalEncoding(cfg.d_model)
        self.intra = _AttnBlock(cfg.d_model, cfg.t_nhead, cfg.t_dropout, scale=1.0, stock_dim=0)
        self.inter = _AttnBlock(cfg.d_model, cfg.s_nhead, cfg.s_dropout, scale=None, stock_dim=1)
        self.pool = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.decoder = nn.Linear(cfg.d_model, 1)

    def feature_gate(self, market: torch.Tensor | None, B: int) -> torch.Tensor:
        logits = self.gate_bias.expand(B, -1)
        if self.gate is not None and market is not None:
            logits = logits + self.gate(market[:, -1])    # market (B, T, M): last day
        return self.d_feat * torch.softmax(logits / self.cfg.beta, dim=-1)  # (B, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                market: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, T, D = x.shape
        # Zero the padding: it is attended to by nobody, but NaN * 0 would still poison sums.
        x = x.masked_fill(~mask[:, :, None, None], 0.0)
        x = x * self.feature_gate(market, B)[:, None, None, :]
        z = self.pos(self.embed(x).view(B * N, T, -1))    # (B*N, T, d)
        z = self.intra(z)                                 # attention over the T days
        d = z.shape[-1]
        z = z.view(B, N, T, d).transpose(1, 2).reshape(B * T, N, d)
        # A day with no member would mask every key (NaN); let such a day attend to all.
        keys = mask | ~mask.any(-1, keepdim=True)         # (B, N)
        z = self.inter(z, keys.repeat_interleave(T, dim=0))  # attention across stocks, per day t
        z = z.view(B, T, N, d).transpose(1, 2).reshape(B * N, T, d)
        # temporal attention, query = last day. The linear map on a 2-D view: on the 3-D tensor
        # (after the transposes above) vmap's matmul rule expands the weight to one copy per
        # stock (K x 300 x 256 x 256 floats a step in a stack).
        h = self.pool(z.reshape(B * N * T, d)).view(B * N, T, d)
        lam = torch.softmax(torch.einsum("std,sd->st", h, h[:, -1]), dim=-1)
        out = torch.einsum("st,std->sd", lam, z)          # (B*N, d)
        scores = self.decoder(out).view(B, N)
        return scores.masked_fill(~mask, 0.0), x.new_zeros(())
