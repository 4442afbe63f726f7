"""Portfolios and their statistics on hand-made examples with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.evaluation.portfolio import add_index, index_returns, portfolio_metrics, portfolio_returns, risk

_BT = load_config().backtest
COSTS = {"buy_cost": _BT.buy_cost, "sell_cost": _BT.sell_cost, "untradable": _BT.untradable}


def _day(date, scores, labels):
    return pd.DataFrame({"date": pd.Timestamp(date), "instrument": [f"S{i}" for i in range(len(scores))],
                         "score": scores, "label": labels})


def test_top_and_bottom_portfolios_and_costs():
    # 20 stocks, top_frac 0.1 -> k = 2 each day.
    lab1 = np.arange(20) / 100.0                          # S19 best label
    day1 = _day("2020-01-02", np.arange(20.0), lab1)      # scores rank S19, S18 top; S0, S1 bottom
    s2 = np.arange(20.0)
    s2[[18, 17]] = s2[[17, 18]]                           # day 2: top = S19, S17 (S18 swapped out)
    day2 = _day("2020-01-03", s2, np.full(20, 0.01))
    pred = pd.concat([day1, day2])
    r = portfolio_returns(pred, top_frac=0.1, buy_cost=0.001, sell_cost=0.002, untradable="cash")
    d1, d2 = r.index
    assert (r["k"] == 2).all()
    assert r.loc[d1, "long"] == pytest.approx((0.19 + 0.18) / 2)
    assert r.loc[d1, "short"] == pytest.approx((0.00 + 0.01) / 2)
    assert r.loc[d1, "long_short"] == pytest.approx(0.185 - 0.005)
    assert r.loc[d1, "bench"] == pytest.approx(lab1.mean())
    assert r.loc[d1, "excess"] == pytest.approx(0.185 - lab1.mean())
    # turnover: day 1 buys the whole book, day 2 swaps half of it
    assert r.loc[d1, "turnover"] == pytest.approx(1.0)
    assert r.loc[d2, "turnover"] == pytest.approx(0.5)
    assert r.loc[d1, "cost"] == pytest.approx(0.001)
    assert r.loc[d2, "cost"] == pytest.approx(0.5 * 0.001 + 0.5 * 0.002)
    assert r.loc[d2, "excess_net"] == pytest.approx(0.0 - 0.0015)


def _exec_day(date, scores, exec_ret, buy_ok, short_ok=None, labels=None):
    """A day with the store's execution columns (exec_ret, buy_ok, short_ok)."""
    d = _day(date, scores, exec_ret if labels is None else labels)
    return d.assign(exec_ret=exec_ret, buy_ok=buy_ok,
                    short_ok=buy_ok if short_ok is None else short_ok)


def test_every_scored_member_is_ranked_no_look_ahead():
    # S0 has the best score; it is delisted on t+2, so it has no label (the future) but it can be
    # bought on t+1 and is valued at its last traded price there (exec_ret -0.30). The old
    # backtest dropped it before ranking and held S1 instead: it knew S0 would vanish.
    day = _exec_day("2020-01-02", [5.0, 4.0, 3.0, 2.0], exec_ret=[-0.30, 0.02, 0.01, -0.01],
                    buy_ok=[True] * 4, labels=[np.nan, 0.02, 0.01, -0.01])
    r = portfolio_returns(day, top_frac=0.05, **COSTS)
    assert r["k"].iloc[0] == 1 and r["n"].iloc[0] == 4
    assert r["long"].iloc[0] == pytest.approx(-0.30)
    assert r["short"].iloc[0] == pytest.approx(-0.01)
    assert r["bench"].iloc[0] == pytest.approx((-0.30 + 0.02 + 0.01 - 0.01) / 4)
    # the IC stays over the labelled members
    from pipeline.evaluation import ic_metrics
    days = pd.concat([day, day.assign(date=pd.Timestamp("2020-01-03"))])
    m = ic_metrics(days)
    assert m["rank_ic"] == pytest.approx(1.0)
    assert m["ic"] == pytest.approx(np.corrcoef([4.0, 3.0, 2.0], [0.02, 0.01, -0.01])[0, 1])


@pytest.mark.parametrize("rule, long, short, cash", [("cash", 0.0, 0.0, 1.0),
                                                      ("next", 0.02, -0.01, 0.0)])
