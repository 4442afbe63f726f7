"""Shared building blocks: per-stock execution, positional encoding, causal convolutions.

Every model sees a batch of days `x (B, N, T, D)` with a member mask `(B, N)`. Per-stock
encoders run on the real stocks only (`PerStockModel`), so padding can hold anything (even
NaN) without touching real stocks' scores, batch-norm statistics or shared-weight gradients.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gather_real(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N, T, D), (B, N) bool -> (n_real, T, D): the member stocks, flattened over days."""
    B, N, T, D = x.shape
    return x.reshape(B * N, T, D)[mask.reshape(-1)]


def scatter_real(values: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """(n_real, ...) -> (B, N, ...): put per-stock values back, `fill` at padded slots."""
    B, N = mask.shape
    out = values.new_full((B * N, *values.shape[1:]), fill)
    m = mask.reshape(-1)
    # masked_scatter wants the mask broadcast to `out`'s shape; rows are taken in order.
    m = m.view(-1, *([1] * (values.dim() - 1))).expand_as(out)
    return out.masked_scatter(m, values).view(B, N, *values.shape[1:])


class PerStockModel(nn.Module):
    """A model that scores each stock from its own (T, D) window: encoder + linear head.

    Subclasses name their encoder class: `encoder_cls(cfg, d_feat)`, (n, T, D) -> (n, H) with
    an `out_dim` attribute; the head maps H -> 1.
    """

    needs_market: bool = False
    encoder_cls: type

    def __init__(self, cfg, d_feat: int, d_market: int = 0):
        super().__init__()
        self.cfg = cfg
        self.encoder = self.encoder_cls(cfg, d_feat)
        self.head = nn.Linear(self.encoder.out_dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                market: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(gather_real(x, mask))            # (n, H)
        s = self.head(h).squeeze(-1)                      # (n,)
        return scatter_real(s, mask), x.new_zeros(())     # (B, N), aux = 0


class PositionalEncoding(nn.Module):
    """Sinusoidal position encoding added to (n, T, d) (Vaswani et al.; Qlib, MASTER)."""

    def __init__(self, d_model: int, max_len: int = 256):
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]


class CausalConv1d(nn.Conv1d):
    """Dilated causal convolution on (n, C, L) that skips taps that can only see padding.

    Qlib's TCN pads (k-1)*d on both sides and chops the right end. With T = 5 and dilation up
    to 16 most of that work multiplies zeros; tap j looks back (k-1-j)*d steps, so taps with a
    look-back >= L always read padding. Dropping them gives the same output for a fraction of the
    work (figures in benchmarks/bench_models.py).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, d, L = self.kernel_size[0], self.dilation[0], x.shape[-1]
        k_eff = min(k, (L - 1) // d + 1)
        w = self.weight[:, :, k - k_eff:]                 # (C_out, C_in, k_eff): the live taps
        return F.conv1d(F.pad(x, ((k_eff - 1) * d, 0)), w, self.bias, dilation=d)


class TemporalBlock(nn.Module):
    """Two causal convs + ReLU + dropout with a residual (Bai et al. 2018 TCN, as in Qlib)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = CausalConv1d(c_in, c_out, kernel_size, dilation)
        self.conv2 = CausalConv1d(c_out, c_out, kernel_size, dilation)
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        for conv in (self.conv1, self.conv2, self.downsample):
            if conv is not None:
                nn.init.normal_(conv.weight, 0.0, 0.01)   # Qlib/locuslab init

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, C_in, L) -> (n, C_out, L)
        out = self.drop(F.relu(self.conv1(x)))
        out = self.drop(F.relu(self.conv2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)
