"""Portfolios from each day's scores, and their return statistics (Qlib's conventions).

Part of `pipeline.evaluation`; the costs, the top fraction and the annualisation are the
config's `[backtest]` values, passed in (no defaults here).

Timing: the portfolio formed from the scores of day t is bought at the average price of t+1
and sold at that of t+2, so it earns the label y_t of each holding; nothing later than t is
used to choose it. Each day, over every member with a score (a stock suspended or delisted on
t+1 or t+2 is still ranked: dropping it would use the future):
- long-only holds the top `top_frac` (k = max(1, floor(n * top_frac)) stocks) equally weighted;
- long-short adds a short position in the bottom k: its return is long - short;
- the benchmark is the equal-weighted book of all the day's members, executed by the same
  rule, and the long-only excess return is long - benchmark (against the index when given).
Execution (the tradable rule; the store's `exec_ret`, `buy_ok`, `short_ok` columns, from
sql/store/day_facts.sql, `pipeline.store.build.execution_arrays`): a pick that cannot be bought on t+1 (no trade, or opening at the
daily limit up) is skipped; `untradable = "cash"` keeps its 1/k in cash (0 return), "next"
passes it to the next-ranked name that can be bought (the bottom k likewise for short sales,
blocked by a limit-down open). A holding with no trade on t+2 cannot be sold and is valued at
its last traded price (exec_ret). The IC metrics (ic.py) stay over the members with a label.
A predictions table without those columns (hand-made ones) treats a labelled stock as
tradable with exec_ret = label, and an unlabelled one as not buyable. The last two days of the
data, whose t+1 or t+2 has not happened yet, have no execution outcome and are left out.
Costs: rebalancing from yesterday's weights to today's pays `buy_cost` on the weight bought
and `sell_cost` on the weight sold (the first day buys the whole book from cash); turnover
is the weight bought that day. Weight drift within the day is ignored.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import UNTRADABLE  # what [backtest] untradable allows

PORTFOLIO_METRICS = ("long_only_ar", "long_only_ir", "long_short_ar", "long_short_ir",
                     "long_only_mdd", "turnover", "long_only_ar_net", "long_only_cash")


def execution_columns(pred: pd.DataFrame) -> pd.DataFrame:
    """exec_ret, buy_ok, short_ok of a predictions table: its own, or derived from the label
    (module docstring) when it has none."""
    if {"exec_ret", "buy_ok", "short_ok"} <= set(pred.columns):
        return pred[["exec_ret", "buy_ok", "short_ok"]].astype(
            {"exec_ret": "float64", "buy_ok": bool, "short_ok": bool})
    lab = pred["label"].astype("float64")
    return pd.DataFrame({"exec_ret": lab, "buy_ok": lab.notna(), "short_ok": lab.notna()})


def portfolio_returns(pred: pd.DataFrame, *, top_frac: float, buy_cost: float,
                      sell_cost: float, untradable: str) -> pd.DataFrame:
    """Daily returns of the long-only and long-short portfolios under the tradable rule.

    pred: columns date, instrument, score, label and (from a store) exec_ret, buy_ok, short_ok.
    Returns a frame indexed by date with columns long, short, long_short, bench, excess,
    turnover, cost, excess_net, n (members ranked), k (book size), cash (the long book's weight
    left in cash: picks that could not be bought).
    """
    if untradable not in UNTRADABLE:
        raise ValueError(f"backtest.untradable must be one of {UNTRADABLE}, got {untradable!r}")
    pred = pred.loc[pred["score"].notna()].reset_index(drop=True)
    df = pd.concat([pred[["date", "instrument", "score"]], execution_columns(pred)], axis=1)
    # A day whose outcome the data does not hold yet (its market t+1 or t+2 is past the last
    # day: no member has an execution outcome) is not a day of the backtest.
    df = df[df["exec_ret"].notna().groupby(df["date"]).transform("any")].reset_index(drop=True)
    # Deterministic order within a day: score descending, ties broken by instrument.
    df = df.sort_values(["date", "score", "instrument"], ascending=[True, False, True],
                        kind="mergesort").reset_index(drop=True)
    day = df["date"]
    g = df.groupby("date", sort=True)
    pos = g.cumcount()                                      # 0 = best score of the day
    n = g["score"].transform("size")
    k = np.maximum(1, np.floor(n * top_frac).astype(int))
    buy, short_ok = df["buy_ok"], df["short_ok"]
    ret = df["exec_ret"].where(buy | short_ok).fillna(0.0)  # never NaN where a position is held
    if untradable == "cash":
        held = (pos < k) & buy                              # the top k; unbuyable ones stay cash
        shorted = (pos >= n - k) & short_ok
        bench_n = n
    else:                                                   # "next": walk down the buyable names
        held = buy & (buy.astype(int).groupby(day).cumsum() <= k)
        rev = short_ok[::-1].astype(int).groupby(day[::-1]).cumsum()[::-1]
        shorted = short_ok & (rev <= k)
        bench_n = buy.groupby(day).transform("sum").clip(lower=1)
    kd = k.groupby(day).first()
    out = pd.DataFrame({
        "long": ret.where(held, 0.0).groupby(day).sum() / kd,
        "short": ret.where(shorted, 0.0).groupby(day).sum() / kd,
        "bench": (ret.where(buy, 0.0) / bench_n).groupby(day).sum(),
        "n": g.size(),
        "k": kd,
        "cash": 1.0 - held.groupby(day).sum() / kd,
    })
    out["long_short"] = out["long"] - out["short"]
    out["excess"] = out["long"] - out["bench"]

    # Weights of the long book as executed, (days, instruments); the day before the first is
    # all cash.
    w = (held.astype(float) / k).to_frame("w").assign(date=day, instrument=df["instrument"])
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
        "long_only_cash": float(returns["cash"].mean()),
    }
    if "excess_index" in returns and returns["excess_index"].notna().any():
        ix = risk(returns["excess_index"], days_per_year)
        out["long_only_index_ar"], out["long_only_index_ir"] = ix["ar"], ix["ir"]
    return out
