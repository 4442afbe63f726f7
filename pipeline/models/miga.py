"""MIGA: mixture of experts with group aggregation (paper section 2).

router encoder (TCN / LSTM / Transformer over the T days) -> hidden h (n, H)
  -> routing logits (n, G*E) -> top-k softmax weights w (eq. 4)
  -> 63 linear experts on h, one einsum -> o (n, G, E, d_out) (eq. 5)
  -> inner-group multi-head self-attention over each group's E experts (eqs. 6-8)
  -> per-expert linear read-out -> expert predictions (n, G, E)
  -> y = sum_ge w * prediction (eq. 9); aux = router loss (eq. 11).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import attention, real_rows, record, stock_rows
from pipeline.models.lstm import LSTMConfig, LSTMEncoder
from pipeline.models.tcn import TCNConfig, TCNEncoder
from pipeline.models.transformer import TransformerConfig, TransformerEncoderT


@dataclass
class MoEConfig:
    # Paper 3.5 / Figure 4: 7 groups x 9 experts, top 8 of the 63. The paper gives no expert
    # output size or head count. Ours: 8 and 2 (head size 4); the attention runs over the E
    # experts, not the head-size-1 no-op over features of one unofficial implementation.
    # Why small: 63 experts x d values per stock are the widest tensors in the model and SDPA
    # pays per (sequence, head) on 9-token sequences, so the expert size and head count set
    # MIGA-Conv's step cost against the TCN's (budget: under 3x; the measured ratios are in
    # benchmarks/bench_models.py's docstring).
    groups: int = 7
    experts: int = 9
    top_k: int = 8
    d_expert: int = 8             # output vector size per expert
    attn_heads: int = 2
    group_attention: bool = True  # False = "mixture of isolated experts" (paper Table 3 ablation)
    attn_residual: bool = True    # mixed = o + MHSA(o); see GroupAttention
    attn_dropout: float = 0.0


# Each MIGA variant = its baseline's encoder (same fields and defaults, paper 3.2: "we replaced
# the stock representation encoder in different routers") + the MoE head.
@dataclass
class MIGAConvConfig(TCNConfig, MoEConfig):
    pass


@dataclass
class MIGARecConfig(LSTMConfig, MoEConfig):
    pass


@dataclass
class MIGAAttnConfig(TransformerConfig, MoEConfig):
    pass


class GroupAttention(nn.Module):
    """Multi-head self-attention among the E experts of each group: (..., G, E, d) -> same shape.

    The E experts of a group are E tokens; W_q, W_k, W_v (eq. 7) and the output projection are
    shared by all groups. No position encoding, so permuting a group's experts permutes the
    output (equivariance), and groups never see each other. The paper writes eq. 8 without a
    residual; we add one (standard Transformer practice) so each expert keeps its own output
    and adds what it learns from its group: without it every expert in a group would collapse
    towards the same attention average, which defeats expert specialisation (paper 3.6).
    """

    def __init__(self, d: int, heads: int, residual: bool = True, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_expert={d} must be divisible by attn_heads={heads}")
        self.heads, self.residual, self.dropout = heads, residual, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        *lead, E, d = o.shape                             # lead = (..., G)
        h = self.heads
        qkv = self.qkv(o).reshape(-1, E, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (3, n*G, h, E, d/h)
        mixed = attention(qkv[0], qkv[1], qkv[2], dropout=self.dropout, training=self.training)
        mixed = self.proj(mixed.transpose(1, 2).reshape(*lead, E, d))  # (..., G, E, d)
        return o + mixed if self.residual else mixed


def route_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 4: softmax over the k largest logits, zero elsewhere. (n, G*E) -> (n, G*E)."""
    vals, idx = logits.topk(k, dim=-1)
    w = vals.softmax(-1)    # float32 under CUDA bf16 autocast (softmax runs in float32 there)
    return torch.zeros(logits.shape, dtype=w.dtype, device=logits.device).scatter(-1, idx, w)


