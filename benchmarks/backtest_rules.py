"""The test metrics of logged runs under the old backtest and under the tradable rule, side by side.

    .venv/bin/python benchmarks/backtest_rules.py [--home DIR] [--experiment miga] [--stockset csi300]

For every finished cell run (newest per model x stock set x seed), reads its logged
`predictions.parquet` and recomputes the test metrics three ways from the same scores:
  before  the first wave's backtest: stocks without a label dropped before ranking (a stock
          suspended or delisted on t+1 or t+2 is known in advance to be out), every pick
          bought, each earning its label;
  cash    the tradable rule (pipeline/evaluation/portfolio.py): every scored member ranked, a
          pick that cannot be bought on t+1 (no trade, limit-up open) kept in cash, a holding
          that cannot be sold on t+2 valued at its last traded price;
  next    the same, with an unbuyable pick passed to the next-ranked buyable name.
The IC columns are the same in all three (over the members with a label). Prints a table;
asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import tracking  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.evaluation import evaluate  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

COLUMNS = (("test_ic", "IC"), ("test_icir", "ICIR"), ("test_rank_ic", "RankIC"),
           ("long_only_ar", "LO AR"), ("long_only_ir", "LO IR"), ("long_short_ar", "LS AR"),
           ("long_short_ir", "LS IR"), ("long_only_ar_net", "LO AR net"), ("turnover", "turnover"),
           ("long_only_cash", "cash"))


def old_rule(pred: pd.DataFrame) -> pd.DataFrame:
    """The first wave's inputs: only labelled stocks, each buyable, earning its label."""
    p = pred[pred["label"].notna()]
    return p.assign(exec_ret=p["label"].astype("float64"), buy_ok=True, short_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None)
    ap.add_argument("--experiment", default="miga")
    ap.add_argument("--stockset", default=None, help="only this stock set")
    ap.add_argument("--config", default=None, help="the [backtest] values (default config)")
    args = ap.parse_args()
    settings = Settings.from_env(args.home)
    bt = load_config(args.config).backtest
    runs = tracking.finished_runs(settings, args.experiment) or []
    seen, rows = set(), []
    for r in runs:                                   # newest first
        t = r["tags"]
        key = (t.get("model"), t.get("stockset"), t.get("seed"))
        if None in key or key in seen or (args.stockset and key[1] != args.stockset):
            continue
        seen.add(key)
        pred = pd.read_parquet(tracking.download_artifact(settings, r["run_id"], "predictions.parquet"))
        if "exec_ret" not in pred:
            print(f"skipping {key}: its predictions have no execution columns (logged before the fix)")
            continue
        for name, p, cfg in (("before", old_rule(pred), replace(bt, untradable="cash")),
                             ("cash", pred, replace(bt, untradable="cash")),
                             ("next", pred, replace(bt, untradable="next"))):
            m, _, _ = evaluate(p, cfg)
            rows.append({"model": key[0], "stockset": key[1], "seed": key[2], "backtest": name,
                         **{title: m.get(k, float("nan")) for k, title in COLUMNS}})
    if not rows:
        print("no finished cell runs with execution columns in", settings.mlflow_uri)
        return
    df = pd.DataFrame(rows).sort_values(["stockset", "model", "seed", "backtest"], kind="stable")
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False))


if __name__ == "__main__":
    main()
