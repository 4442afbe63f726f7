"""Evaluation: every number a trained model is judged by, in one place.

    ic.py          daily IC / RankIC and their means and ICIRs (Table 1 of the paper)
    portfolio.py   the paper's daily long-only and long-short portfolios, costs, risk (Table 2)
    topk.py        TopkDropout: Qlib's strategy on a day-to-day account, net of costs
    evaluate()     all three over a predictions table, with the index benchmark: the metrics a
                   cell logs; with_execution() gives a predictions table the store's execution

The metric names that reports and tables show are defined here too (`TABLE1`, `TABLE2`,
`HEADLINE`), so a report never spells a metric another way than the cell that logged it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import BacktestConfig
from pipeline.evaluation.ic import daily_ic, ic_metrics, ic_summary
from pipeline.evaluation.portfolio import (add_index, index_returns, portfolio_metrics,
                                           portfolio_returns)
from pipeline.evaluation.topk import topk_account, topk_metrics

SEGMENTS = ("valid", "test")   # the segments a cell is evaluated on
# (metric key, column title) of the paper's tables, in the paper's order.
TABLE1 = (("test_ic", "IC"), ("test_icir", "ICIR"), ("test_rank_ic", "RankIC"),
          ("test_rank_icir", "RankICIR"))
TABLE2 = (("long_only_ar", "LO AR"), ("long_only_ir", "LO IR"), ("long_short_ar", "LS AR"),
          ("long_short_ir", "LS IR"))
# The TopkDropout account (topk.py), net of costs: what `miga report` shows beside Table 2.
TABLE_NET = (("topk_excess_ar_net", "TK excess"), ("topk_ir_net", "TK IR"),
             ("topk_ar_net", "TK AR"), ("topk_excess_ar_gross", "TK gross excess"),
             ("topk_turnover", "TK turnover"), ("topk_cost_drag", "TK cost"))
HEADLINE = tuple(k for k, _ in TABLE1 + TABLE2)     # what a results table shows per cell
SUMMARY = HEADLINE + ("long_only_mdd", "turnover", "long_only_ar_net", "topk_excess_ar_net",
                      "valid_ic")  # a run's printout
# The predictions table's columns (a cell's predictions.parquet): the store's execution facts
# of each stock-day (pipeline/store/arrays.py) beside the scores.
PREDICTION_COLUMNS = ("date", "instrument", "score", "label", "segment", "exec_ret", "buy_ok",
                      "short_ok", "hold_ret", "sell_ok", "at_limit")

__all__ = ["HEADLINE", "PREDICTION_COLUMNS", "SUMMARY", "TABLE1", "TABLE2", "TABLE_NET",
           "add_index", "daily_ic", "evaluate", "ic_metrics", "ic_summary", "index_benchmark",
           "index_returns", "portfolio_metrics", "portfolio_returns", "topk_account",
           "topk_metrics", "topk_params", "with_execution"]


def evaluate(pred: pd.DataFrame, backtest: BacktestConfig, index_ret: pd.Series | None = None):
    """Metrics from a predictions table (date, instrument, score, label, segment, and from a
    store exec_ret, buy_ok, short_ok: the backtest's tradable rule, `portfolio.py`).

    Returns (metrics, daily IC of test, daily portfolio returns of test). Tests recompute the
    logged metrics with this function from `predictions.parquet`."""
    metrics: dict[str, float] = {}
    parts = {seg: pred[pred["segment"] == seg] for seg in SEGMENTS}
    daily = {seg: daily_ic(part) for seg, part in parts.items() if not part.empty}
    for seg, d in daily.items():
        metrics.update({f"{seg}_{k}": v for k, v in ic_summary(d).items()})
    test, test_daily = parts["test"], daily.get("test")
    rets = add_index(portfolio_returns(test, top_frac=backtest.top_frac, buy_cost=backtest.buy_cost,
                                       sell_cost=backtest.sell_cost,
                                       untradable=backtest.untradable), index_ret)
    metrics.update(portfolio_metrics(rets, backtest.days_per_year))
    acct = topk_account(test, **topk_params(backtest))
    metrics.update(topk_metrics(acct, rets["bench"], index_ret, backtest.days_per_year))
    return metrics, test_daily, rets


def topk_params(backtest: BacktestConfig) -> dict:
    """`topk_account`'s keyword arguments from the config's [backtest]."""
    return {k: getattr(backtest, k) for k in ("topk", "n_drop", "buy_cost", "sell_cost",
                                              "min_cost", "account", "risk_degree",
                                              "forbid_all_trade_at_limit")}


def with_execution(pred: pd.DataFrame, store) -> pd.DataFrame:
    """`pred` (day_idx, inst_idx, date, instrument, score, label, segment) plus the store's
    execution facts of each stock-day (exec_ret, buy_ok, short_ok: the paper portfolio's
    tradable rule; hold_ret, sell_ok, at_limit: the TopkDropout account's), and, per segment,
    a row with no score (NaN) for each stock scored earlier in the segment that has no score on
    a day (suspended, or out of the stock set) but trades on t+1 or t+2: the account may still
    hold it, and values and sells it from these rows. The IC and the paper's portfolios drop
    rows without a score."""
    parts = [pred]
    tr, labels = np.asarray(store.traded), np.asarray(store.labels)
    segments = pred.groupby("segment", sort=False) if "segment" in pred else [(None, pred)]
    for seg, part in segments:
        days = np.unique(part["day_idx"].to_numpy())
        insts = np.unique(part["inst_idx"].to_numpy())
        scored = np.zeros((len(days), len(insts)), bool)     # (segment days, its stocks)
        scored[np.searchsorted(days, part["day_idx"]), np.searchsorted(insts, part["inst_idx"])] = True
        seen = np.logical_or.accumulate(scored, axis=0)
        ahead = np.zeros((len(days), len(insts)), bool)
        for k in (1, 2):
            ok = days + k < len(tr)
            ahead[ok] |= tr[days[ok] + k][:, insts]
        a, b = np.nonzero(seen & ~scored & ahead)
        di, ji = days[a], insts[b]
        parts.append(pd.DataFrame({
            "day_idx": di, "inst_idx": ji, "date": pd.to_datetime(store.dates[di]),
            "instrument": store.instruments[ji], "score": np.full(len(di), np.nan, np.float32),
            "label": labels[di, ji], **({"segment": seg} if seg else {})}))
    out = pd.concat(parts, ignore_index=True)
    di, ji = out["day_idx"].to_numpy(), out["inst_idx"].to_numpy()
    ex = store.execution
    return out.assign(**{k: np.asarray(ex[k][di, ji]) for k in ex})


def index_benchmark(settings, stockset: str, dates) -> pd.Series | None:
    """Index returns of `stockset` with the label's timing, from the warehouse's `index_prices`;
    None when the warehouse has none (the benchmark is optional: the members' mean remains)."""
    import duckdb

    from pipeline.errors import MigaError
    from pipeline.warehouse import run_sql, table_exists, warehouse

    try:  # no warehouse (MigaError), or one locked by a writer or unreadable (duckdb.Error)
        with warehouse(settings, read_only=True) as con:
            if not table_exists(con, "index_prices"):
                return None
            df = run_sql(con, "backtest/index_close", {"index_name": stockset}).df()
    except (duckdb.Error, MigaError):
        return None
    if df.empty:
        return None
    closes = pd.Series(df["close"].to_numpy(), index=pd.to_datetime(df["date"]))
    return index_returns(closes, dates)
