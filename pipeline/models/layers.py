"""Shared building blocks: per-stock execution, keyed dropout, masked batch norm, attention,
positional encoding, causal convolutions.

Every model sees a batch of days `x (B, N, T, D)` with a member mask `(B, N)`. Shapes are
static: per-stock encoders run on every slot, padding included (zeroed first), and the mask
decides what counts, so a model can run under `torch.func.vmap` over a stack of cells
(pipeline/engine). Padding never touches real stocks' scores, batch-norm statistics
(`MaskedBatchNorm1d`) or gradients.

Randomness: `KeyedDropout` draws its mask from a counter-based hash of (cell key, call number,
element position) when the engine has set a key (`keyed`), so a cell's dropout masks are the
same whether it trains alone or in a stack of K, on CPU or GPU, and after a resume; outside
the engine (a model called directly) it is ordinary `F.dropout` on the torch RNG.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- the forward's context
@dataclass
class _Context:
    key: torch.Tensor | None = None          # () int64 in [0, 2^32): the cell's key this step
    calls: int = 0                           # dropout calls so far in this forward
    rows: list = field(default_factory=list)  # stack of (n,) bool: real rows of per-stock tensors
    layout: tuple[int, int] | None = None    # (B, N) of the model's batch: days x stock slots
    records: dict = field(default_factory=dict)  # outputs a model leaves for the engine


_CONTEXT: list[_Context] = []


@contextmanager
def keyed(key: torch.Tensor, layout: tuple[int, int] | None = None):
    """Dropout keyed on `key` ((), int64) for the forward run inside; yields the context whose
    `records` a model may fill (MIGA's routing weights). layout: the batch's (B days, N stock
    slots), so that a row of a per-stock tensor (B*N*r rows, day-major) is keyed by its (day,
    stock) and not by N, which depends on the padding."""
    ctx = _Context(key=key, layout=None if layout is None else (int(layout[0]), int(layout[1])))
    _CONTEXT.append(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.pop()


def _ctx() -> _Context | None:
    return _CONTEXT[-1] if _CONTEXT else None


@contextmanager
def real_rows(rows: torch.Tensor):
    """Declare which leading rows of the per-stock tensors inside are real stocks ((n,) bool)."""
    ctx = _ctx()
    if ctx is None:
        ctx = _Context()
        _CONTEXT.append(ctx)
        pushed = True
    else:
        pushed = False
    ctx.rows.append(rows)
    try:
        yield
    finally:
        ctx.rows.pop()
        if pushed:
            _CONTEXT.pop()


def record(name: str, value: torch.Tensor) -> bool:
    """Leave `value` for the engine (True) when one is listening, else do nothing (False)."""
    ctx = _ctx()
    if ctx is None or ctx.key is None:
        return False
    ctx.records[name] = value
    return True


_M32 = 0xFFFFFFFF


def mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) on int64 tensors holding values < 2^32: the
    products wrap modulo 2^64 and only their low 32 bits are kept."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & _M32
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & _M32
    return h ^ (h >> 16)


def _day_stock_coord(coord: torch.Tensor, length: int, layout) -> torch.Tensor:
    """Coordinates along an axis of B*N*r rows (day-major, r rows per stock) re-counted with a
    fixed stride per day, so they do not depend on N (the padded width). Other axes as they are."""
    if layout is None:
        return coord
    B, N = layout
    if B <= 1 or length % (B * N):
        return coord
    r = length // (B * N)
    stock, sub = coord // r, coord % r
    return ((stock // N) * _STRIDE + stock % N) * r + sub


_POSITION_HASHES: dict = {}


def _position_hash(shape: tuple, dims: tuple, device, layout) -> torch.Tensor:
    """mix32 of every element's position (int64, < 2^32), cached per (shape, stock axes, device,
    layout): it depends on no key, so a step pays for it once, not at every dropout call
    (hashing was most of ModernTCN's step on a CPU). A position is counted from the coordinates
    on the stock axes with a fixed stride, never their sizes."""
    cache_key = (shape, dims, str(device), layout)
    h = _POSITION_HASHES.get(cache_key)
    if h is not None:
        return h
    inner = [n for i, n in enumerate(shape) if i not in dims]
    n_inner = math.prod(inner)
    pos = torch.arange(n_inner, device=device).reshape(inner or [1])
    for d in dims:                                         # insert each stock axis in its place
        coord = _day_stock_coord(torch.arange(shape[d], device=device), shape[d], layout)
        pos = pos.unsqueeze(d)
        pos = pos + coord.view([-1 if i == d else 1 for i in range(pos.dim())]) * (
            n_inner * _STRIDE ** (dims.index(d)))
    pos = pos.reshape(shape)
    h = mix32(mix32(pos & _M32) ^ ((pos >> 32) * 0x27D4EB2F & _M32))   # both halves of pos
    if len(_POSITION_HASHES) >= 256:                       # bounded: shapes of a few models
        _POSITION_HASHES.clear()
    _POSITION_HASHES[cache_key] = h
    return h


def keyed_bits(key: torch.Tensor, salt: int, shape, stock_dims, device,
               layout: tuple[int, int] | None = None) -> torch.Tensor:
    """32 random bits (int64 in [0, 2^32)) per element of `shape`, a pure function of (key,
    salt, position): mix32(position hash ^ key hash). The position does not depend on how many
    stocks a tensor is padded to (a cell draws the same mask alone or in a stack padded to a
    larger stock set). stock_dims: the stock axes (an int or a tuple). layout: the batch's
    (B, N) (`keyed`); an axis of B*N*r rows is counted by (day, stock)."""
    shape = tuple(shape)
    dims = tuple(sorted(d % len(shape) for d in ((stock_dims,) if isinstance(stock_dims, int)
                                                 else stock_dims)))
    k = mix32((key * 0x9E3779B1 + salt * 0x85EBCA77) & _M32)
    return mix32(_position_hash(shape, dims, device, layout) ^ k)


_STRIDE = 1 << 14          # the stock coordinates' stride: positions stay distinct below 16,384 stocks


class KeyedDropout(nn.Module):
    """nn.Dropout whose mask, under the engine, is keyed (see module doc). stock_dim: the
    axis (or axes) of the input that run over stocks (0 for per-stock tensors (n, ...))."""

    def __init__(self, p: float, stock_dim: int | tuple[int, ...] = 0):
        super().__init__()
        self.p, self.stock_dim = float(p), stock_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keyed_dropout(x, self.p, self.training, self.stock_dim)


def keyed_dropout(x: torch.Tensor, p: float, training: bool,
                  stock_dim: int | tuple[int, ...] = 0) -> torch.Tensor:
    if not training or p <= 0.0:
        return x
    ctx = _ctx()
    if ctx is None or ctx.key is None:
        return F.dropout(x, p, True)
    ctx.calls += 1
    keep = keyed_bits(ctx.key, ctx.calls, x.shape, stock_dim, x.device, ctx.layout) >= int(p * 2 ** 32)
    return torch.where(keep, x / (1.0 - p), torch.zeros_like(x))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              scale: float | None = None, dropout: float = 0.0, training: bool = False,
              stock_dim: int | tuple[int, ...] = 0) -> torch.Tensor:
    """Softmax attention, q/k/v (S, h, L, dh) -> (S, h, L, dh); key_mask (S, L) bool, True = may
    be attended to. Written out (not SDPA) so it batches under vmap and its dropout is keyed;
    the sequences here are short (5 days, 9 experts) or one day's stocks."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("shld,shmd->shlm", q, k) * scale                     # (S, h, L, L)
    if key_mask is not None:
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    w = keyed_dropout(s.softmax(-1), dropout, training, stock_dim)
    return torch.einsum("shlm,shmd->shld", w, v)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (n*r, C, L) whose batch statistics count only the real stocks' rows
    (`real_rows`; n = stocks, r rows each). Same parameters and buffers as nn.BatchNorm1d, so
    saved states load either way; without a declared mask every row is real."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        ctx = _ctx()
        rows = ctx.rows[-1] if ctx is not None and ctx.rows else None
        C = x.shape[1]
        if rows is None:
            w = x.new_ones(x.shape[0])
        else:
            w = rows.to(x.dtype).repeat_interleave(x.shape[0] // rows.shape[0])   # (n*r,)
        wx = w.view(-1, *([1] * (x.dim() - 1))).expand_as(x)                  # (n*r, C, L)
        cnt = wx.sum() / C
        dims = [0] + list(range(2, x.dim()))
        mean = (x * wx).sum(dims) / cnt.clamp(min=1.0)                         # (C,)
        shape = (1, C) + (1,) * (x.dim() - 2)
        var = ((x - mean.view(shape)) ** 2 * wx).sum(dims) / cnt.clamp(min=1.0)
        if self.track_running_stats:
            # A step without a real row (a cell of a stack whose epoch has run out of days)
            # leaves the statistics as they are: momentum 0, no batch counted.
            seen = (cnt > 0).to(x.dtype)
            m = self.momentum * seen
            unbiased = var * cnt / (cnt - 1).clamp(min=1.0)
            # In place so that the engine's stacked buffers are updated as nn.BatchNorm1d's are.
            with torch.no_grad():
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
                self.num_batches_tracked.add_(seen.to(self.num_batches_tracked.dtype))
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def stock_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, N, T, D), (B, N) bool -> (B*N, T, D) with padding rows zeroed (they may hold NaN)."""
    B, N, T, D = x.shape
    return torch.where(mask[:, :, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device)
                       ).reshape(B * N, T, D)


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
        with real_rows(mask.reshape(-1)):
            h = self.encoder(stock_rows(x, mask))         # (B*N, H)
        s = self.head(h).squeeze(-1).view(mask.shape)     # (B, N)
        return s.masked_fill(~mask, 0.0), x.new_zeros(())  # aux = 0


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
        self.drop = KeyedDropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None
        for conv in (self.conv1, self.conv2, self.downsample):
            if conv is not None:
                nn.init.normal_(conv.weight, 0.0, 0.01)   # Qlib/locuslab init

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, C_in, L) -> (n, C_out, L)
        out = self.drop(F.relu(self.conv1(x)))
        out = self.drop(F.relu(self.conv2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)
