"""Figures 3-6 of the paper, as matplotlib Figures (Agg), from plain frames.

    curves          Figure 3: training loss and validation IC over the first epochs, each MIGA
                    variant against its end-to-end counterpart (mean over seeds, first stock set)
    expert_sweep    Figure 4: ICIR and RankICIR per groups x experts / top-k setting, a line
                    per stock set
    specialization  Figures 5 and 6: each expert's own excess return as heatmaps: stock sets x
                    experts (top), and long / short book per stock set x experts (bottom)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.plots import pyplot

COLORS = {"miga": "#c0392b", "base": "#2c3e50"}


def curves(history: pd.DataFrame, pairs: list[tuple[str, str]], epochs: int, title: str = ""):
    """history: columns model, seed, epoch, train_loss, valid_ic (one stock set). One column of
    panels per pair: the training loss on top, the validation IC below."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(pairs), figsize=(4.2 * len(pairs), 6), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.09, hspace=0.3, wspace=0.28)
    h = history[history["epoch"] <= epochs]
    for c, (miga, base) in enumerate(pairs):
        for row, (col, label) in enumerate((("train_loss", "training loss"), ("valid_ic", "validation IC"))):
            ax = axes[row, c]
            for model, color in ((miga, COLORS["miga"]), (base, COLORS["base"])):
                m = h[h["model"] == model].groupby("epoch")[col].mean()
                if len(m):
                    ax.plot(m.index, m.to_numpy(), marker="o", ms=3, color=color, label=model)
            ax.set_title(f"{miga} vs {base}: {label}", fontsize=9, loc="left")
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title or f"Figure 3: training loss and validation IC, first {epochs} epochs", fontsize=10)
    return fig


def expert_sweep(sweep: pd.DataFrame, title: str = ""):
    """sweep: columns setting ("7x9k8"), experts (G * E), stockset, test_icir, test_rank_icir.
    Settings in order of their expert count."""
    plt = pyplot()
    order = sweep.drop_duplicates("setting").sort_values(["experts", "setting"])["setting"].tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.2, wspace=0.25)
    x = np.arange(len(order))
    for ax, (col, label) in zip(axes[0], (("test_icir", "ICIR"), ("test_rank_icir", "RankICIR"))):
        for s, part in sweep.groupby("stockset", sort=False):
            v = part.groupby("setting")[col].mean().reindex(order)
            ax.plot(x, v.to_numpy(), marker="o", label=s)
        ax.set_xticks(x, [_setting_label(s) for s in order], fontsize=7)
        ax.set_title(f"test {label}", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title or "Figure 4: number of experts (top k of groups x experts)", fontsize=10)
    return fig


def _setting_label(setting: str) -> str:
    g, rest = setting.split("x")
    e, k = rest.split("k")
    return f"{k} of {int(g) * int(e)}\n({g}x{e})"


def specialization(table: pd.DataFrame, model: str, title: str = ""):
    """table: `experts.specialization` rows of every stock set (columns expert, stockset,
    long_only, long, short). Top: stock sets x experts; bottom: (long, short) x stock sets."""
    plt = pyplot()
    sets = list(dict.fromkeys(table["stockset"]))
    top = table.pivot(index="stockset", columns="expert", values="long_only").reindex(sets)
    bottom = pd.concat({side: table.pivot(index="stockset", columns="expert", values=side).reindex(sets)
                        for side in ("long", "short")})
    bottom.index = [f"{side} {s}" for side, s in bottom.index]
    n = top.shape[1]
    height = 2.2 + 0.4 * (len(sets) + len(bottom))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.16 * n + 2), height), squeeze=False,
                             gridspec_kw={"height_ratios": [len(sets), len(bottom)]})
    fig.subplots_adjust(left=0.12, right=0.92, top=1 - 0.5 / height, bottom=0.55 / height,
                        hspace=0.9 / (0.4 * (len(sets) + len(bottom))))
    for ax, frame, what in ((axes[0, 0], top, "stock specialization: long-only excess AR"),
                            (axes[1, 0], bottom, "portfolio specialization: excess AR per book")):
        v = frame.to_numpy(dtype=float)
        lim = np.nanmax(np.abs(v)) if np.isfinite(v).any() else 1.0
        im = ax.imshow(v, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_yticks(range(len(frame.index)), frame.index, fontsize=7)
        step = 1 if n <= 20 else 5
        ax.set_xticks(range(0, n, step), [str(c) for c in frame.columns[::step]], fontsize=6)
        ax.set_title(what, fontsize=9, loc="left")
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    axes[1, 0].set_xlabel("expert (group-major: expert = (g - 1) x E + e)", fontsize=7)
    fig.suptitle(title or f"Expert specialization of {model}", fontsize=10)
    return fig
