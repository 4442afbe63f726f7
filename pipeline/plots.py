"""Run plots (matplotlib, Agg backend: no display needed). Each function writes one PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cumulative_returns(returns: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Cumulative (summed, Qlib-style) excess return of long-only and long-short portfolios."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = pd.to_datetime(returns.index)
    series = [("excess", "long-only - equal-weighted members"),
              ("excess_net", "long-only - members, after costs"),
              ("long_short", "long-short")]
    if "excess_index" in returns and returns["excess_index"].notna().any():
        series.append(("excess_index", "long-only - index"))
    for col, label in series:
        ax.plot(x, returns[col].fillna(0).cumsum(), label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(title or "cumulative excess return (test)")
    ax.set_ylabel("cumulative return (sum of daily)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(plt, fig, path, dates=True)


def _save(plt, fig, path: Path, dates: bool = False, **margins) -> Path:
    # Fixed margins, not tight_layout: that measures every label, a large share of the
    # time of a plot, and a run draws four (figures in benchmarks/bench_pipeline.py).
    fig.subplots_adjust(**{"left": 0.08, "right": 0.98, "top": 0.9, "bottom": 0.1, **margins})
    if dates:
        fig.autofmt_xdate()   # rotated date labels, bottom margin 0.2
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def daily_ic(daily: pd.DataFrame, path: Path, window: int = 20, title: str = "") -> Path:
    """Daily IC bars with their rolling mean."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    x = pd.to_datetime(daily.index)
    # One LineCollection instead of a bar per day: the same picture, without one artist per day.
    ax.vlines(x, 0, daily["ic"].fillna(0), color="lightsteelblue", lw=1.5, label="daily IC")
    ax.plot(x, daily["ic"].rolling(window, min_periods=1).mean(), color="navy",
            label=f"{window}-day mean")
    ax.axhline(daily["ic"].mean(), color="darkred", lw=0.8, ls="--", label="mean")
    ax.set_title(title or "daily IC (test)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(plt, fig, path, dates=True)


def expert_usage(usage: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Heatmap: rows stock sets, columns experts (group-major), cells mean routing weight."""
    plt = _plt()
    names = list(usage)
    mat = np.stack([np.asarray(usage[n]).ravel() for n in names])      # (sets, G*E)
    g, e = np.asarray(usage[names[0]]).shape
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * mat.shape[1] + 2), 0.6 * len(names) + 1.8))
    im = ax.imshow(mat, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"expert (group x {e} experts, {g} groups)")
    for k in range(1, g):
        ax.axvline(k * e - 0.5, color="white", lw=0.5)
    fig.colorbar(im, ax=ax, label="mean routing weight")
    ax.set_title(title or "expert usage by stock set (test)")
    return _save(plt, fig, path, left=0.1, right=1.0, bottom=0.22, top=0.85)


def training_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Training loss and train/validation IC per epoch."""
    plt = _plt()
    h = pd.DataFrame(history)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(h["epoch"], h["train_loss"], marker="o")
    a1.set_title("train loss")
    for col in ("train_ic", "valid_ic", "valid_rank_ic"):
        a2.plot(h["epoch"], h[col], marker="o", label=col)
    a2.set_title("IC")
    a2.legend(fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path, top=0.82, bottom=0.12, wspace=0.25)
