"""Figures 5 and 6 of the paper: are MIGA's experts specialists?

Paper 3.6: "we conduct individual predictions on the test set using each expert ... and compare
their excess annual returns across various stock benchmarks and portfolios". Each of the G x E
experts' own forecast (`MIGA.expert_predictions`: its prediction after group mixing, without the
router's weights) is used as a score on its own and backtested with the paper's daily portfolios
(`evaluation.portfolio_returns`, the same tradable rule and costs as a cell's Table 2):
  - stock specialization: the long-only book's excess over the members' mean, annualised, per
    stock set (the model trained on that stock set, on its test days);
  - portfolio specialization: per side, the long book's excess (long - mean) and the short
    book's (mean - short): what shorting the expert's bottom picks earns.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.config import BacktestConfig
from pipeline.evaluation import portfolio_returns, with_execution
from pipeline.loader import DayLoader


@torch.no_grad()
def expert_scores(model, store, stockset: str, segment: str = "test", device: str = "cpu",
                  batch_days: int = 8) -> tuple[pd.DataFrame, np.ndarray]:
    """Every expert's forecast for the members of `stockset` on the segment's days: a frame
    (day_idx, inst_idx, date, instrument, label, segment) and an array (rows, G * E), expert
    g * E + e in column g * E + e."""
    model = model.to(device).eval()
    loader = DayLoader(store, segment, stockset, batch_days=batch_days, device=device)
    frames, preds = [], []
    for b in loader:
        p = model.expert_predictions(b.x, b.mask)                  # (B, N, G, E)
        keep = b.mask.cpu().numpy()
        di = np.broadcast_to(b.day_idx.cpu().numpy()[:, None], keep.shape)[keep]
        ji = b.inst_idx.cpu().numpy()[keep]
        preds.append(p.float().cpu().numpy()[keep].reshape(len(di), -1))
        frames.append(pd.DataFrame({"day_idx": di, "inst_idx": ji,
                                    "label": b.y.cpu().numpy()[keep]}))
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(2, "date", pd.to_datetime(store.dates[frame["day_idx"].to_numpy()]))
    frame.insert(3, "instrument", store.instruments[frame["inst_idx"].to_numpy()])
    frame["segment"] = segment
    return frame, np.concatenate(preds) if preds else np.zeros((0, 0), np.float32)


def specialization(model, store, stockset: str, backtest: BacktestConfig,
                   device: str = "cpu") -> pd.DataFrame:
    """One row per expert: expert (1-based, g * E + e + 1), group, index in group, and the
    annualised excess returns of its own forecast: `long_only` (long - members' mean, the
    paper's Table 2 excess), `long` (the same book) and `short` (mean - short book), on
    `stockset`'s test days."""
    frame, preds = expert_scores(model, store, stockset, device=device)
    base = with_execution(frame.assign(score=np.float32(0.0)), store)
    n = len(frame)                   # with_execution keeps the scored rows first, in order
    score = base["score"].to_numpy(dtype=np.float64, copy=True)
    G, E = model.cfg.groups, model.cfg.experts
    rows = []
    for j in range(preds.shape[1]):
        score[:n] = preds[:, j]
        r = portfolio_returns(base.assign(score=score), top_frac=backtest.top_frac,
                              buy_cost=backtest.buy_cost, sell_cost=backtest.sell_cost,
                              untradable=backtest.untradable)
        year = backtest.days_per_year
        long_x = float((r["long"] - r["bench"]).mean() * year)
        rows.append({"expert": j + 1, "group": j // E + 1, "member": j % E + 1,
                     "stockset": stockset, "long_only": long_x, "long": long_x,
                     "short": float((r["bench"] - r["short"]).mean() * year), "days": len(r)})
    assert len(rows) == G * E
    return pd.DataFrame(rows)
