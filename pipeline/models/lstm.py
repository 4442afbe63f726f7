"""LSTM baseline (Qlib `pytorch_lstm_ts`), also the encoder of MIGA-Rec's router."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.layers import PerStockModel


@dataclass
class LSTMConfig:
    # Defaults: Qlib examples/benchmarks/LSTM/workflow_config_lstm_Alpha158.yaml
    # (hidden_size=64, num_layers=2, dropout=0.0).
    hidden: int = 64          # Qlib `hidden_size`
    num_layers: int = 2
    dropout: float = 0.0      # between LSTM layers


class LSTMEncoder(nn.Module):
    """(n, T, D) -> (n, hidden): stacked LSTM, hidden output at the last day."""

    def __init__(self, cfg: LSTMConfig, d_feat: int):
        super().__init__()
        self.rnn = nn.LSTM(d_feat, cfg.hidden, num_layers=cfg.num_layers, batch_first=True,
                           dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)                              # (n, T, H)
        return out[:, -1]


class LSTM(PerStockModel):
    encoder_cls = LSTMEncoder
