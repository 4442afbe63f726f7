"""TCN baseline (Qlib `pytorch_tcn_ts`), also the encoder of MIGA-Conv's router."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.layers import PerStockModel, TemporalBlock


@dataclass
class TCNConfig:
    # Defaults: Qlib examples/benchmarks/TCN/workflow_config_tcn_Alpha158.yaml
    # (n_chans=32, num_layers=5, kernel_size=7, dropout=0.5). Dilation doubles per layer.
    hidden: int = 32          # channels per layer (Qlib `n_chans`)
    num_layers: int = 5
    kernel_size: int = 7
    dropout: float = 0.5


class TCNEncoder(nn.Module):
    """(n, T, D) -> (n, hidden): dilated causal conv stack, read at the last day."""

    def __init__(self, cfg: TCNConfig, d_feat: int):
        super().__init__()
        chans = [d_feat] + [cfg.hidden] * cfg.num_layers
        self.net = nn.Sequential(*[
            TemporalBlock(chans[i], chans[i + 1], cfg.kernel_size, 2 ** i, cfg.dropout)
            for i in range(cfg.num_layers)
        ])
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2))[:, :, -1]      # (n, D, T) -> (n, C, T) -> (n, C)


class TCN(PerStockModel):
    encoder_cls = TCNEncoder
