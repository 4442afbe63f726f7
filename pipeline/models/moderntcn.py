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

from pipeline.models.layers import PerStockModel


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


def _conv_bn(channels: int, kernel: int) -> nn.Sequential:
    """Depthwise conv (same padding, no bias) + BN over (n, channels, L)."""
    return nn.Sequential(nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels,
                                   bias=False), nn.BatchNorm1d(channels))


class ModernTCNBlock(nn.Module):
    def __init__(self, M: int, C: int, ratio: int, large: int, small: int, drop: float):
        super().__init__()
        self.large = _conv_bn(M * C, large)
        self.small = _conv_bn(M * C, small) if small else None
        self.norm = nn.BatchNorm1d(C)
        # ConvFFN1: 1x1 convs grouped by variable (mixes channels within a variable).
        self.ffn1 = nn.Sequential(nn.Conv1d(M * C, M * C * ratio, 1, groups=M), nn.Dropout(drop), nn.GELU(),
                                  nn.Conv1d(M * C * ratio, M * C, 1, groups=M), nn.Dropout(drop))
        # ConvFFN2: 1x1 convs grouped by channel (mixes variables within a channel).
        self.ffn2 = nn.Sequential(nn.Conv1d(M * C, M * C * ratio, 1, groups=C), nn.Dropout(drop), nn.GELU(),
                                  nn.Conv1d(M * C * ratio, M * C, 1, groups=C), nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, M, C, L = x.shape
        z = x.reshape(n, M * C, L)
        z = self.large(z) + (self.small(z) if self.small is not None else 0)
        z = self.norm(z.reshape(n * M, C, L)).reshape(n, M * C, L)
        z = self.ffn1(z).reshape(n, M, C, L)
        z = z.transpose(1, 2).reshape(n, C * M, L)        # channel-major for the cross-variable FFN
        z = self.ffn2(z).reshape(n, C, M, L).transpose(1, 2)
        return x + z


class ModernTCNEncoder(nn.Module):
    """(n, T, D) -> (n, M*C*L'): flattened block output (the reference's classification head)."""

    def __init__(self, cfg: ModernTCNConfig, d_feat: int):
        super().__init__()
        self.cfg = cfg
        M, C = (cfg.n_vars or d_feat), cfg.d_model
        self.embed = nn.Linear(d_feat, M) if cfg.n_vars else None
        self.stem = nn.Sequential(nn.Conv1d(1, C, cfg.patch_size, stride=cfg.patch_stride), nn.BatchNorm1d(C))
        self.blocks = nn.Sequential(*[ModernTCNBlock(M, C, cfg.ffn_ratio, cfg.large_size, cfg.small_size,
                                                     cfg.dropout) for _ in range(cfg.num_blocks)])
        self.M, self.C = M, C
        pad = cfg.patch_size - cfg.patch_stride
        self.n_patches = (cfg.window + pad - cfg.patch_size) // cfg.patch_stride + 1
        self.out_dim = M * C * self.n_patches
        self.drop = nn.Dropout(cfg.head_dropout)

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
        z = self.blocks(z.reshape(n, self.M, self.C, -1))  # (n, M, C, L')
        return self.drop(F.gelu(z.reshape(n, -1)))


class ModernTCN(PerStockModel):
    def __init__(self, cfg: ModernTCNConfig, d_feat: int, d_market: int = 0):
        super().__init__()
        self.cfg = cfg
        self.encoder = ModernTCNEncoder(cfg, d_feat)
        self.head = nn.Linear(self.encoder.out_dim, 1)
