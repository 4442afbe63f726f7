"""The backtest's execution facts (sql/store/day_facts.sql, `build.execution_arrays`) on
hand-made prices: A-share daily
limits (10%, 5% for ST, 20% for STAR and for ChiNext from 2020-08-24), an ex-dividend reference
price, a holding that cannot be sold on t+2; and the store carries them to a cell's predictions."""
from __future__ import annotations

from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.warehouse import run_sql
from tests.code.test_features import make_warehouse

# Market days d0..d4: 2020-08-19 (Wed), 08-20, 08-21, 08-24 (ChiNext's 20% starts), 08-25.
D = pd.bdate_range("2020-08-19", periods=5)


def row(day, inst, open_, close, vwap=None, name="N", factor=1.0, volume=100):
    vwap = close if vwap is None else vwap
    return dict(date=D[day], instrument=inst, name=name, open=open_, high=max(open_, close),
                low=min(open_, close), close=close, volume=volume, amount=vwap * volume,
                factor=factor, float_shares=1, total_shares=1)


def prices_frame() -> pd.DataFrame:
    rows = [row(d, "SH600000", 10.0, 10.0) for d in range(5)]            # the market's calendar
    # A (10%): d1 opens at 11.00 = limit up over 10.00 (the d0 signal cannot be bought); d2
    # opens 12.09, a cent under the limit 12.10 over 11.00 (buyable); d3 opens at the limit down
    # over 10.50 (9.45): the d2 signal cannot be sold short.
    rows += [row(0, "SH600001", 10.0, 10.0), row(1, "SH600001", 11.0, 11.0),
             row(2, "SH600001", 12.09, 10.5), row(3, "SH600001", 9.45, 9.5),
             row(4, "SH600001", 9.5, 9.6)]
    # B (ST, 5%): d1 opens 10.50 over 10.00: limit up; a 10%-stock would be buyable there.
    rows += [row(d, "SH600002", o, 10.0 if d == 0 else o, name="*ST B")
             for d, o in [(0, 10.0), (1, 10.5), (2, 10.5), (3, 10.5), (4, 10.5)]]
    # C (ChiNext): d2 (08-21) opens +10% = limit up under the old 10%; d3 (08-24) opens +10%:
    # buyable under the new 20%.
    rows += [row(0, "SZ300001", 10.0, 10.0), row(1, "SZ300001", 10.0, 10.0),
             row(2, "SZ300001", 11.0, 11.0), row(3, "SZ300001", 12.1, 12.1),
             row(4, "SZ300001", 12.1, 12.1)]
    # E (STAR, 20% always): d1 opens +15%: buyable.
    rows += [row(0, "SH688001", 10.0, 10.0), row(1, "SH688001", 11.5, 11.5),
             row(2, "SH688001", 11.5, 11.5), row(3, "SH688001", 11.5, 11.5)]
    # F: 2-for-1 split on d1 (factor 1 -> 2): the reference price is 10.00 x 1 / 2 = 5.00, so an
    # open of 5.50 is limit up (on raw prices it would look like -45%).
    rows += [row(0, "SH600003", 10.0, 10.0), row(1, "SH600003", 5.5, 5.5, factor=2.0),
             row(2, "SH600003", 5.5, 5.5, factor=2.0), row(3, "SH600003", 5.5, 5.5, factor=2.0)]
    # G: bought on d1 at vwap 10.20, closes d1 at 10.40, suspended on d2 (no row): valued at the
    # d1 close.
    rows += [row(0, "SH600004", 10.0, 10.0), row(1, "SH600004", 10.1, 10.4, vwap=10.2),
             row(3, "SH600004", 10.4, 10.4), row(4, "SH600004", 10.4, 10.4)]
    return pd.DataFrame(rows)


