"""LSTM baseline (Qlib `pytorch_lstm_ts`), also the encoder of MIGA-Rec's router."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.layers import KeyedDropout, PerStockModel


@dataclass
class LSTMConfig:
    # Defaults: Qlib examples/benchmarks/LSTM/workflow_config_lstm_Alpha158.yaml
    # (hidden_size=64, num_layers=2, dropout=0.0).
    hidden: int = 64          # Qlib `hidden_size`
    num_layers: int = 2
    dropout: float = 0.0      # between LSTM layers


class StackedLSTM(nn.Module):
    """nn.LSTM(batch_first=True) written out over the T steps, with nn.LSTM's parameter names,
    initialisation and gate order (i, f, g, o), so saved states load either way. nn.LSTM has no
    vmap batching rule (STACK-NOTES); this runs under the engine's vmap, and its dropout
    between layers is keyed. (n, T, D) -> (n, T, H)."""

    def __init__(self, d_in: int, hidden: int, num_layers: int, dropout: float):
        super().__init__()
        self.hidden, self.num_layers = hidden, num_layers
        bound = hidden ** -0.5                            # nn.LSTM's init: U(-1/sqrt(H), 1/sqrt(H))
        for layer in range(num_layers):
            d = d_in if layer == 0 else hidden
            for name, shape in ((f"weight_ih_l{layer}", (4 * hidden, d)),
                                (f"weight_hh_l{layer}", (4 * hidden, hidden)),
                                (f"bias_ih_l{layer}", (4 * hidden,)),
                                (f"bias_hh_l{layer}", (4 * hidden,))):
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))
        self.drop = KeyedDropout(dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, _ = x.shape
        for layer in range(self.num_layers):
            if layer:
                x = self.drop(x)
            w_hh = getattr(self, f"weight_hh_l{layer}")
            # the input projection of all T days at once: (n, T, 4H)
            xw = (x @ getattr(self, f"weight_ih_l{layer}").T + getattr(self, f"bias_ih_l{layer}")
                  + getattr(self, f"bias_hh_l{layer}"))
            h = c = x.new_zeros(n, self.hidden)
            outs = []
            for t in range(T):
                i, f, g, o = (xw[:, t] + h @ w_hh.T).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs, dim=1)                  # (n, T, H)
        return x


class LSTMEncoder(nn.Module):
    """(n, T, D) -> (n, hidden): stacked LSTM, hidden output at the last day."""

    def __init__(self, cfg: LSTMConfig, d_feat: int):
        super().__init__()
        self.rnn = StackedLSTM(d_feat, cfg.hidden, cfg.num_layers, cfg.dropout)
        self.out_dim = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[:, -1]                         # (n, T, H) -> (n, H)


class LSTM(PerStockModel):
    encoder_cls = LSTMEncoder
