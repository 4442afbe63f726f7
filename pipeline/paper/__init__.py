"""The paper's own numbers, kept as data, and ours beside them.

`published()` reads `published.csv` (Tables 1 and 2 of the MIGA paper, with their source in the
file's header); `beside(ours)` puts a frame of our (stockset, model, metric) means beside the
paper's, with our minus theirs. Used by the paper report (issue 21: `miga paper`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

PUBLISHED = Path(__file__).with_name("published.csv")
KEYS = ["stockset", "model", "metric"]
# The paper's metric names -> the flat metric keys of a run (pipeline.evaluation)
METRIC_KEYS = {"ic": "test_ic", "icir": "test_icir", "rank_ic": "test_rank_ic",
               "rank_icir": "test_rank_icir", "long_only_ar": "long_only_ar",
               "long_only_ir": "long_only_ir", "long_short_ar": "long_short_ar",
               "long_short_ir": "long_short_ir"}


def published() -> pd.DataFrame:
    """Columns table, stockset, model, metric (our flat metric key), mean, std."""
    df = pd.read_csv(PUBLISHED, comment="#")
    return df.assign(metric=df["metric"].map(METRIC_KEYS))


def beside(ours: pd.DataFrame) -> pd.DataFrame:
    """`ours` (columns stockset, model, metric, mean[, std]) joined to the paper's values on
    (stockset, model, metric): columns ours_mean, [ours_std,] paper_mean, paper_std and
    diff = ours - paper. Rows only one side has are kept, with NaN on the other."""
    theirs = published().drop(columns="table").rename(columns={"mean": "paper_mean", "std": "paper_std"})
    mine = ours.rename(columns={"mean": "ours_mean", "std": "ours_std"})
    out = mine.merge(theirs, on=KEYS, how="outer")
    out["diff"] = out["ours_mean"] - out["paper_mean"]
    return out.sort_values(KEYS, ignore_index=True)
