"""The run plots (pipeline/plots.py) say what they claim: each test reads the returned Figure's
artists (titles, line data, images, norms), not the pixels."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from pipeline import plots
from pipeline.evaluation.portfolio import risk

RUN = "miga-conv / csi300 / seed 0"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _rendered(fig) -> None:
    """The figure draws (errors that only show at draw time) to a PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    assert buf.getvalue()[:4] == b"\x89PNG"


def _ax(fig, title_start: str):
    found = [a for a in fig.axes
             if any(a.get_title(loc=w).startswith(title_start) for w in ("left", "center"))]
    assert len(found) == 1, (title_start, [a.get_title(loc="left") for a in fig.axes])
    return found[0]


def _line(ax, label_start: str):
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    assert len(found) == 1, (label_start, [ln.get_label() for ln in ax.get_lines()])
    return found[0]


def _returns(n: int = 120, index: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.DatetimeIndex(pd.bdate_range("2019-01-02", periods=n), name="date")
    bench = rng.normal(0.0003, 0.01, n)
    long = bench + rng.normal(0.0005, 0.005, n)
    short = bench + rng.normal(-0.0004, 0.005, n)
    turnover = rng.uniform(0.1, 0.4, n)
    turnover[0] = 1.0                                   # the first day buys the whole book
    cost = 0.0005 * turnover + 0.0015 * turnover
    out = pd.DataFrame({"long": long, "short": short, "long_short": long - short, "bench": bench,
                        "excess": long - bench, "turnover": turnover, "cost": cost,
                        "excess_net": long - bench - cost, "cash": np.zeros(n)}, index=dates)
    if index:
        out["index"] = bench + rng.normal(0, 0.002, n)
        out["excess_index"] = out["long"] - out["index"]
    return out


def _daily(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.DatetimeIndex(pd.bdate_range("2019-11-01", periods=n), name="date")
    d = pd.DataFrame({"ic": rng.normal(0.04, 0.1, n), "rank_ic": rng.normal(0.05, 0.1, n),
                      "n": 300}, index=dates)
    d.iloc[5, 0] = np.nan                               # a day without an IC
    return d


# --- cumulative returns ---------------------------------------------------------------------

def test_cumulative_returns_title_says_what_and_which_period():
    r = _returns()
    fig = plots.cumulative_returns(r, RUN, universe="csi300", top_frac=0.1, buy_cost=0.0005,
                                   sell_cost=0.0015, days_per_year=252)
    title = fig._suptitle.get_text()
    first, last = r.index[0].strftime("%Y-%m-%d"), r.index[-1].strftime("%Y-%m-%d")
    assert RUN in title and f"test {first}..{last}" in title
    assert "long-only top 10%" in title and "csi300 members and index" in title
    assert "sum of daily" in title and "0.05% buy" in title and "0.15% sell" in title
    assert "sum of daily" in _ax(fig, "cumulative return").get_ylabel()
    _rendered(fig)


def test_cumulative_returns_panels_hold_qlib_report_series():
    r = _returns()
    fig = plots.cumulative_returns(r, RUN, universe="csi300", top_frac=0.1, days_per_year=252)
    ret = _ax(fig, "cumulative return")
    np.testing.assert_allclose(_line(ret, "benchmark: csi300 members").get_ydata(), r["bench"].cumsum())
    np.testing.assert_allclose(_line(ret, "benchmark: csi300 index").get_ydata(), r["index"].cumsum())
    np.testing.assert_allclose(_line(ret, "long-only top 10% w/o cost").get_ydata(), r["long"].cumsum())
    np.testing.assert_allclose(_line(ret, "long-only top 10% with cost").get_ydata(),
                               (r["long"] - r["cost"]).cumsum())
    # the legend carries the logged metrics' numbers (Qlib's sum-mode risk)
    s = risk(r["excess"], 252)
    ex = _ax(fig, "excess return")
    lab = _line(ex, "vs members, w/o cost").get_label()
    assert f"AR {s['ar']:+.1%}" in lab and f"IR {s['ir']:.2f}" in lab and f"MDD {s['mdd']:+.1%}" in lab
    np.testing.assert_allclose(_line(ex, "vs members, w/o cost").get_ydata(), r["excess"].cumsum())
    np.testing.assert_allclose(_line(ex, "vs members, with cost").get_ydata(), r["excess_net"].cumsum())
    np.testing.assert_allclose(_line(ex, "vs index, w/o cost").get_ydata(), r["excess_index"].cumsum())

    dd = _ax(fig, "drawdown")
    for ln in dd.get_lines():
        assert np.all(np.asarray(ln.get_ydata()) <= 1e-12), ln.get_label()
    assert np.min(_line(dd, "vs members, w/o cost").get_ydata()) == pytest.approx(s["mdd"])

    ls = _ax(fig, "long-short")                        # long-short has an axis of its own
    np.testing.assert_allclose(_line(ls, "long-short").get_ydata(), r["long_short"].cumsum())
    assert not [ln for ln in ls.get_lines() if ln.get_label().startswith("long-only")]

    to = _ax(fig, "daily turnover")
    bars = to.collections[0]                            # one vertical segment per day
    assert len(bars.get_segments()) == len(r)
    assert "off the scale" in to.get_title(loc="left")  # the first day's 100% is clipped
    assert to.get_ylim()[1] < 1.0
    assert all(a.get_xlim() == fig.axes[0].get_xlim() for a in fig.axes)   # one time axis


def test_cumulative_returns_title_keeps_a_fractional_top():
    fig = plots.cumulative_returns(_returns(), RUN, universe="csi300", top_frac=0.025)
    assert "long-only top 2.5%" in fig._suptitle.get_text()
    assert _ax(fig, "long-short: top minus bottom 2.5%")


def test_cumulative_returns_without_index_or_cost_column():
    r = _returns(index=False).drop(columns=["cost"])
    fig = plots.cumulative_returns(r, RUN, universe="csi300", top_frac=0.1)
    assert "and index" not in fig._suptitle.get_text()
    labels = [ln.get_label() for a in fig.axes for ln in a.get_lines()]
    assert not [lb for lb in labels if "index" in lb]
    cost = r["excess"] - r["excess_net"]              # derived when the frame has no cost column
    np.testing.assert_allclose(_line(_ax(fig, "cumulative return"), "long-only top 10% with cost")
                               .get_ydata(), (r["long"] - cost).cumsum())
    _rendered(fig)


# --- daily IC -------------------------------------------------------------------------------

def test_daily_ic_bars_rolling_mean_and_title():
    d = _daily()
    fig = plots.daily_ic(d, RUN, window=20)
    title = fig._suptitle.get_text()
    assert RUN in title and f"{d.index[0]:%Y-%m-%d}..{d.index[-1]:%Y-%m-%d}" in title
    for col, name in (("ic", "IC"), ("rank_ic", "RankIC")):
        ax = _ax(fig, f"daily {name}:")
        assert ax.get_ylabel() == name
        np.testing.assert_allclose(_line(ax, "20-day rolling mean").get_ydata(),
                                   d[col].rolling(20, min_periods=1).mean())
        mean = _line(ax, "mean")
        assert mean.get_ydata()[0] == pytest.approx(d[col].mean())
        assert f"mean {d[col].mean():.4f}" in ax.get_title(loc="left")
        bars = sum(len(c.get_segments()) for c in ax.collections)
        assert bars == d[col].notna().sum()             # a bar per day with an IC
    _rendered(fig)


def test_daily_ic_histogram_counts_the_days():
    d = _daily()
    fig = plots.daily_ic(d, RUN)
    ax = _ax(fig, "distribution")
    # the filled IC histogram: its bars' heights sum to the days with an IC
    filled = [p for p in ax.patches if p.get_fill()]
    assert filled and sum(p.get_height() for p in filled) == d["ic"].notna().sum()
    assert _line(ax, "mean IC").get_xdata()[0] == pytest.approx(d["ic"].mean())


def test_monthly_ic_heatmap_years_by_months_centred_at_zero():
    d = _daily()                                       # Nov 2019 .. late 2020: two years
    fig = plots.daily_ic(d, RUN)
    ax = _ax(fig, "mean daily IC per month")
    img = ax.get_images()[0]
    arr = img.get_array()
    years = sorted(set(d.index.year))
    assert arr.shape == (len(years), 12)                # one row per year
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == [str(y) for y in years]
    norm = img.norm
    assert (norm.vmin + norm.vmax) / 2 == pytest.approx(0.0)    # diverging, centred at 0
    assert norm.vmax >= np.nanmax(np.abs(arr.filled(np.nan)))
    nov19 = d.loc["2019-11", "ic"].mean()
    assert arr[0, 10] == pytest.approx(nov19)
    assert np.ma.is_masked(arr[0, 0])                   # Jan 2019: no days, no colour
    m = plots.monthly_ic(d)
    assert list(m.columns) == list(range(1, 13)) and list(m.index) == years


# --- expert usage ---------------------------------------------------------------------------

def _usage(g: int = 2, e: int = 3, sets=("csi300", "csi500", "csi1000"), seed: int = 2):
    rng = np.random.default_rng(seed)
    out = {}
    for s in sets:
        w = rng.uniform(0, 1, (g, e))
        out[s] = w / w.sum()                            # a day's weights sum to 1 over G*E
    return out


def test_expert_usage_grid_per_set_centred_at_uniform_weight():
    g, e = 2, 3
    u = _usage(g, e)
    fig = plots.expert_usage(u, RUN)
    grids = [_ax(fig, f"{s}: effective experts") for s in u]
    norms = set()
    for s, ax in zip(u, grids):
        img = ax.get_images()[0]
        assert img.get_array().shape == (g, e)          # rows groups, columns experts
        np.testing.assert_allclose(img.get_array(), u[s])
        assert img.norm.vcenter == pytest.approx(1 / (g * e))
        norms.add(id(img.norm))
    assert len(norms) == 1                              # one colour scale for every set
    assert [t.get_text() for t in grids[0].get_yticklabels()] == ["group 1", "group 2"]
    assert RUN in fig._suptitle.get_text()
    _rendered(fig)


def test_expert_usage_difference_between_sets():
    u = _usage(7, 9)
    fig = plots.expert_usage(u, RUN)
    mean = np.mean(list(u.values()), axis=0)
    lims = set()
    for s in u:
        img = _ax(fig, f"{s} - mean over sets").get_images()[0]
        assert img.get_array().shape == (7, 9)
        np.testing.assert_allclose(img.get_array(), u[s] - mean)
        assert (img.norm.vmin + img.norm.vmax) / 2 == pytest.approx(0.0)
        lims.add((img.norm.vmin, img.norm.vmax))
    assert len(lims) == 1
    expert_ax = _ax(fig, "csi300 - mean over sets")
    assert [t.get_text() for t in expert_ax.get_xticklabels()] == [str(j) for j in range(1, 10)]


def test_expert_usage_one_set_has_no_difference_row():
    fig = plots.expert_usage(_usage(sets=("all",)), RUN)
    assert not [a for a in fig.axes if "mean over sets" in a.get_title()]
    assert _ax(fig, "all: effective experts").get_images()[0].get_array().shape == (2, 3)
    _rendered(fig)


# --- training curves ------------------------------------------------------------------------

def _history(n: int = 8, entropy: bool = True) -> list[dict]:
    out = []
    for i in range(1, n + 1):
        rec = {"epoch": i, "train_loss": 1.0 / i, "train_ic": 0.01 * i,
               "valid_ic": 0.03 - 0.001 * (i - 4) ** 2,
               "valid_rank_ic": 0.04 - 0.001 * (i - 4) ** 2, "epoch_seconds": 1.0}
        if entropy:
            rec["expert_entropy"] = 4.0 - 0.1 * i
        out.append(rec)
    return out


def test_training_curves_mark_the_best_epoch():
    h = _history()
    fig = plots.training_curves(h, RUN, best_epoch=4)
    assert "best epoch 4" in fig._suptitle.get_text() and "valid IC 0.0300" in fig._suptitle.get_text()
    loss, ic = _ax(fig, "loss"), _ax(fig, "IC")
    np.testing.assert_allclose(_line(loss, "train loss").get_ydata(), [r["train_loss"] for r in h])
    for lab, key in (("train IC", "train_ic"), ("valid IC", "valid_ic"),
                     ("valid RankIC", "valid_rank_ic")):
        np.testing.assert_allclose(_line(ic, lab).get_ydata(), [r[key] for r in h])
    ent = _ax(fig, "expert usage entropy")
    for ax in (loss, ic, ent):
        best = _line(ax, "best epoch")
        assert list(best.get_xdata()) == [4, 4]          # a vertical line at the best epoch
        ticks = ax.get_xticks()
        assert np.all(ticks == np.round(ticks)) and ax.get_xlabel() == "epoch"
    _rendered(fig)


def test_training_curves_one_epoch_anchor():
    h = [{"epoch": 1, "train_loss": 0.9, "train_ic": 0.05, "valid_ic": 0.03, "valid_rank_ic": 0.04,
          "best_iteration": 120}]
    fig = plots.training_curves(h, "lgbm / csi300 / seed 0", best_epoch=1)
    assert "1 epoch," in fig._suptitle.get_text()
    assert len(fig.axes) == 2                            # no routing entropy for an anchor
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1]
    _rendered(fig)