def test_a_pick_that_cannot_be_traded_is_cash_or_passed_on(rule, long, short, cash):
    # S0 (best) opens at the limit up on t+1: no buy. S3 (worst) opens limit down: no short sale.
    day = _exec_day("2020-01-02", [5.0, 4.0, 3.0, 2.0, 1.0], exec_ret=[0.10, 0.02, 0.01, -0.01, -0.09],
                    buy_ok=[False, True, True, True, True], short_ok=[True, True, True, True, False])
    r = portfolio_returns(day, top_frac=0.05, **{**COSTS, "untradable": rule})
    assert r["long"].iloc[0] == pytest.approx(long)
    assert r["short"].iloc[0] == pytest.approx(short)
    assert r["cash"].iloc[0] == pytest.approx(cash)
    # a book left in cash buys nothing and pays nothing
    assert r["turnover"].iloc[0] == pytest.approx(1.0 - cash)
    # the members' benchmark is executed by the same rule (S0 cannot be bought)
    bench = (0.02 + 0.01 - 0.01 - 0.09) / (5 if rule == "cash" else 4)
    assert r["bench"].iloc[0] == pytest.approx(bench)


def test_without_execution_columns_an_unlabelled_pick_is_not_bought():
    day = _day("2020-01-02", [5.0, 4.0, 3.0, 2.0], [np.nan, 0.02, 0.01, -0.01])
    r = portfolio_returns(day, top_frac=0.05, **{**COSTS, "untradable": "cash"})
    assert r["n"].iloc[0] == 4 and r["long"].iloc[0] == 0.0 and r["cash"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="untradable"):
        portfolio_returns(day, top_frac=0.05, **{**COSTS, "untradable": "skip"})


def test_risk_follows_qlib_sum_convention():
    r = pd.Series([0.01, -0.02, 0.03, -0.01, 0.02])
    out = risk(r, 238)
    assert out["ar"] == pytest.approx(r.mean() * 238)
    assert out["ir"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(238))
    # cumulative 0.01, -0.01, 0.02, 0.01, 0.03 -> worst fall from a peak: 0.01 -> -0.01
    assert out["mdd"] == pytest.approx(-0.02)


def test_index_returns_use_label_timing():
    dates = pd.bdate_range("2020-01-01", periods=5).to_numpy()
    closes = pd.Series([100.0, 110.0, 121.0, 121.0, 60.5], index=dates)
    ix = index_returns(closes, dates)
    # y_t = close(t+2)/close(t+1) - 1
    assert ix.iloc[0] == pytest.approx(0.10)
    assert ix.iloc[1] == pytest.approx(0.0)
    assert ix.iloc[2] == pytest.approx(-0.5)
    assert ix.iloc[3:].isna().all()


def test_portfolio_metrics_keys_and_index_excess():
    rng = np.random.default_rng(1)
    frames = [_day(d, rng.normal(size=40), rng.normal(0.001, 0.02, 40))
              for d in pd.bdate_range("2020-01-01", periods=30)]
    r = portfolio_returns(pd.concat(frames), top_frac=load_config().backtest.top_frac, **COSTS)
    ixr = pd.Series(0.001, index=r.index)
    r = add_index(r, ixr)
    m = portfolio_metrics(r, 238)
    for key in ("long_only_ar", "long_only_ir", "long_short_ar", "long_short_ir", "long_only_mdd",
                "turnover", "long_only_ar_net", "long_only_index_ar"):
        assert np.isfinite(m[key]), key
    assert m["long_only_ar"] == pytest.approx(r["excess"].mean() * 238)
    assert m["long_only_index_ar"] == pytest.approx((r["long"] - 0.001).mean() * 238)
    assert m["long_only_ar_net"] < m["long_only_ar"]


def test_days_whose_outcome_is_not_known_yet_are_left_out():
    # the data's last day: no member has an execution outcome (t+1 has not happened); it is not
    # a day of all-cash returns
    known = _exec_day("2020-01-02", [3.0, 2.0, 1.0], exec_ret=[0.01, 0.02, 0.03], buy_ok=[True] * 3)
    last = _exec_day("2020-01-03", [3.0, 2.0, 1.0], exec_ret=[np.nan] * 3, buy_ok=[False] * 3)
    r = portfolio_returns(pd.concat([known, last]), top_frac=0.05, **COSTS)
    assert list(r.index) == [pd.Timestamp("2020-01-02")]
