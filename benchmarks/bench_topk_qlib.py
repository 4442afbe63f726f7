"""Our TopkDropout account (pipeline/evaluation/topk.py) against Qlib's own `backtest` with
`TopkDropoutStrategy`, on one logged run's test scores and the same prices.

    python -m venv .venv-qlib && .venv-qlib/bin/pip install pyqlib==0.9.7   # once; not a project dependency
    MIGA_HOME=/work/benchhome .venv/bin/python benchmarks/bench_topk_qlib.py [--model lgbm]
        [--stockset csi300] [--trade-unit 100] [--qlib-python .venv-qlib/bin/python]

1. Reads the newest finished run of --model on --stockset (its `predictions.parquet`; the home
   is only read) and takes its test scores.
2. Ours: the run's stocks' prices from ../shared/data in an in-memory DuckDB, the store's SQL
   (sql/store/calendar, instruments, day_facts) and `build.execution_arrays`, the
   predictions completed by `evaluation.with_execution` (rows for stocks held without a score),
   then `topk_account` with the config's [backtest] values.
3. Qlib: the same prices in Qlib's binary layout (bench_qlib.write_qlib_layout) under --work,
   with two changes so both price the same way: $close is the average price (Qlib values an
   account at $close, we at the average price), and $limitup / $limitdown are the store's
   open-at-limit flags, given to the exchange as `limit_threshold` expressions (Qlib's float
   threshold reads the close-to-close change instead). deal_price "vwap" (amount / volume x
   factor), open_cost / close_cost / min_cost / account / topk / n_drop / risk_degree from the
   config, forbid_all_trade_at_limit and only_tradable at Qlib's defaults, trade_unit None (no
   rounding; --trade-unit 100 gives Qlib's cn default). Run in Qlib's venv
   (benchmarks/qlib_topk_worker.py), work files under --work.
4. Timing: Qlib trades the score of day t on t+1 (its strategy reads the signal of the previous
   step) and books a day's costs on the day of the trade; its `return` is before costs. Our day
   t is the account from t+1's prices to t+2's, costs of t+1 included. So our gross return of t
   is Qlib's `return` of t+2, our cost of t Qlib's `cost` of t+1, our net of t
   return(t+2) - cost(t+1). The table gives, per series, the correlation, the largest and the
   mean absolute difference, and the annualised sums (Qlib's "sum" mode, 238 days).

   Qlib's rates are over the previous day's value after its costs, ours over the value before
   the day's trades: the rows gross/cost/net/turnover put Qlib's CNY columns (account,
   total_cost, total_turnover) over our denominator; "net vs Qlib's own rates" compares with
   its `return - cost` as it reports them.

Tolerance: with trade_unit None the two are the same algorithm on the same prices; Qlib reads
float32 prices, so a day's return may differ by ~1e-7. Agreement is declared at max |diff| <=
1e-5 a day (net, on our denominator).

Measured 2026-12-04 (2-core box, busy with a training run; pyqlib 0.9.7), the default
[backtest] (topk 50, n_drop 5, risk_degree 0.95, 1e8 CNY, 0.05% / 0.15%, min 5 CNY), run
7f962251 (lgbm, csi300), 485 signal days 2019-01-02..2020-12-29, 382 stocks:
  trade_unit None: ours 9.1 s (SQL + account), Qlib 45.8 s. Daily gross, cost, net, turnover:
    correlation 1.0000, max |diff| 1.4e-8 (gross, net), 1e-11 (cost), 1e-8 (turnover); AR net
    0.4137 both, gross 0.4607 both, costs 0.0470 a year, two-way turnover 47.2 a year both.
    Against Qlib's own rates (other denominators) net differs by up to 1.5e-5 a day (mean
    2.3e-6), the same AR to 4 digits: the gap is bookkeeping, not trading.
  --trade-unit 100 (Qlib's cn default; we do not round): Qlib 34.9 s; correlation 1.0000, net
    max |diff| 2.3e-5 a day (mean 3.5e-6), AR net 0.4137 ours vs 0.4136 Qlib, two-way turnover
    max |diff| 9e-4 of the book: rounding orders to 100 shares moves each weight a little and
    leaves some cash idle, a 1e-4 a year effect at 1e8 CNY (larger on small accounts).
Not compared: Qlib's float `limit_threshold` (close-to-close change, blocks a stock that
closes at the limit whatever its open) against our open-at-limit rule; ties in the scores
(we break them by instrument, Qlib's sort leaves them in its own order).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_qlib import DATA, write_qlib_layout  # noqa: E402
from pipeline import tracking  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.evaluation import topk_params, with_execution  # noqa: E402
from pipeline.evaluation.topk import topk_account  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.store.build import execution_arrays  # noqa: E402
from pipeline.warehouse import run_sql  # noqa: E402

TOLERANCE = 1e-5       # max |daily return difference| with trade_unit None


def run_predictions(settings: Settings, model: str, stockset: str) -> tuple[str, pd.DataFrame]:
    for r in tracking.finished_runs(settings) or []:          # newest first
        if r["tags"].get("model") == model and r["tags"].get("stockset") == stockset:
            pred = pd.read_parquet(tracking.download_artifact(settings, r["run_id"], "predictions.parquet"))
            test = pred[(pred["segment"] == "test") & pred["score"].notna()]
            return r["run_id"], test[["date", "instrument", "score", "label", "segment"]].copy()
    raise SystemExit(f"no finished run of {model} on {stockset} in {settings.mlflow_uri}")


def our_store(con, codes: list[str]) -> SimpleNamespace:
    """The store's execution arrays of `codes`, from the store's own SQL: what `with_execution`
    and `topk_account` read."""
    f = str(DATA / "daily.parquet")
    # `raw`: the market calendar (bench_qlib.write_qlib_layout reads it); `prices`: the run's stocks
    con.execute("CREATE TABLE raw AS SELECT DISTINCT CAST(date AS DATE) date FROM read_parquet($f)",
                {"f": f})
    con.execute("CREATE TABLE prices AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) "
                "FROM read_parquet($f) WHERE list_contains($i, instrument)", {"f": f, "i": codes})
    run_sql(con, "store/calendar")
    run_sql(con, "store/instruments")
    market = con.execute("SELECT count(*) FROM raw").fetchone()[0]
    dates = np.array([r[0] for r in run_sql(con, "store/calendar_dates").fetchall()], "datetime64[D]")
    if len(dates) != market:
        raise SystemExit(f"the stocks trade on {len(dates)} of {market} market days")
    insts = np.array([r[0] for r in con.execute("SELECT instrument FROM store_inst ORDER BY ji").fetchall()])
    days, n = len(dates), len(insts)
    traded = np.zeros((days, n), bool)
    di, ji = (np.asarray(v) for v in run_sql(con, "store/traded", {"from_day": 0}).fetchnumpy().values())
    traded[di, ji] = True
    h = run_sql(con, "store/day_facts", {"from_day": 0}).fetchnumpy()
    ex = execution_arrays(days, n, *(np.asarray(v) for v in h.values()))
    return SimpleNamespace(dates=dates, instruments=insts, traded=traded,
                           labels=np.full((days, n), np.nan, np.float32), execution=ex,
                           day_facts=h)


def write_qlib_data(con, store: SimpleNamespace, out: Path) -> None:
    """bench_qlib's layout, then $close := $vwap and the open-at-limit flags as fields."""
    write_qlib_layout(con, out)
    # Qlib's trade calendar reads the day after a step's day: one placeholder day past the data
    # lets its last step be the data's last day (no stock has a row there).
    cal = out / "calendars" / "day.txt"
    last = pd.Timestamp(cal.read_text().split()[-1])
    cal.write_text(cal.read_text() + f"{last + pd.offsets.BDay(1):%Y-%m-%d}\n")
    h = store.day_facts
    facts = pd.DataFrame({"di": h["di"], "ji": h["ji"], "p": h["p"],
                          "up": np.asarray(h["open_up"], float), "down": np.asarray(h["open_down"], float)})
    for ji, g in facts.sort_values(["ji", "di"]).groupby("ji"):
        folder = out / "features" / str(store.instruments[ji]).lower()
        shutil.copyfile(folder / "vwap.day.bin", folder / "close.day.bin")
        first = int(g["di"].iloc[0])
        span = int(g["di"].iloc[-1]) - first + 1
        p = np.full(span, np.nan)
        p[g["di"].to_numpy() - first] = g["p"].to_numpy()
        fields = {"limitup": g["up"], "limitdown": g["down"]}
        for name, v in fields.items():
            a = np.full(span, np.nan)
            a[g["di"].to_numpy() - first] = v.to_numpy()
            np.hstack([[first], a]).astype("<f4").tofile(folder / f"{name}.day.bin")
        change = np.r_[np.nan, p[1:] / pd.Series(p).ffill().to_numpy()[:-1] - 1]
        np.hstack([[first], change]).astype("<f4").tofile(folder / "change.day.bin")