def store_facts(settings, start: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    """The store's execution arrays for the warehouse's prices, as the store build computes them:
    (instruments in store order, {name: (Days, N) array}); start: of the days from start on only,
    as an extended store computes its last days."""
    from pipeline.store.build import execution_arrays

    con = duckdb.connect(str(settings.warehouse))
    try:
        run_sql(con, "store/calendar")
        run_sql(con, "store/instruments")
        insts = [r[0] for r in con.execute("SELECT instrument FROM store_inst ORDER BY ji").fetchall()]
        cols = run_sql(con, "store/day_facts", {"from_day": start}).fetchnumpy()
    finally:
        con.close()
    return insts, execution_arrays(len(D), len(insts), *cols.values(), start=start)


@pytest.fixture
def execution(settings):
    """{(instrument, day t): its paper-portfolio facts} for every stock-day whose position can be
    opened on t+1 (traded on t and t+1, t+2 in the data); other stock-days have none."""
    make_warehouse(settings.warehouse, prices_frame())
    insts, ex = store_facts(settings)
    out = {}
    for t, j in zip(*np.nonzero(np.isfinite(ex["exec_ret"]))):
        out[(insts[j], int(t))] = SimpleNamespace(**{k: ex[k][t, j] for k in
                                                     ("exec_ret", "buy_ok", "short_ok")})
    return out


def test_limit_up_open_blocks_the_buy(execution):
    assert not execution[("SH600001", 0)].buy_ok          # d1 opens at 11.00 = 10.00 x 1.10
    assert execution[("SH600001", 1)].buy_ok              # d2 opens 12.09 < 12.10
    assert execution[("SH600000", 0)].buy_ok


def test_limit_down_open_blocks_the_short_sale(execution):
    assert not execution[("SH600001", 2)].short_ok        # d3 opens 9.45 = 10.50 x 0.90
    assert execution[("SH600001", 2)].buy_ok


def test_st_names_have_a_five_percent_limit(execution):
    assert not execution[("SH600002", 0)].buy_ok          # +5% open on d1


def test_chinext_limit_is_twenty_percent_from_2020_08_24(execution):
    assert not execution[("SZ300001", 1)].buy_ok          # 08-21: +10% open is the old limit
    assert execution[("SZ300001", 2)].buy_ok              # 08-24: +10% is inside the new 20%


def test_star_limit_is_twenty_percent(execution):
    assert execution[("SH688001", 0)].buy_ok              # +15% open


def test_reference_price_is_ex_dividend(execution):
    assert not execution[("SH600003", 0)].buy_ok          # 5.50 over a reference of 5.00


def test_a_holding_without_a_trade_on_t2_is_valued_at_its_last_price(execution):
    g = execution[("SH600004", 0)]
    assert g.buy_ok and g.exec_ret == pytest.approx(10.4 / 10.2 - 1)
    # no trade on t+1: no row (the backtest reads NaN / not buyable)
    assert ("SH600004", 1) not in execution
    # a normal day: exec_ret is the label, vwap(t+2) / vwap(t+1) - 1
    assert execution[("SH600001", 1)].exec_ret == pytest.approx(9.5 / 10.5 - 1)


def test_store_carries_execution_to_predictions(settings, tmp_path):
    """A store built from arrays keeps the execution arrays, and `with_execution` maps them onto
    a predictions table by (day, stock) index."""
    from pipeline.cell import with_execution
    from pipeline.store.arrays import TensorStore

    days, n = 6, 3
    dates = pd.bdate_range("2020-01-01", periods=days).to_numpy()
    labels = np.full((days, n), 0.01, np.float32)
    ex = {"exec_ret": np.arange(days * n, dtype=np.float32).reshape(days, n),
          "buy_ok": np.eye(days, n, dtype=bool), "short_ok": ~np.eye(days, n, dtype=bool)}
    store = TensorStore.from_arrays(tmp_path / "s", dates, ["A", "B", "C"], ["f", "g"],
                                    np.random.default_rng(0).normal(size=(days, n, 2)), np.ones((days, n), bool), labels,
                                    {}, window=1, execution=ex)
    pred = pd.DataFrame({"day_idx": [0, 1, 4], "inst_idx": [0, 1, 2], "score": 1.0, "label": 0.0})
    out = with_execution(pred, store).iloc[:3]     # (then the rows the account may hold)
    assert out["exec_ret"].tolist() == [0.0, 4.0, 14.0]
    assert out["buy_ok"].tolist() == [True, True, False]
    assert out["short_ok"].tolist() == [False, False, True]


def test_the_last_two_days_have_no_outcome_yet(execution):
    assert ("SH600000", 2) in execution
    assert ("SH600000", 3) not in execution and ("SH600000", 4) not in execution


@pytest.mark.parametrize("start", range(1, len(D)))
def test_the_last_days_alone_give_the_same_arrays(settings, start):
    """An extended store computes the execution arrays of its last days only, from the rows of
    those days and each stock's last row before them: the same as from every day. H (halted on
    d1 and d2, back on d3 at the limit up over its d0 close) needs that row before a start of
    1 or 2: its previous close and the last traded price its hold_ret carries over the halt."""
    halted = [row(0, "SH600005", 10.0, 10.0), row(3, "SH600005", 11.0, 11.0),
              row(4, "SH600005", 11.0, 11.5)]
    prices = pd.concat([prices_frame(), pd.DataFrame(halted)])
    make_warehouse(settings.warehouse, prices)
    insts, full = store_facts(settings)
    h = insts.index("SH600005")
    assert full["at_limit"][2, h] and full["hold_ret"][1, h] == pytest.approx(11.0 / 10.0 - 1)
    _, last_days = store_facts(settings, start)
    for k, a in full.items():
        assert np.array_equal(last_days[k], a[start:], equal_nan=a.dtype.kind == "f"), k
