"""Transformer baseline (Qlib `pytorch_transformer_ts`), also the encoder of MIGA-Attn's router."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.layers import PerStockModel, PositionalEncoding


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


class TransformerEncoderT(nn.Module):
    """(n, T, D) -> (n, hidden): linear embedding + sine positions + encoder over the T days."""

    def __init__(self, cfg: TransformerConfig, d_feat: int):
        super().__init__()
        self.embed = nn.Linear(d_feat, cfg.hidden)
        self.pos = PositionalEncoding(cfg.hidden)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                           batch_first=True)
        # nested tensors only matter with padding masks over T; we have none.
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(self.pos(self.embed(x)))         # (n, T, H)
        return z[:, -1]


class Transformer(PerStockModel):
    encoder_cls = TransformerEncoderT
