"""Portfolios from each day's scores, and their return statistics (Qlib's conventions).

Part of `pipeline.evaluation`; the costs, the top fraction and the annualisation are the
config's `[backtest]` values, passed in (no defaults here).

Timing: the portfolio formed from the scores of day t is bought at the average price of t+1
and valued at that of t+2, so it earns the label y_t of each holding; nothing later than the
label is used. Each day, over the stocks with a label:
- long-only holds the top `top_frac` (k = max(1, floor(n * top_frac)) stocks) equally weighted;
- long-short adds a short position in the bottom k: its return is mean(top) - mean(bottom);
- the benchmark is the equal-weighted mean label of the day's stocks (same timing), and the
  long-only excess return is long - benchmark; against the index when one is given.
Costs: rebalancing from yesterday's weights to today's pays `buy_cost` on the weight bought
and `sell_cost` on the weight sold (the first day buys the whole book from cash); turnover
is the weight bought that day. Weight drift within the day is ignored.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

PORTFOLIO_METRICS = ("long_only_ar", "long_only_ir", "long_short_ar", "long_short_ir",
                     "long_only_mdd", "turnover", "long_only_ar_net")


def portfolio_returns(pred: pd.DataFrame, *, top_frac: float, buy_cost: float,
                      sell_cost: float) -> pd.DataFrame:
    """Daily returns of the long-only and long-short portfolios.

    pred: columns date, instrument, score, label. Returns a frame indexed by date with columns
    long, short, long_short, bench, excess, turnover, cost, excess_net, n, k.
    """
    df = pred.loc[pred["label"].notna() & pred["score"].notna(),
                  ["date", "instrument", "score", "label"]].astype({"label": "float64"})
    # Deterministic order within a day: score descending, ties broken by instrument.
    df = df.sort_values(["date", "score", "instrument"], ascending=[True, False, True],
                        kind="mergesort").reset_index(drop=True)
    g = df.groupby("date", sort=True)
    pos = g.cumcount()                                      # 0 = best score of the day
    n = g["score"].transform("size")
    k = np.maximum(1, np.floor(n * top_frac).astype(int))
    top = pos < k
    bottom = pos >= n - k
    lab = df["label"]
    out = pd.DataFrame({
        "long": lab.where(top).groupby(df["date"]).mean(),
        "short": lab.where(bottom).groupby(df["date"]).mean(),
        "bench": g["label"].mean(),
        "n": g.size(),
        "k": k.groupby(df["date"]).first(),
    })
    out["long_short"] = out["long"] - out["short"]
    out["excess"] = out["long"] - out["bench"]

    # Weights of the long book, (days, instruments); the day before the first is all cash.
    w = (top.astype(float) / k).to_frame("w").assign(date=df["date"], instrument=df["instrument"])
    w = w.pivot_table(index="date", columns="instrument", values="w", fill_value=0.0)
    w = w.reindex(out.index, fill_value=0.0)
    dw = w.diff()
    dw.iloc[0] = w.iloc[0]
    bought = dw.clip(lower=0).sum(axis=1)
    sold = (-dw).clip(lower=0).sum(axis=1)
    out["turnover"] = bought
    out["cost"] = buy_cost * bought + sell_cost * sold
    out["excess_net"] = out["excess"] - out["cost"]
    out.index.name = "date"
    return out


def add_index(returns: pd.DataFrame, index_ret: pd.Series | None) -> pd.DataFrame:
    """Add `index` (index return with the same timing) and `excess_index` = long - index."""
    out = returns.copy()
    if index_ret is None:
        return out
    out["index"] = index_ret.reindex(out.index).to_numpy()
    out["excess_index"] = out["long"] - out["index"]
    return out


def index_returns(closes: pd.Series, dates: np.ndarray) -> pd.Series:
    """Index return with the label's timing: close(t+2) / close(t+1) - 1 on market days.

    closes: index close by date; dates: the market trading days (ascending).
    """
    idx = pd.DatetimeIndex(pd.to_datetime(dates))
    c = closes.copy()
    c.index = pd.DatetimeIndex(pd.to_datetime(c.index))
    c = c.reindex(idx)
    return (c.shift(-2) / c.shift(-1) - 1).rename("index")


def risk(r: pd.Series, days_per_year: int) -> dict[str, float]:
    """Qlib's risk analysis ("sum" mode): annualised return = mean x days, IR = mean / std x
    sqrt(days), max drawdown of the cumulative (summed) return."""
    r = r.dropna()
    if r.empty:
        return {"ar": float("nan"), "ir": float("nan"), "mdd": float("nan")}
    sd = r.std(ddof=1) if len(r) > 1 else float("nan")
    cum = r.cumsum()
    return {
        "ar": float(r.mean() * days_per_year),
        "ir": float(r.mean() / sd * np.sqrt(days_per_year)) if sd and sd > 0 else float("nan"),
        "mdd": float((cum - cum.cummax()).min()),
    }


def portfolio_metrics(returns: pd.DataFrame, days_per_year: int) -> dict[str, float]:
    """The logged portfolio metrics from `portfolio_returns` (+ `add_index`)."""
    lo, ls = risk(returns["excess"], days_per_year), risk(returns["long_short"], days_per_year)
    net = risk(returns["excess_net"], days_per_year)
    out = {
        "long_only_ar": lo["ar"], "long_only_ir": lo["ir"],
        "long_short_ar": ls["ar"], "long_short_ir": ls["ir"],
        "long_only_mdd": lo["mdd"],
        "turnover": float(returns["turnover"].mean()),
        "long_only_ar_net": net["ar"], "long_only_ir_net": net["ir"],
        "long_only_raw_ar": risk(returns["long"], days_per_year)["ar"],
    }
    if "excess_index" in returns and returns["excess_index"].notna().any():
        ix = risk(returns["excess_index"], days_per_year)
        out["long_only_index_ar"], out["long_only_index_ir"] = ix["ar"], ix["ir"]
    return out
