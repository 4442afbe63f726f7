"""Run plots (matplotlib, Agg backend: no display needed). Each function returns one Figure;
`pipeline.cell` logs it with `tracking.log_figure` (plots/<name>.png), which closes it.

    cumulative_returns  Qlib's report graph (analysis_position.report_graph): the benchmark's
                        and the long-only book's cumulative returns without and with costs, the
                        excess over the benchmark, its drawdown, long-short, turnover
    daily_ic            daily IC and RankIC bars with their rolling mean, their histogram, and
                        a year x month heatmap of the mean daily IC
    expert_usage        MIGA's mean routing weights as a groups x experts grid per stock set,
                        and each set's difference from the mean over sets
    training_curves     train loss and train / valid IC per epoch, the best epoch marked

Cumulative returns are sums of daily returns, as Qlib's reports draw them (and as
`pipeline.evaluation.portfolio.risk` measures the drawdown). Margins are fixed, not
tight_layout: that measures every label, a large share of a plot's time
(benchmarks/bench_pipeline.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation.portfolio import risk

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def period(index) -> str:
    """'first..last' day of a date index (YYYY-MM-DD), '' when empty."""
    idx = pd.DatetimeIndex(pd.to_datetime(index))
    return f"{idx.min():%Y-%m-%d}..{idx.max():%Y-%m-%d}" if len(idx) else ""


def _dates(ax) -> None:
    """Short date labels, not rotated (no extra bottom margin)."""
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _title(ax, text: str, fontsize: float = 9, loc: str = "left") -> None:
    # y given: matplotlib skips placing the title above the axis' tick labels, which measures
    # them all (a third of a multi-panel figure's drawing time)
    ax.set_title(text, fontsize=fontsize, loc=loc, y=1.0, pad=4)


def _heading(run: str, what: str) -> str:
    return f"{run} — {what}" if run else what


def _stats(r: pd.Series, days_per_year: int | None) -> str:
    """'AR x%, IR y, MDD z%' of daily returns r (Qlib's sum mode, as the logged metrics)."""
    s = risk(r, days_per_year or 1)
    mdd = f"MDD {s['mdd']:+.1%}"
    if not days_per_year:
        return f"sum {r.fillna(0).sum():+.1%}, {mdd}"
    return f"AR {s['ar']:+.1%}, IR {s['ir']:.2f}, {mdd}"


def _cum(r: pd.Series) -> pd.Series:
    return r.fillna(0.0).cumsum()


def cumulative_returns(returns: pd.DataFrame, run: str = "", *, universe: str | None = None,
                       top_frac: float | None = None, buy_cost: float | None = None,
                       sell_cost: float | None = None, days_per_year: int | None = None):
    """Qlib's report graph of the daily portfolio returns (`pipeline.evaluation.portfolio`).

    returns: indexed by date, columns long, short, long_short, bench (the equal-weighted book
    of the day's members), excess (long - bench), excess_net (after costs), turnover, cash,
    and optionally cost (else excess - excess_net), index and excess_index (long - index). Panels, x = trading day:
    1. cumulative benchmark(s) (members; index when given) and long-only without / with cost;
    2. cumulative excess over the members (and the index) without / with cost, the span of
       its maximum drawdown shaded; 3. drawdown of the cumulative excess (<= 0);
    4. cumulative long-short (long top minus short bottom); 5. daily turnover (weight bought).
    universe, top_frac, costs, days_per_year: only for the title and the legend's statistics.
    """
    plt = pyplot()
    r = returns
    x = pd.to_datetime(r.index)
    cost = r["cost"] if "cost" in r else r["excess"] - r["excess_net"]
    has_index = "index" in r and r["index"].notna().any()
    top = f"{top_frac * 100:g}%" if top_frac is not None else None    # 0.025 -> 2.5%
    book = f"long-only top {top}" if top else "long-only"
    vs = f"{universe} members" if universe else "members"
    vs += " and index" if has_index else ""
    costs = (f"; costs {buy_cost:.2%} buy / {sell_cost:.2%} sell of the weight traded"
             if buy_cost is not None and sell_cost is not None else "")
    fig, axes = plt.subplots(5, 1, figsize=(10, 12.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2.4, 1.3, 1.8, 1.2]})
    a_ret, a_ex, a_dd, a_ls, a_to = axes
    fig.suptitle(_heading(run, f"test {period(r.index)}, {book} (equal-weighted) vs {vs}")
                 + f"\ncumulative = sum of daily returns (Qlib){costs}", fontsize=10)

    # 1. the book and its benchmark(s)
    a_ret.plot(x, _cum(r["bench"]), color="grey", label=f"benchmark: {vs.removesuffix(' and index')}, "
               f"equal-weighted ({_stats(r['bench'], days_per_year)})")
    if has_index:
        a_ret.plot(x, _cum(r["index"]), color="black", ls="--", lw=1,
                   label=f"benchmark: {universe or ''} index ({_stats(r['index'], days_per_year)})")
    a_ret.plot(x, _cum(r["long"]), color="C0",
               label=f"{book} w/o cost ({_stats(r['long'], days_per_year)})")
    a_ret.plot(x, _cum(r["long"] - cost), color="C3",
               label=f"{book} with cost ({_stats(r['long'] - cost, days_per_year)})")
    a_ret.set_ylabel("cum. return\n(sum of daily)")
    _title(a_ret, "cumulative return")

    # 2. excess over the benchmark, 3. its drawdown
    ex = [("excess", r["excess"], "C0", "-"), ("excess_net", r["excess_net"], "C3", "-")]
    labels = {"excess": "vs members, w/o cost", "excess_net": "vs members, with cost"}
    if "excess_index" in r and r["excess_index"].notna().any():
        ex += [("excess_index", r["excess_index"], "C0", ":"),
               ("excess_index_net", r["excess_index"] - cost, "C3", ":")]
        labels.update(excess_index="vs index, w/o cost", excess_index_net="vs index, with cost")
    for key, s, c, ls in ex:
        a_ex.plot(x, _cum(s), color=c, ls=ls, label=f"{labels[key]} ({_stats(s, days_per_year)})")
        cum = _cum(s)
        a_dd.plot(x, cum - cum.cummax(), color=c, ls=ls, lw=1, label=labels[key])
    cum = _cum(r["excess"])
    dd = cum - cum.cummax()
    if len(dd) and dd.min() < 0:    # Qlib shades the span of the maximum drawdown
        end = dd.idxmin()
        start = cum.loc[:end].idxmax()
        a_ex.axvspan(pd.Timestamp(start), pd.Timestamp(end), color="C0", alpha=0.08,
                     label="max drawdown, vs members w/o cost")
    a_dd.fill_between(x, dd.to_numpy(), 0.0, color="C0", alpha=0.15, lw=0)
    a_ex.axhline(0, color="grey", lw=0.5)
    a_ex.set_ylabel("cum. excess\n(sum of daily)")
    _title(a_ex, f"excess return of the {book} book")
    a_dd.set_ylabel("drawdown\nof cum. excess")
    _title(a_dd, "drawdown of the cumulative excess (cum - running max)")

    # 4. long-short on its own axis
    a_ls.plot(x, _cum(r["long_short"]), color="C2",
              label=f"long-short w/o cost ({_stats(r['long_short'], days_per_year)})")
    a_ls.axhline(0, color="grey", lw=0.5)
    a_ls.set_ylabel("cum. return\n(sum of daily)")
    _title(a_ls, f"long-short: top minus bottom {top or 'group'}")

    # 5. turnover
    to = r["turnover"].fillna(0.0)
    a_to.vlines(x, 0, to.to_numpy(), color="C4", lw=1.2)
    a_to.axhline(to.mean(), color="black", lw=0.8, ls="--", label=f"mean {to.mean():.1%} a day")
    cash = f", mean cash {r['cash'].mean():.1%} (picks not bought)"
    # the first day buys the whole book from cash: left off the scale of the days after it
    ymax = max(float(to.iloc[1:].max()) if len(to) > 1 else float(to.max()), 1e-3) * 1.15
    first = f"; first day {to.iloc[0]:.0%} (buys the book) off the scale" if to.iloc[0] > ymax else ""
    _title(a_to, f"daily turnover of the long book (weight bought){cash}{first}")
    a_to.set_ylabel("turnover")
    a_to.set_ylim(0, ymax)

    for ax in axes:
        ax.legend(loc="upper left", fontsize=7, framealpha=0.7)
        ax.grid(alpha=0.25, lw=0.5)
    _dates(a_to)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.04, hspace=0.32)
    return fig


