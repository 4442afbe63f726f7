"""Ranking metrics over a prediction table: daily IC and RankIC, their means and ICIRs.

Part of `pipeline.evaluation`; `pipeline.train` reads the validation IC from here.

The input is a long table with one row per (date, instrument): `score` and `label`. Rows
without a label (NaN) are dropped; each day's correlation is over the rest. A day with fewer
than two labelled stocks, or with a constant score or label, has no IC (NaN) and is left out
of the means, as Qlib does.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

IC_METRICS = ("ic", "icir", "rank_ic", "rank_icir")


def _pearson_by_day(df: pd.DataFrame, a: str, b: str) -> pd.Series:
    """Pearson correlation of columns a and b within each date, from group sums (vectorised)."""
    g = df.groupby("date", sort=True)
    n = g[a].count()
    ma, mb = g[a].transform("mean"), g[b].transform("mean")
    da, db = df[a] - ma, df[b] - mb
    tmp = pd.DataFrame({"date": df["date"], "ab": da * db, "aa": da * da, "bb": db * db})
    s = tmp.groupby("date", sort=True)[["ab", "aa", "bb"]].sum()
    denom = np.sqrt(s["aa"] * s["bb"])
    ic = s["ab"] / denom.where(denom > 0)
    return ic.where(n >= 2)


def daily_ic(pred: pd.DataFrame) -> pd.DataFrame:
    """Per-day IC (Pearson) and RankIC (Spearman) of `score` vs `label`.

    pred: columns date, score, label (others ignored). Returns a frame indexed by date with
    columns `ic`, `rank_ic`, `n` (labelled stocks that day).
    """
    df = pred.loc[pred["label"].notna() & pred["score"].notna(), ["date", "score", "label"]]
    df = df.reset_index(drop=True).astype({"score": "float64", "label": "float64"})  # float32 in
    ranks = df.groupby("date", sort=True)[["score", "label"]].rank(method="average")
    ranked = pd.DataFrame({"date": df["date"], "score": ranks["score"], "label": ranks["label"]})
    out = pd.DataFrame({
        "ic": _pearson_by_day(df, "score", "label"),
        "rank_ic": _pearson_by_day(ranked, "score", "label"),
        "n": df.groupby("date", sort=True).size(),
    })
    out.index.name = "date"
    return out


def _ir(x: pd.Series) -> float:
    x = x.dropna()
    if len(x) < 2:
        return float("nan")
    sd = x.std(ddof=1)
    return float(x.mean() / sd) if sd > 0 else float("nan")


def ic_summary(daily: pd.DataFrame) -> dict[str, float]:
    """Means of the daily IC and RankIC, and ICIR / RankICIR = mean / std (ddof=1)."""
    return {
        "ic": float(daily["ic"].mean()),
        "icir": _ir(daily["ic"]),
        "rank_ic": float(daily["rank_ic"].mean()),
        "rank_icir": _ir(daily["rank_ic"]),
    }


def ic_metrics(pred: pd.DataFrame) -> dict[str, float]:
    """`ic_summary(daily_ic(pred))`: ic, icir, rank_ic, rank_icir."""
    return ic_summary(daily_ic(pred))
