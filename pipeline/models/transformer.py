"""Transformer baseline (Qlib `pytorch_transformer_ts`), also the encoder of MIGA-Attn's router."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import KeyedDropout, PerStockModel, PositionalEncoding, attention


@dataclass
class TransformerConfig:
    # Defaults: Qlib pytorch_transformer_ts (d_model=64, nhead=2, num_layers=2, dropout=0);
    # the Alpha158 benchmark config keeps them. Qlib builds nn.TransformerEncoderLayer without
    # dim_feedforward, so PyTorch's default 2048 applies (post-norm, ReLU); kept for fidelity.
    hidden: int = 64          # Qlib `d_model`
    nhead: int = 2
    num_layers: int = 2
    dim_feedforward: int = 2048
    dropout: float = 0.0


class SelfAttention(nn.Module):
    """nn.MultiheadAttention's self-attention (same parameter names) on (n, T, d)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden={d} must be divisible by nhead={heads}")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)      # as nn.MultiheadAttention
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, d = x.shape
        qkv = (x @ self.in_proj_weight.T + self.in_proj_bias).view(n, T, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)              # (n, h, T, d/h) each
        out = attention(q, k, v, dropout=self.dropout, training=self.training)
        return self.out_proj(out.transpose(1, 2).reshape(n, T, d))


class EncoderLayer(nn.Module):
    """nn.TransformerEncoderLayer(batch_first=True) as PyTorch defines it (post-norm, ReLU,
    dropout after attention, inside and after the feed-forward), with its parameter names, so
    saved states load either way; written out so it runs under vmap with keyed dropout."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = SelfAttention(d, heads, dropout)
        self.linear1, self.linear2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout, self.dropout1, self.dropout2 = (KeyedDropout(dropout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class Encoder(nn.Module):
    """nn.TransformerEncoder's `layers` (same names): num_layers EncoderLayers."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg.hidden, cfg.nhead, cfg.dim_feedforward,
                                                  cfg.dropout) for _ in range(cfg.num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerEncoderT(nn.Module):
    """(n, T, D) -> (n, hidden): linear embedding + sine positions + encoder over the T days."""

    def __init__(self, cfg: TransformerConfig, d_feat: int):
        super().__init__()
        self.embed = nn.Linear(d_feat, cfg.hidden)
        self.pos = PositionalEncoding(cfg.hidden)
        self.encoder = Encoder(cfg)
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.pos(self.embed(x)))         # (n, T, H)
        return z[:, -1]


class Transformer(PerStockModel):
    encoder_cls = TransformerEncoderT
