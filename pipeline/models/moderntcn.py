"""ModernTCN baseline (Luo & Wang, ICLR 2024; reference code luodhhh/ModernTCN), sized for T = 5.

Per stock: features -> M variable series -> per-variable patch stem -> blocks of
[large-kernel depthwise conv per variable and channel (+ small-kernel re-param branch), BN,
ConvFFN within each variable, ConvFFN across variables (per channel), residual] -> flatten head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import KeyedDropout, MaskedBatchNorm1d, PerStockModel


@dataclass
class ModernTCNConfig:
    # Reference classification script (SelfRegulationSCP1, a short single-stage setting):
    # dims=32, ffn_ratio=1, num_blocks=1, small_size=5, patch 1/1, dropout=0.1, class_dropout=0.1.
    # Sized for T = 5: large_size 9 = 2T-1 lets every day see every other day (ref. uses 13).
    # n_vars: our addition. The reference treats each input feature as a variable, and the
    # cross-variable ConvFFN is then D x D per channel (12M weights at D = 626); we first map
    # the D features to n_vars learned series. n_vars = 0 uses the raw features (reference).
    # RevIN is off: features are already robust-z normalised, and removing each stock's level
    # would drop the cross-sectional signal.
    n_vars: int = 32
    d_model: int = 32         # channels per variable (reference `dims`)
    ffn_ratio: int = 1
    num_blocks: int = 1
    large_size: int = 9
    small_size: int = 5
    patch_size: int = 1
    patch_stride: int = 1
    dropout: float = 0.1      # backbone dropout
    head_dropout: float = 0.1  # reference `class_dropout`
    window: int = 5           # T; the flatten head's size depends on it (must match data.window)


class DepthwiseConvBN(nn.Module):
    """Depthwise 'same'-padded conv over L, then BN: (n, K, L) -> (n, K, L), K = M*C channels.

    For a length-5 window the conv is, per channel, an L x L banded (Toeplitz) matrix built
    from the k taps; one einsum with it is the same maths as nn.Conv1d(groups=K, padding=k//2)
    and faster on CPU than the depthwise convolution kernel at these shapes, where the kernel's
    fixed cost dominates (figures in benchmarks/bench_models.py).
    """

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        bound = kernel ** -0.5                              # nn.Conv1d's default init range
        self.weight = nn.Parameter(torch.empty(channels, kernel).uniform_(-bound, bound))
        self.bn = MaskedBatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[-1]
        pos = torch.arange(L, device=x.device)
        tap = pos[None, :] - pos[:, None] + self.kernel // 2  # [out, in] -> tap index
        valid = (tap >= 0) & (tap < self.kernel)
        band = self.weight[:, tap.clamp(0, self.kernel - 1)] * valid  # (K, L_out, L_in)
        return self.bn(torch.einsum("nki,koi->nko", x, band))


class GroupedFFN(nn.Module):
    """Two grouped linear maps with GELU, one weight set per group: (b, G, c) -> (b, G, c).

    Same maths as the reference's 1x1 grouped Conv1d pair; as einsums on (b, G, c) they avoid
    the grouped-convolution kernel's overhead on a length-5 axis (figures in bench_models.py).
    """

    def __init__(self, groups: int, c: int, ratio: int, drop: float):
        super().__init__()
        b1, b2 = c ** -0.5, (c * ratio) ** -0.5            # nn.Conv1d's default init range
        self.w1 = nn.Parameter(torch.empty(groups, c, c * ratio).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.empty(groups, c * ratio).uniform_(-b1, b1))
        self.w2 = nn.Parameter(torch.empty(groups, c * ratio, c).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.empty(groups, c).uniform_(-b2, b2))
        self.drop = KeyedDropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.drop(torch.einsum("bgc,gcf->bgf", x, self.w1) + self.b1))
        return self.drop(torch.einsum("bgf,gfc->bgc", h, self.w2) + self.b2)


class ModernTCNBlock(nn.Module):
    def __init__(self, M: int, C: int, ratio: int, large: int, small: int, drop: float):
        super().__init__()
        # large kernel + small re-parameterisation branch, each with its BN (reference)
        self.large = DepthwiseConvBN(M * C, large)
        self.small = DepthwiseConvBN(M * C, small) if small else None
        self.norm = MaskedBatchNorm1d(C)
        self.ffn1 = GroupedFFN(M, C, ratio, drop)           # per variable: mixes its C channels
        self.ffn2 = GroupedFFN(C, M, ratio, drop)           # per channel: mixes the M variables

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, M, C, L = x.shape
        z = x.reshape(n, M * C, L)
        z = self.large(z) + (self.small(z) if self.small is not None else 0)
        z = self.norm(z.reshape(n * M, C, L)).reshape(n, M, C, L)
        z = z.permute(0, 3, 1, 2).reshape(n * L, M, C)      # (n*L, M, C): one row per stock-day
        z = self.ffn1(z)
        z = self.ffn2(z.transpose(1, 2)).transpose(1, 2)    # (n*L, C, M) -> back to (n*L, M, C)
        return x + z.reshape(n, L, M, C).permute(0, 2, 3, 1)


def _fold_stem_bias(module, state_dict, prefix, *args) -> None:
    """A state saved with the stem conv's bias: subtract it from the stem norm's running mean."""
    bias = state_dict.pop(prefix + "stem.0.bias", None)
    if bias is not None:
        key = prefix + "stem.1.running_mean"
        state_dict[key] = state_dict[key] - bias


class ModernTCNEncoder(nn.Module):
    """(n, T, D) -> (n, M*C*L'): flattened block output (the reference's classification head)."""

    def __init__(self, cfg: ModernTCNConfig, d_feat: int):
        super().__init__()
        self.cfg = cfg
        M, C = (cfg.n_vars or d_feat), cfg.d_model
        self.embed = nn.Linear(d_feat, M) if cfg.n_vars else None
        # The reference's stem conv has a bias; the batch norm right after it cancels a bias in
        # training, so its gradient is zero up to rounding, which Adam rescales into full-size
        # steps that only move the eval-mode running mean: the same run differed by 2e-3 in
        # validation IC between two float orders (alone or in a stack). No bias here; a saved
        # state with one loads with the bias folded into the running mean (exact in eval).
        self.stem = nn.Sequential(nn.Conv1d(1, C, cfg.patch_size, stride=cfg.patch_stride, bias=False),
                                  MaskedBatchNorm1d(C))
        self.register_load_state_dict_pre_hook(_fold_stem_bias)
        self.blocks = nn.Sequential(*[ModernTCNBlock(M, C, cfg.ffn_ratio, cfg.large_size, cfg.small_size,
                                                     cfg.dropout) for _ in range(cfg.num_blocks)])
        self.M, self.C = M, C
        pad = cfg.patch_size - cfg.patch_stride
        self.n_patches = (cfg.window + pad - cfg.patch_size) // cfg.patch_stride + 1
        self.out_dim = M * C * self.n_patches
        self.drop = KeyedDropout(cfg.head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, _ = x.shape
        if T != self.cfg.window:
            raise ValueError(f"moderntcn was built for window={self.cfg.window} days, got T={T}")
        if self.embed is not None:
            x = self.embed(x)                             # (n, T, M)
        z = x.transpose(1, 2).reshape(n * self.M, 1, T)   # one series per variable
        pad = self.cfg.patch_size - self.cfg.patch_stride
        if pad > 0:                                       # reference: repeat the last value
            z = torch.cat([z, z[:, :, -1:].expand(-1, -1, pad)], dim=-1)
        z = self.stem(z)                                  # (n*M, C, L')
        z = self.blocks(z.reshape(n, self.M, self.C, z.shape[-1]))  # (n, M, C, L')
        return self.drop(F.gelu(z.reshape(n, self.out_dim)))


class ModernTCN(PerStockModel):
    encoder_cls = ModernTCNEncoder