def router_loss(logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 11 for real stocks: sum over the G*E logits of (h - mean(h))^2, averaged over stocks.

    rows: (n,) bool, the real stocks among the n rows (None = all). The paper sums over days and
    stocks; we average over stocks so alpha = 2e-3 means the same thing for CSI300 and CSI1000
    days and for any batch size.
    """
    dev = logits - logits.mean(-1, keepdim=True)
    per = dev.pow(2).sum(-1)                              # (n,)
    if rows is None:
        return per.mean() if per.shape[0] else per.sum()
    w = rows.to(per.dtype)
    return (per * w).sum() / w.sum().clamp(min=1.0)


class MIGA(nn.Module):
    needs_market = False
    ENCODERS = {MIGAConvConfig: TCNEncoder, MIGARecConfig: LSTMEncoder, MIGAAttnConfig: TransformerEncoderT}

    def __init__(self, cfg: MIGAConvConfig | MIGARecConfig | MIGAAttnConfig, d_feat: int,
                 d_market: int = 0):
        super().__init__()
        G, E, d = cfg.groups, cfg.experts, cfg.d_expert
        if not 1 <= cfg.top_k <= G * E:
            raise ValueError(f"top_k={cfg.top_k} must be in 1..groups*experts={G * E}")
        self.cfg = cfg
        self.encoder = self.ENCODERS[type(cfg)](cfg, d_feat)
        H = self.encoder.out_dim
        self.router = nn.Linear(H, G * E)
        # Eq. 5 says Expert_jk(h_jk), h_jk being a routing logit. A scalar logit is a poor expert
        # input; we read it as "every expert takes the router's hidden state" (2.2.2: "each expert
        # takes the same hidden representation ... generated by router"); the logits only route.
        bound = H ** -0.5                                 # nn.Linear's default init range
        self.expert_w = nn.Parameter(torch.empty(G, E, H, d).uniform_(-bound, bound))
        self.expert_b = nn.Parameter(torch.empty(G, E, d).uniform_(-bound, bound))
        self.group_attn = (GroupAttention(d, cfg.attn_heads, cfg.attn_residual, cfg.attn_dropout)
                           if cfg.group_attention else None)
        # Per-expert read-out (d -> 1) after mixing: each expert keeps its own predictor.
        self.readout_w = nn.Parameter(torch.empty(G, E, d).uniform_(-d ** -0.5, d ** -0.5))
        self.readout_b = nn.Parameter(torch.zeros(G, E))
        self.last_routing: torch.Tensor | None = None

    def experts(self, h: torch.Tensor) -> torch.Tensor:
        """All G*E linear experts in one einsum: (n, H) -> (n, G, E, d)."""
        return torch.einsum("nh,gehd->nged", h, self.expert_w) + self.expert_b

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router hidden states (n, H) -> logits (n, G*E), weights (n, G, E), predictions (n, G, E).

        `predictions[:, g, e]` is expert (g, e)'s own forecast after group mixing (paper 3.6
        evaluates experts one by one with it).
        """
        G, E = self.cfg.groups, self.cfg.experts
        logits = self.router(h)                           # (n, G*E)
        w = route_topk(logits, self.cfg.top_k).view(-1, G, E)
        o = self.experts(h)                               # (n, G, E, d)
        if self.group_attn is not None:
            o = self.group_attn(o)
        preds = torch.einsum("nged,ged->nge", o, self.readout_w) + self.readout_b  # (n, G, E)
        return logits, w, preds

    def expert_predictions(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each expert's own forecast for every stock, (B, N, G, E), zeros at padding: what
        paper 3.6 backtests expert by expert (`heads`' predictions, without the routing)."""
        rows = mask.reshape(-1)
        with real_rows(rows):
            h = self.encoder(stock_rows(x, mask))
        preds = self.heads(h)[2]
        return (preds * rows[:, None, None]).view(*mask.shape, *preds.shape[1:])

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                market: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = mask.reshape(-1)                           # (B*N,)
        with real_rows(rows):
            h = self.encoder(stock_rows(x, mask))         # (B*N, H), padding rows zeroed
        logits, w, preds = self.heads(h)
        y = (w * preds).sum((-1, -2)).view(mask.shape)    # (B, N) eq. 9
        routing = (w.detach() * rows[:, None, None]).view(*mask.shape, *w.shape[1:])
        if not record("routing", routing):                # (B, N, G, E), zeros at padding
            self.last_routing = routing                   # a direct call (not the engine)
        return y.masked_fill(~mask, 0.0), router_loss(logits, rows)
