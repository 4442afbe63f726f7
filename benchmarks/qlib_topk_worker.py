"""Qlib's own TopkDropout backtest, run by benchmarks/bench_topk_qlib.py in Qlib's venv.

    .venv-qlib/bin/python benchmarks/qlib_topk_worker.py PROVIDER SIGNAL.parquet PARAMS.json OUT.parquet

SIGNAL: date, instrument, score (the score of day t, which Qlib trades on t+1). PARAMS: start,
end, codes, topk, n_drop, risk_degree, account, open_cost, close_cost, min_cost, trade_unit
(null: no rounding), benchmark. OUT: Qlib's daily report (return, cost, turnover, account, ...).
"""
from __future__ import annotations

import json
import sys

import pandas as pd


def main() -> None:
    provider, signal_path, params_path, out_path = sys.argv[1:5]
    import qlib
    from qlib.backtest import backtest, executor
    from qlib.contrib.strategy import TopkDropoutStrategy

    p = json.loads(open(params_path).read())
    qlib.init(provider_uri=provider, region="cn", expression_cache=None, dataset_cache=None,
              kernels=1)
    sig = pd.read_parquet(signal_path)
    sig["datetime"] = pd.to_datetime(sig.pop("date"))
    signal = sig.set_index(["datetime", "instrument"])["score"].sort_index()
    strategy = TopkDropoutStrategy(signal=signal, topk=p["topk"], n_drop=p["n_drop"],
                                   risk_degree=p["risk_degree"], only_tradable=False,
                                   forbid_all_trade_at_limit=True)
    ex = executor.SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True)
    exchange_kwargs = {"freq": "day", "codes": p["codes"], "deal_price": "vwap",
                       "open_cost": p["open_cost"], "close_cost": p["close_cost"],
                       "min_cost": p["min_cost"], "trade_unit": p["trade_unit"],
                       # the store's open-at-limit flags (1.0 = at the limit), not Qlib's
                       # close-to-close $change threshold
                       "limit_threshold": ("$limitup", "$limitdown")}
    portfolio, _ = backtest(start_time=p["start"], end_time=p["end"], strategy=strategy,
                            executor=ex, account=p["account"], benchmark=p["benchmark"],
                            exchange_kwargs=exchange_kwargs)
    report, _ = portfolio["1day"]
    report.index.name = "date"
    report.reset_index().to_parquet(out_path, index=False)


if __name__ == "__main__":
    main()
