"""TopkDropout: the portfolio a trader could run, a day-to-day account net of costs.

Part of `pipeline.evaluation`, beside the paper's daily top 5% (portfolio.py), which rebuys
its book every day and so turns over most of it. This is Qlib's `TopkDropoutStrategy`
(qlib/contrib/strategy/signal_strategy.py, `generate_trade_decision`, with method_sell
"bottom", method_buy "top", hold_thresh 1, only_tradable False) on an account like Qlib's
`Exchange` (qlib/backtest/exchange.py); every number is the config's `[backtest]` value.

Each signal day t, with the scores of t, trades on t+1 at the average price (as the label):
- `last`: the holdings by score (a holding with no score that day: last); `today`: the best
  `n_drop + topk - len(last)` scored names not held; of the two together, the holdings among the
  `n_drop` worst are sold; the best `len(sell) + topk - len(last)` of `today` are bought.
- sells first: each sold holding pays max(value x sell_cost, min_cost) and its cash is free;
  then the cash x `risk_degree` is split equally over the names to buy, each paying
  max(value x buy_cost, min_cost) (a buy the cash cannot cover is cut to what it can, as Qlib).
- the tradable rule: no buy of a stock that does not trade on t+1 or opens at the limit up
  (`buy_ok`), no sale of one that does not trade or opens at the limit down (`sell_ok`); with
  `forbid_all_trade_at_limit` (Qlib's default) a stock opening at either limit is neither
  bought nor sold (`at_limit`). A name that cannot be bought keeps its share in cash; a holding
  that cannot be sold is carried.
- holdings are valued at the average price: from t+1 to t+2 each earns `hold_ret` (the label,
  or 0 while suspended and the move since its last trade when it comes back).
The return of signal day t is the account's value at t+2's prices over its value at t+1's
before trading, costs of t+1 included (the paper portfolio's timing); "gross" adds the day's
costs back (Qlib's `return` column; net is `return - cost`).

Modelled as Qlib's exchange with deal_price = vwap (the average price), open_cost, close_cost,
min_cost, limits from the data (the store's open-at-limit flags, not Qlib's `limit_threshold`
on the close-to-close change). Not modelled: the trade unit (Qlib rounds every order to 100
shares: at 1e8 CNY and 50 names an order is ~2e6 CNY, so rounding moves a weight by < 0.5%),
volume limits and impact cost (Qlib's defaults: none). benchmarks/bench_topk_qlib.py runs
Qlib's own backtest on the same prices and gives the agreement.

Input: a predictions table (date, instrument, score) with the store's execution columns
buy_ok, sell_ok, at_limit, hold_ret; rows with no score are stocks the account may hold but
that had no score that day (`pipeline.evaluation.with_execution`). A table without them
(hand-made ones) uses exec_ret or the label as hold_ret, short_ok or a label as sell_ok.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation.portfolio import risk

TOPK_METRICS = ("topk_ar_net", "topk_excess_ar_net", "topk_ir_net", "topk_mdd_net",
                "topk_turnover", "topk_cost_drag")


def _panel(pred: pd.DataFrame) -> tuple[pd.Index, pd.Index, dict[str, np.ndarray]]:
    """Dense (days, instruments) arrays of the account's inputs; a stock-day with no row does
    not trade and holds its value."""
    cols = set(pred.columns)
    lab = pred["label"].astype("float64") if "label" in cols else pd.Series(np.nan, pred.index)
    hold = (pred["hold_ret"] if "hold_ret" in cols
            else pred["exec_ret"] if "exec_ret" in cols else lab).astype("float64")
    buy = pred["buy_ok"] if "buy_ok" in cols else lab.notna()
    sell = (pred["sell_ok"] if "sell_ok" in cols
            else pred["short_ok"] if "short_ok" in cols else lab.notna())
    limit = pred["at_limit"] if "at_limit" in cols else pd.Series(False, pred.index)
    df = pd.DataFrame({"date": pred["date"].to_numpy(), "instrument": pred["instrument"].to_numpy(),
                       "score": pred["score"].astype("float64").to_numpy(),
                       "hold": hold.to_numpy(), "buy": buy.astype(bool).to_numpy(),
                       "sell": sell.astype(bool).to_numpy(), "limit": limit.astype(bool).to_numpy()})
    # A day whose outcome the data does not hold yet (no stock has a hold_ret) is not a day of
    # the account (the paper portfolio's rule).
    df = df[df["hold"].notna().groupby(df["date"]).transform("any")]
    dates = pd.Index(np.sort(df["date"].unique()), name="date")
    insts = pd.Index(np.sort(df["instrument"].unique()))
    di, ji = dates.get_indexer(df["date"]), insts.get_indexer(df["instrument"])
    out = {}
    for k, fill in (("score", np.nan), ("hold", 0.0), ("buy", False), ("sell", False),
                    ("limit", False)):
        a = np.full((len(dates), len(insts)), fill, dtype=type(fill))
        a[di, ji] = df[k].to_numpy()
        out[k] = a
    out["hold"] = np.nan_to_num(out["hold"])
    return dates, insts, out


def _by_score(idx: np.ndarray, score: np.ndarray) -> np.ndarray:
    """idx ordered by score descending, NaN last (as pandas' sort_values), ties by instrument."""
    s = score[idx]
    return idx[np.lexsort((idx, np.where(np.isnan(s), np.inf, -s)))]


def topk_account(pred: pd.DataFrame, *, topk: int, n_drop: int, buy_cost: float,
                 sell_cost: float, min_cost: float, account: float, risk_degree: float,
                 forbid_all_trade_at_limit: bool) -> pd.DataFrame:
    """Daily returns of the TopkDropout account (module docstring).

    Returns a frame indexed by signal date with columns net, gross, cost (the day's costs over
    the account's value), bought, sold (value traded over the account's value), cash (the cash
    share after the day's trades), held (names held), value (the account, CNY, at t+2).
    """
    if not 1 <= n_drop <= topk:
        raise ValueError(f"n_drop must be in [1, topk = {topk}], got {n_drop}")
    dates, insts, x = _panel(pred)
    buyable, sellable = x["buy"], x["sell"]
    if forbid_all_trade_at_limit:
        buyable, sellable = buyable & ~x["limit"], sellable & ~x["limit"]
    n = len(insts)
    h = np.zeros(n)                    # (instruments,) value held, CNY, at the current price
    cash = float(account)
    rows = []
    for d in range(len(dates)):
        score = x["score"][d]
        v0 = cash + h.sum()
        held = np.flatnonzero(h > 0)
        last = _by_score(held, score)
        cand = np.flatnonzero(np.isfinite(score) & (h <= 0))
        today = _by_score(cand, score)[: n_drop + topk - len(last)]
        comb = _by_score(np.union1d(last, today), score)
        sell = last[np.isin(last, comb[-n_drop:])]
        buy = today[: len(sell) + topk - len(last)]
        cost = bought = sold = 0.0
        for j in sell:
            if sellable[d, j]:
                c = max(h[j] * sell_cost, min_cost)
                cash += h[j] - c
                sold += h[j]
                cost += c
                h[j] = 0.0
        value = cash * risk_degree / len(buy) if len(buy) else 0.0
        for j in buy:
            if not buyable[d, j]:
                continue                          # its share stays in cash
            tv = value
            if cash < max(tv * buy_cost, min_cost):
                continue
            if cash < tv + max(tv * buy_cost, min_cost):   # what the cash can cover (Qlib)
                critical = min_cost / buy_cost + min_cost if buy_cost > 0 else np.inf
                tv = cash / (1 + buy_cost) if cash >= critical else cash - min_cost
            if tv <= 1e-5:
                continue
            c = max(tv * buy_cost, min_cost)
            cash -= tv + c
            h[j] += tv
            bought += tv
            cost += c
        cash_share = cash / v0
        h *= 1.0 + x["hold"][d]
        v1 = cash + h.sum()
        rows.append((v1 / v0 - 1, cost / v0, bought / v0, sold / v0, cash_share,
                     int((h > 0).sum()), v1))
    out = pd.DataFrame(rows, index=dates,
                       columns=["net", "cost", "bought", "sold", "cash", "held", "value"])
    out.insert(1, "gross", out["net"] + out["cost"])
    return out


def topk_metrics(acct: pd.DataFrame, bench: pd.Series, index_ret: pd.Series | None,
                 days_per_year: int) -> dict[str, float]:
    """The logged TopkDropout metrics, net of costs and before them (`_gross`): the account's
    annual return (`topk_ar`), its excess over the members' mean (`bench`: the paper
    portfolio's equal-weighted members, same timing) with its IR and max drawdown, over the
    index when given (`topk_index_ar`, `topk_index_ir`); `topk_turnover` (mean weight bought a
    day, as the paper portfolio's `turnover`), `topk_cost_drag` (costs a year), `topk_cash`
    (mean cash share)."""
    out = {"topk_turnover": float(acct["bought"].mean()),
           "topk_cost_drag": float(acct["cost"].mean() * days_per_year),
           "topk_cash": float(acct["cash"].mean())}
    mean = bench.reindex(acct.index)
    idx = index_ret.reindex(acct.index) if index_ret is not None else None
    for kind in ("net", "gross"):
        r = acct[kind]
        ex = risk(r - mean, days_per_year)
        out.update({f"topk_ar_{kind}": risk(r, days_per_year)["ar"],
                    f"topk_excess_ar_{kind}": ex["ar"], f"topk_ir_{kind}": ex["ir"],
                    f"topk_mdd_{kind}": ex["mdd"]})
        if idx is not None and idx.notna().any():
            ix = risk(r - idx, days_per_year)
            out.update({f"topk_index_ar_{kind}": ix["ar"], f"topk_index_ir_{kind}": ix["ir"]})
    return out