def _ic_bars(ax, x, s: pd.Series, window: int, name: str) -> None:
    v = s.to_numpy(dtype=float)
    ok = np.isfinite(v)
    # One LineCollection per sign instead of a bar per day: the same picture, far fewer artists.
    pos, neg = ok & (v >= 0), ok & (v < 0)
    ax.vlines(x[pos], 0, v[pos], color="#7fb3d5", lw=1.2, label=f"daily {name}")
    ax.vlines(x[neg], 0, v[neg], color="#f1948a", lw=1.2)
    ax.plot(x, s.rolling(window, min_periods=1).mean(), color="navy", lw=1.3,
            label=f"{window}-day rolling mean")
    m = s.mean()
    ax.axhline(m, color="darkred", lw=0.9, ls="--", label=f"mean {m:.4f}")
    ax.axhline(0, color="grey", lw=0.5)
    sd = s.std(ddof=1)
    ir = m / sd if sd and sd > 0 else float("nan")
    _title(ax, f"daily {name}: mean {m:.4f}, {name}IR {ir:.2f}, {name} > 0 on "
                 f"{(s.dropna() > 0).mean():.0%} of {s.notna().sum()} days")
    ax.set_ylabel(name)
    ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.7)
    ax.grid(alpha=0.25, lw=0.5)


