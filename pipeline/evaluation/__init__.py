"""Evaluation: every number a trained model is judged by, in one place.

    ic.py          daily IC / RankIC and their means and ICIRs (Table 1 of the paper)
    portfolio.py   the paper's daily long-only and long-short portfolios, costs, risk (Table 2)
    evaluate()     both over a predictions table, with the index benchmark: the metrics a cell logs

The metric names that reports and tables show are defined here too (`TABLE1`, `TABLE2`,
`HEADLINE`), so a report never spells a metric another way than the cell that logged it.
"""
from __future__ import annotations

import pandas as pd

from pipeline.config import BacktestConfig
from pipeline.evaluation.ic import daily_ic, ic_metrics, ic_summary
from pipeline.evaluation.portfolio import (add_index, index_returns, portfolio_metrics,
                                           portfolio_returns)

SEGMENTS = ("valid", "test")   # the segments a cell is evaluated on
# (metric key, column title) of the paper's tables, in the paper's order.
TABLE1 = (("test_ic", "IC"), ("test_icir", "ICIR"), ("test_rank_ic", "RankIC"),
          ("test_rank_icir", "RankICIR"))
TABLE2 = (("long_only_ar", "LO AR"), ("long_only_ir", "LO IR"), ("long_short_ar", "LS AR"),
          ("long_short_ir", "LS IR"))
HEADLINE = tuple(k for k, _ in TABLE1 + TABLE2)     # what a results table shows per cell
SUMMARY = HEADLINE + ("long_only_mdd", "turnover", "long_only_ar_net", "valid_ic")  # a run's printout

__all__ = ["HEADLINE", "SUMMARY", "TABLE1", "TABLE2", "add_index", "daily_ic", "evaluate",
           "ic_metrics", "ic_summary", "index_benchmark", "index_returns", "portfolio_metrics",
           "portfolio_returns"]


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
    return metrics, test_daily, rets


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
