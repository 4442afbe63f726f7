"""The TopkDropout account (pipeline/evaluation/topk.py) on hand-made days with known answers,
and the store's holding facts (sql/store/day_facts.sql, `build.execution_arrays`) on hand-made
prices."""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.portfolio import portfolio_returns
from pipeline.evaluation.topk import topk_account
from tests.code.test_execution import execution, store_facts  # noqa: F401 (fixture)

FREE = dict(buy_cost=0.0, sell_cost=0.0, min_cost=0.0, account=1e6, risk_degree=1.0,
            forbid_all_trade_at_limit=True)


def frame(days: list[dict]) -> pd.DataFrame:
    """days: [{instrument: (score, hold_ret[, buy_ok, sell_ok, at_limit])}] -> predictions."""
    rows = []
    for d, day in enumerate(days):
        for inst, v in day.items():
            score, ret, buy, sell, lim = tuple(v) + (True, True, False)[len(v) - 2:]
            rows.append(dict(date=pd.Timestamp("2020-01-01") + pd.Timedelta(days=d), instrument=inst,
                             score=score, label=ret, exec_ret=ret, hold_ret=ret, buy_ok=buy,
                             short_ok=sell, sell_ok=sell, at_limit=lim))
    return pd.DataFrame(rows)


def test_a_suspended_top_stock_is_not_bought_and_its_share_stays_cash():
    pred = frame([{"A": (3.0, 0.5, False, False), "B": (2.0, 0.1), "C": (1.0, 0.2)}])
    acct = topk_account(pred, topk=2, n_drop=2, **FREE)
    # A and B are the top 2; A cannot be bought: B gets 1/2 of the cash, A's 1/2 stays cash
    # (not passed to C)
    assert acct["cash"].iloc[0] == pytest.approx(0.5)
    assert acct["net"].iloc[0] == pytest.approx(0.5 * 0.1)
    assert acct["held"].iloc[0] == 1


def test_a_limit_down_holding_cannot_be_sold_and_is_carried():
    pred = frame([
        {"A": (3.0, 0.0), "B": (2.0, 0.0), "C": (1.0, 0.0)},
        # A falls to the bottom and is to be sold, but opens limit down: carried, earning its
        # return; C, to be bought with A's cash, gets nothing (all cash is invested)
        {"C": (5.0, 0.0), "B": (4.0, 0.02), "A": (1.0, -0.1, True, False)},
        {"C": (5.0, 0.0), "B": (4.0, 0.0), "A": (1.0, 0.0)},        # now it can be sold
    ])
    acct = topk_account(pred, topk=2, n_drop=1, **FREE)
    assert acct["held"].tolist() == [2, 2, 2]
    assert acct["net"].iloc[1] == pytest.approx((0.02 - 0.1) / 2)
    assert acct["sold"].iloc[1] == 0 and acct["sold"].iloc[2] > 0
    # and a stock opening at the limit up cannot be sold either under forbid_all_trade_at_limit
    pred.loc[(pred.instrument == "A") & (pred.date == pred.date.iloc[3]), ["sell_ok", "at_limit"]] = True
    strict = topk_account(pred, topk=2, n_drop=1, **FREE)
    assert strict["sold"].iloc[1] == 0
    loose = topk_account(pred, topk=2, n_drop=1, **{**FREE, "forbid_all_trade_at_limit": False})
    assert loose["sold"].iloc[1] > 0


def test_a_holding_with_no_score_is_sold_first_and_valued_from_its_row():
    pred = frame([
        {"A": (3.0, 0.0), "B": (2.0, 0.0), "C": (1.0, 0.0)},
        {"A": (np.nan, 0.3, False, True), "B": (2.0, 0.0), "C": (1.0, 0.0)},  # A left the set
    ])
    acct = topk_account(pred, topk=2, n_drop=1, **FREE)
    # A is sold on day 1 (its NaN score sorts last), C is bought: A's 0.3 is not earned
    assert acct["net"].iloc[1] == pytest.approx(0.0)
    assert acct["sold"].iloc[1] == pytest.approx(0.5)