def monthly_ic(daily: pd.DataFrame, col: str = "ic") -> pd.DataFrame:
    """Mean daily `col` per calendar month: years (rows) x 1..12 (columns), NaN without days."""
    s = daily[col]
    idx = pd.DatetimeIndex(pd.to_datetime(daily.index))
    m = s.groupby([idx.year, idx.month]).mean().unstack()
    return m.reindex(columns=range(1, 13))


def daily_ic(daily: pd.DataFrame, run: str = "", window: int = 20):
    """One figure: daily IC and daily RankIC (bars, `window`-day rolling mean, mean line), the
    histogram of the daily IC and RankIC, and the mean daily IC per month (years x months,
    diverging colours centred at 0). daily: indexed by date, columns ic, rank_ic
    (`pipeline.evaluation.ic.daily_ic`)."""
    plt = pyplot()
    from matplotlib.colors import Normalize

    x = np.asarray(pd.to_datetime(daily.index))
    fig = plt.figure(figsize=(10, 10))
    gs = fig.add_gridspec(3, 2, height_ratios=[1, 1, 1.15], width_ratios=[1, 1.5])
    a_ic = fig.add_subplot(gs[0, :])
    a_rk = fig.add_subplot(gs[1, :], sharex=a_ic)
    a_h = fig.add_subplot(gs[2, 0])
    a_m = fig.add_subplot(gs[2, 1])
    fig.suptitle(_heading(run, f"test {period(daily.index)}: daily IC and RankIC")
                 + "\nIC: Pearson, RankIC: Spearman correlation of score and label across each "
                 "day's members", fontsize=10)
    _ic_bars(a_ic, x, daily["ic"], window, "IC")
    _ic_bars(a_rk, x, daily["rank_ic"], window, "RankIC")
    _dates(a_rk)
    a_ic.tick_params(labelbottom=False)

    ic, rk = daily["ic"].dropna(), daily["rank_ic"].dropna()
    if len(ic):
        bins = min(40, max(10, len(ic) // 10))
        a_h.hist(ic, bins=bins, color="#7fb3d5", label="IC")
        a_h.hist(rk, bins=bins, histtype="step", color="black", lw=1, label="RankIC")
        a_h.axvline(ic.mean(), color="darkred", ls="--", lw=0.9, label=f"mean IC {ic.mean():.4f}")
    a_h.axvline(0, color="grey", lw=0.5)
    _title(a_h, "distribution of the daily IC and RankIC")
    a_h.set_xlabel("daily IC")
    a_h.set_ylabel("days")
    a_h.legend(fontsize=7, loc="upper left")

    mon = monthly_ic(daily, "ic")
    vals = mon.to_numpy(dtype=float)
    lim = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 0.0
    lim = lim if lim > 0 else 1e-3
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#eeeeee")   # months without a day: grey
    im = a_m.imshow(np.ma.masked_invalid(vals), cmap=cmap, norm=Normalize(-lim, lim), aspect="auto")
    a_m.set_xticks(range(12), MONTHS, fontsize=7)
    year_mean = daily["ic"].groupby(pd.DatetimeIndex(pd.to_datetime(daily.index)).year).mean()
    a_m.set_yticks(range(len(mon)), [f"{y}\n({year_mean.get(y, np.nan):+.3f})" for y in mon.index],
                   fontsize=7)
    if vals.size <= 12 * 12:        # a value per cell while they stay legible
        for i, j in zip(*np.nonzero(np.isfinite(vals))):
            a_m.text(j, i, f"{vals[i, j]:+.3f}".replace("0.", "."), ha="center", va="center",
                     fontsize=6)
    fig.colorbar(im, ax=a_m, label="mean daily IC", fraction=0.05, pad=0.02)
    _title(a_m, "mean daily IC per month (year: its mean)")
    fig.subplots_adjust(left=0.08, right=0.93, top=0.91, bottom=0.06, hspace=0.38, wspace=0.22)
    return fig


def expert_usage(usage: dict[str, np.ndarray], run: str = ""):
    """MIGA's mean routing weight of each expert over the members of each stock set.

    usage: stock set -> (G, E) mean routing weights (`pipeline.train.expert_usage`). Top row, one
    G x E grid per set (rows groups, columns experts), one colour scale centred at the uniform
    weight 1/(G*E): each stock's weights sum to 1 over the G*E experts (softmax over its top-k
    routing logits, zero elsewhere: `pipeline.models.miga.route_topk`), so their mean over the
    members does too, and an even use of the experts gives every cell 1/(G*E). Second row (two
    or more sets): each set minus the mean over the sets, on one scale centred at 0 — where the
    stock sets route differently (the paper's claim: experts specialise by stock style).
    """
    plt = pyplot()
    from matplotlib.colors import Normalize, TwoSlopeNorm

    names = list(usage)
    mats = [np.asarray(usage[n], dtype=float) for n in names]
    g, e = mats[0].shape
    uniform = 1.0 / (g * e)
    rows = 2 if len(names) > 1 else 1
    width = max(7.0, max(2.6, 0.32 * e + 0.6) * len(names) + 2.0)
    height = rows * (0.3 * g + 1.4) + 1.0
    fig, axes = plt.subplots(rows, len(names), figsize=(width, height), squeeze=False)
    # before the colorbars, which take their room from these axes
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.0 / width, top=1 - 0.75 / height,
                        bottom=0.5 / height, hspace=0.3, wspace=0.15)
    fig.suptitle(_heading(run, f"expert usage ({g} groups x {e} experts)") + "\nmean routing "
                 f"weight over the test members of each stock set", fontsize=10)
    top = max(max(float(m.max()) for m in mats), 2 * uniform)
    norm = TwoSlopeNorm(vcenter=uniform, vmin=0.0, vmax=top)
    im = None
    for k, (n, m) in enumerate(zip(names, mats)):
        ax = axes[0, k]
        im = ax.imshow(m, cmap="RdBu_r", norm=norm, aspect="auto")
        p = m.ravel() / m.sum() if m.sum() > 0 else m.ravel()
        p = p[p > 0]
        eff = float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0
        _title(ax, f"{n}: effective experts {eff:.1f} of {g * e}", fontsize=8, loc="center")
        _grid_ticks(ax, g, e, x_labelled=rows == 1, y_labelled=k == 0)
    cb = fig.colorbar(im, ax=axes[0, :].tolist(), fraction=0.03, pad=0.02,
                      label=f"mean weight (white = uniform 1/{g * e})")
    cb.set_ticks([0.0, uniform, (uniform + top) / 2, top],
                 labels=["0", f"1/{g * e}", f"{(uniform + top) / 2:.3f}", f"{top:.3f}"])
    if rows == 2:
        mean = np.mean(mats, axis=0)
        diffs = [m - mean for m in mats]
        lim = max(float(np.abs(d).max()) for d in diffs) or 1e-6
        dn = Normalize(-lim, lim)
        for k, (n, d) in enumerate(zip(names, diffs)):
            ax = axes[1, k]
            im2 = ax.imshow(d, cmap="PuOr_r", norm=dn, aspect="auto")
            _title(ax, f"{n} - mean over sets", fontsize=8, loc="center")
            _grid_ticks(ax, g, e, x_labelled=True, y_labelled=k == 0)
        fig.colorbar(im2, ax=axes[1, :].tolist(), fraction=0.03, pad=0.02, label="weight difference")
    return fig


def _grid_ticks(ax, g: int, e: int, x_labelled: bool, y_labelled: bool) -> None:
    """Experts on the bottom row's x axes, groups on the first column's y axes; none elsewhere
    (the grids share them, and every tick is an artist to draw)."""
    if x_labelled:
        ax.set_xticks(range(e), [str(j + 1) for j in range(e)], fontsize=6)
        ax.set_xlabel("expert", fontsize=7)
    else:
        ax.set_xticks([])
    if y_labelled:
        ax.set_yticks(range(g), [f"group {i + 1}" for i in range(g)], fontsize=6)
    else:
        ax.set_yticks([])
    # cell borders: two LineCollections (minor-tick grid lines cost an artist per tick)
    ax.vlines(np.arange(0.5, e - 1), -0.5, g - 0.5, color="white", lw=0.5)
    ax.hlines(np.arange(0.5, g - 1), -0.5, e - 0.5, color="white", lw=0.5)


def training_curves(history: list[dict], run: str = "", best_epoch: int | None = None):
    """Per epoch (integer x ticks): train loss, train / valid IC and valid RankIC, and MIGA's
    routing entropy when recorded; the best epoch (the weights kept) a vertical line on each."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    h = pd.DataFrame(history)
    has_ent = "expert_entropy" in h and h["expert_entropy"].notna().any()
    n = 3 if has_ent else 2
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8))
    best = ""
    if best_epoch and "valid_ic" in h and (h["epoch"] == best_epoch).any():
        vic = h.loc[h["epoch"] == best_epoch, "valid_ic"].iloc[0]
        best = f", best epoch {best_epoch} (valid IC {vic:.4f})"
    elif best_epoch:
        best = f", best epoch {best_epoch}"
    epochs = f"{len(h)} epoch{'s' if len(h) != 1 else ''}"
    fig.suptitle(_heading(run, f"training: {epochs}{best}"), fontsize=10)
    a1, a2 = axes[0], axes[1]
    if "train_loss" in h:
        a1.plot(h["epoch"], h["train_loss"], marker="o", ms=3, label="train loss")
    if "valid_loss" in h and h["valid_loss"].notna().any():
        a1.plot(h["epoch"], h["valid_loss"], marker="o", ms=3, label="valid loss")
    _title(a1, "loss", loc="center")
    a1.set_ylabel("loss")
    for col, label in (("train_ic", "train IC"), ("valid_ic", "valid IC"),
                       ("valid_rank_ic", "valid RankIC")):
        if col in h:
            a2.plot(h["epoch"], h[col], marker="o", ms=3, label=label)
    a2.axhline(0, color="grey", lw=0.5)
    _title(a2, "IC (daily mean)", loc="center")
    a2.set_ylabel("IC")
    if has_ent:
        a3 = axes[2]
        a3.plot(h["epoch"], h["expert_entropy"], marker="o", ms=3, color="C4",
                label="routing entropy (valid)")
        _title(a3, "expert usage entropy (nats)", loc="center")
        a3.set_ylabel("nats")
    for ax in axes:
        if best_epoch:
            ax.axvline(best_epoch, color="darkred", ls="--", lw=1, label=f"best epoch {best_epoch}")
        if len(h) <= 20:            # every epoch a tick (MaxNLocator gives 0.995 for one epoch)
            ax.set_xticks(h["epoch"].tolist())
            ax.set_xlim(h["epoch"].min() - 0.5, h["epoch"].max() + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.25, lw=0.5)
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.7 / (4.2 * n), right=0.98, top=0.84, bottom=0.14, wspace=0.3)
    return fig