def stats(a: pd.Series, b: pd.Series) -> dict:
    d = (a - b).abs()
    return {"corr": float(np.corrcoef(a, b)[0, 1]), "max_abs_diff": float(d.max()),
            "mean_abs_diff": float(d.mean()), "mean_diff": float((a - b).mean()),
            "ours_ar": float(a.mean() * 238), "qlib_ar": float(b.mean() * 238)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=None, help="MIGA_HOME to read the run from (default: env)")
    ap.add_argument("--model", default="lgbm")
    ap.add_argument("--stockset", default="csi300")
    ap.add_argument("--config", default=None, help="the [backtest] values (default config)")
    ap.add_argument("--trade-unit", type=int, default=None, help="Qlib's rounding (default none)")
    ap.add_argument("--work", default="/tmp/bench_topk_qlib")
    ap.add_argument("--qlib-python", default=os.environ.get("QLIB_PYTHON", str(ROOT / ".venv-qlib/bin/python")))
    args = ap.parse_args()
    if not Path(args.qlib_python).exists():
        raise SystemExit(f"no Qlib interpreter at {args.qlib_python}: see this script's docstring")
    settings = Settings.from_env(args.home)
    bt = load_config(args.config).backtest
    run_id, pred = run_predictions(settings, args.model, args.stockset)
    codes = sorted(pred["instrument"].unique())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads = 1")
    store = our_store(con, codes)
    pos = {s: j for j, s in enumerate(store.instruments)}
    pred["day_idx"] = np.searchsorted(store.dates, pred["date"].to_numpy().astype("datetime64[D]"))
    pred["inst_idx"] = pred["instrument"].map(pos).to_numpy()
    full = with_execution(pred, store)
    acct = topk_account(full, **topk_params(bt))
    t_ours = time.perf_counter() - t0
    write_qlib_data(con, store, work / "qlib_data")
    con.close()

    day = {d: i for i, d in enumerate(pd.DatetimeIndex(store.dates))}
    first, last = day[acct.index[0]], day[acct.index[-1]]
    params = {"start": str(store.dates[first + 1]), "end": str(store.dates[last + 2]),
              "codes": codes, "topk": bt.topk, "n_drop": bt.n_drop, "risk_degree": bt.risk_degree,
              "account": bt.account, "open_cost": bt.buy_cost, "close_cost": bt.sell_cost,
              "min_cost": bt.min_cost, "trade_unit": args.trade_unit, "benchmark": codes[0]}
    (work / "params.json").write_text(json.dumps(params))
    pred[["date", "instrument", "score"]].to_parquet(work / "signal.parquet", index=False)
    t0 = time.perf_counter()
    res = subprocess.run([args.qlib_python, str(ROOT / "benchmarks/qlib_topk_worker.py"),
                          str(work / "qlib_data"), str(work / "signal.parquet"),
                          str(work / "params.json"), str(work / "report.parquet")],
                         capture_output=True, text=True)
    t_qlib = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"Qlib failed:\n{res.stderr[-4000:]}")
    q = pd.read_parquet(work / "report.parquet").set_index("date")
    q.index = pd.to_datetime(q.index)

    cal = pd.DatetimeIndex(store.dates)
    t1 = cal[[day[t] + 1 for t in acct.index]]
    t2 = cal[[day[t] + 2 for t in acct.index]]
    ok = t2.isin(q.index) & t1.isin(q.index)
    a = acct[ok]
    # Qlib's rates are over the previous day's value after its costs, ours over the value before
    # the day's trades (at the day's prices): the same CNY, other denominators. From its CNY
    # columns: v0(T) = account(T) + cost(T) in CNY, the value at T's prices before T's trades.
    cny_cost = q["total_cost"].diff().fillna(q["total_cost"])
    cny_traded = q["total_turnover"].diff().fillna(q["total_turnover"])
    v0 = q["account"] + cny_cost
    gross_cny = q["account"] + cny_cost - q["account"].shift(1)       # earned from T-1 to T
    ours_view = pd.DataFrame({
        "gross": gross_cny.reindex(t2[ok]).to_numpy() / v0.reindex(t1[ok]).to_numpy(),
        "cost": (cny_cost / v0).reindex(t1[ok]).to_numpy(),
        "turnover": (cny_traded / v0).reindex(t1[ok]).to_numpy()}, index=a.index)
    ours_view["net"] = ours_view["gross"] - ours_view["cost"]
    q_ret, q_cost = q["return"].reindex(t2[ok]).to_numpy(), q["cost"].reindex(t1[ok]).to_numpy()
    rows = {"gross": stats(a["gross"], ours_view["gross"]),
            "cost": stats(a["cost"], ours_view["cost"]),
            "net": stats(a["net"], ours_view["net"]),
            "turnover (2-way)": stats(a["bought"] + a["sold"], ours_view["turnover"]),
            "net vs Qlib's own rates": stats(a["net"], pd.Series(q_ret - q_cost, a.index))}
    table = pd.DataFrame(rows).T
    print(f"run {run_id} ({args.model}, {args.stockset}), {int(ok.sum())} signal days "
          f"{a.index[0]:%Y-%m-%d}..{a.index[-1]:%Y-%m-%d}, {len(codes)} stocks, trade_unit "
          f"{args.trade_unit}; ours {t_ours:.1f} s (SQL + account), Qlib {t_qlib:.1f} s")
    with pd.option_context("display.width", 200, "display.max_columns", 10,
                           "display.float_format", "{:.4g}".format):
        print(table)
    worst = (a["net"] - ours_view["net"]).abs().sort_values().tail(3)
    print("largest net differences:", ", ".join(f"{d:%Y-%m-%d} {v:.2e}" for d, v in worst.items()))
    verdict = rows["net"]["max_abs_diff"] <= TOLERANCE
    print(f"agreement within {TOLERANCE:g} a day: {'yes' if verdict else 'no'}")


if __name__ == "__main__":
    main()