def test_turnover_and_costs_add_up_to_the_cash_changes():
    rng = np.random.default_rng(0)
    names = [f"S{i}" for i in range(12)]
    days = [{s: (float(rng.normal()), float(rng.normal(0, 0.02)), bool(rng.random() > 0.1),
                 bool(rng.random() > 0.1), bool(rng.random() > 0.9)) for s in names}
            for _ in range(30)]
    params = dict(buy_cost=0.0005, sell_cost=0.0015, min_cost=5.0, account=2e4,
                  risk_degree=0.95, forbid_all_trade_at_limit=True)
    acct = topk_account(frame(days), topk=4, n_drop=2, **params)
    v0 = np.r_[params["account"], acct["value"].to_numpy()[:-1]]     # value before each day
    cash_before = np.r_[params["account"], (acct["cash"] * v0).to_numpy()[:-1]]
    flow = (acct["sold"] - acct["bought"] - acct["cost"]).to_numpy() * v0
    np.testing.assert_allclose(acct["cash"].to_numpy() * v0, cash_before + flow, rtol=1e-12)
    # 2e4 CNY over 4 names: every order is under 5 / 0.0005 = 1e4, so each pays the minimum
    orders = ((acct["bought"] > 0) | (acct["sold"] > 0))
    assert (acct.loc[orders, "cost"] * v0[orders.to_numpy()] >= 5.0 - 1e-9).all()
    np.testing.assert_allclose(acct["gross"] - acct["net"], acct["cost"], atol=1e-15)


def test_n_drop_equal_to_topk_without_costs_is_the_daily_equal_weight_top_k():
    """With n_drop = topk every name that leaves the top k is sold and the held set is the top
    k; when the top k changes completely every day (groups A and B alternate), the account
    rebuys an equal-weighted top k daily: the paper portfolio's long leg at top_frac = k / n."""
    rng = np.random.default_rng(1)
    k = 3
    a, b, rest = [f"A{i}" for i in range(k)], [f"B{i}" for i in range(k)], [f"R{i}" for i in range(2 * k)]
    days = []
    for d in range(20):
        top = a if d % 2 == 0 else b
        days.append({s: (10.0 + rng.random() if s in top else rng.random(), float(rng.normal(0, 0.02)))
                     for s in a + b + rest})
    pred = frame(days)
    acct = topk_account(pred, topk=k, n_drop=k, **FREE)
    long = portfolio_returns(pred, top_frac=k / (4 * k), buy_cost=0.0, sell_cost=0.0,
                             untradable="cash")["long"]
    np.testing.assert_allclose(acct["net"].to_numpy(), long.to_numpy(), rtol=1e-12, atol=1e-15)
    assert (acct["held"] == k).all()


def test_holding_facts_from_hand_made_prices(settings, execution):  # noqa: F811
    """hold_ret, sell_ok, at_limit: the same limit rule as the paper portfolio's facts, and a
    stock back from a suspension can be sold on its first day back (a position opened the day
    before it came back has no paper-portfolio facts: it did not trade then)."""
    insts, h = store_facts(settings)
    j = {s: i for i, s in enumerate(insts)}
    for (inst, t), r in execution.items():           # every paper-portfolio stock-day agrees
        sell, lim = h["sell_ok"][t, j[inst]], h["at_limit"][t, j[inst]]
        assert sell == r.short_ok, (inst, t)            # not opening limit down
        assert r.buy_ok == (not (lim and sell)), (inst, t)   # limit up = at a limit, not down
    g = j["SH600004"]                                 # traded d0, d1, suspended d2, back d3, d4
    assert h["hold_ret"][0, g] == pytest.approx(0.0)                 # d1 -> d2: holds its value
    assert h["hold_ret"][1, g] == pytest.approx(10.4 / 10.2 - 1)     # d2 -> d3: the move since d1
    assert not h["sell_ok"][1, g] and h["sell_ok"][2, g]             # not on d2, yes on d3
    assert ("SH600004", 2) not in execution                          # (no row: not traded on d2)
    assert np.isnan(h["hold_ret"][-2:]).all()
    a = j["SH600001"]
    assert h["at_limit"][0, a] and h["at_limit"][2, a] and not h["at_limit"][1, a]


def test_champion_can_score_by_the_net_account(tmp_path):
    """`[backtest] champion_metric = "topk_excess_net"`: the window score is the account's net
    excess; scores that know the label beat their opposite."""
    from pipeline.champion import decide, window_topk
    from pipeline.config import load_config
    from tests.synthetic_store import make_store

    store = make_store(tmp_path / "s")
    bt = load_config(overrides={"backtest": {"topk": 5, "n_drop": 2,
                                             "champion_metric": "topk_excess_net"}}).backtest
    days = np.arange(20, 60)
    di, ji = np.nonzero(store.members["all"][days])
    lab = store.labels[days[di], ji]
    df = pd.DataFrame({"date": pd.to_datetime(store.dates[days[di]]), "instrument": store.instruments[ji],
                       "label": lab})
    good = window_topk(df.assign(score=np.nan_to_num(lab)), store, bt)["topk_excess_ar_net"]
    bad = window_topk(df.assign(score=-np.nan_to_num(lab)), store, bt)["topk_excess_ar_net"]
    assert good > 0 > bad
    assert decide(good, bad, bt.champion_metric) == (
        True, f"window topk_excess_net {good:.4f} > champion {bad:.4f}")
