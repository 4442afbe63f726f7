"""Our Alpha158 SQL against Qlib's own Alpha158, values and time, on the same stocks.

    python -m venv .venv-qlib && .venv-qlib/bin/pip install pyqlib==0.9.7   # once; not a project dependency
    .venv/bin/python benchmarks/bench_qlib.py [--qlib-python .venv-qlib/bin/python] [--stocks 300]

1. Writes ../shared/data in Qlib's binary layout under --work: `calendars/day.txt` (every
   market day), `instruments/all.txt`, `features/<inst>/<field>.day.bin` (little-endian
   float32, the first value the stock's start index in the calendar, then one value per
   calendar day up to its last day, NaN where it was suspended) with Qlib's conventions:
   open/high/low/close/vwap adjusted (raw x factor; vwap = amount / volume, OHLC/4 where
   volume or amount is 0), volume adjusted (volume / factor), factor.
2. Times our SQL (sql/features/alpha158.sql, in a DuckDB holding those stocks' prices, both
   cores) and Qlib's `D.features` of `Alpha158DL.get_feature_config()` (Qlib's expression
   engine, no caches, 2 worker processes) on the same stocks, side by side.
3. Compares the values on the stock-days that both define the same way: Qlib's windows run
   over market days (a suspended day is a NaN inside the window, min_periods=1), ours over
   the stock's own trading days, so only days whose previous 60 market days the stock all
   traded, 61 rows or more into its history, are compared. Qlib reads float32 inputs, so its
   features carry float32 rounding (~1e-7 of each price): the table gives agreement at
   several tolerances and the worst features.

Measured 2026-11-24 on the 2-core box, idle (load 0.2-1.2), pyqlib 0.9.7 in its own venv:
  300 random stocks (513,949 stock-days): our SQL 5.32 s wall / 9.10 s CPU, Qlib D.features
    17.44 s wall (3.3x ours); 1000 stocks (1,726,389): ours 16.85 s / 27.81 s CPU, Qlib 52.08 s
    (3.1x); peak RSS of the whole run 6.2 GB (both DataFrames held for the comparison).
  After the sums-based std/corr SQL (684a67b), later the same day, load ~1: 1000 stocks ours 14.39 s
    / 23.66 s CPU, Qlib 54.55 s (3.8x); agreement 99.32463% / 99.97881% / 99.99453% at the
    three tolerances, the same 125 CORD NaNs: the same values as before.
  With RANK from day-lag sign sums and the 5/10-day quantiles from a comparator network
  (d323073), next session, load ~0.7-1.2: 1000 stocks ours 11.90 s / 19.40 s CPU, Qlib 52.33 s
  (4.4x); agreement again 99.32463% / 99.97881% / 99.99453%, the same 125 CORD NaNs.
  Values, 1000 stocks, 1,326,424 comparable stock-days, 209.6M values: 99.325% within rtol
    1e-5, 99.979% within 1e-4, 99.995% within 1e-3. Every difference looked at comes from
    Qlib's float32 inputs or from the documented warm-up rule:
    - CNTP/CNTN/CNTD (0.03-0.2% of values): ex-dividend days whose adjusted close equals the
      day before up to one float64 ulp (e.g. SZ002133 2020-06-05: 3.05 x 2.996447 vs
      3.13 x 2.919861, a 1.8e-15 "rise" for us, equal in float32 for Qlib);
    - RANK (0.02-0.04%): closes equal in float32 but not in float64, a tie for Qlib only
      (SH603117 2020-07-28 vs 2020-07-16: 5.777487 both);
    - KSFT2, KMID2, CORR5, CORD5 (within 1e-3 but not 1e-5): ratios of differences of
      float32-rounded prices, e.g. (2c - h - l) / (h - l);
    - CORD (125 values NaN for us only): one stock with a zero-volume day (SZ002336
      2020-06-17); the next day's log volume ratio is infinite, which we count as missing and
      so return NULL until the window holds w finite ratios; Qlib computes from the rest
      (min_periods=1).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.features.alpha158 import FEATURE_NAMES, LOOKBACK_ROWS, VWAP_SQL  # noqa: E402
from pipeline.warehouse import sql_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FIELDS = ("open", "high", "low", "close", "vwap", "volume", "factor")
TOLERANCES = ((1e-5, 1e-7), (1e-4, 1e-6), (1e-3, 1e-5))   # (rtol, atol) tiers


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_prices(con, data: Path, n_stocks: int, seed: int) -> list[str]:
    """Table `prices` of n_stocks random instruments (0: all), as the warehouse has it."""
    con.execute("CREATE TABLE raw AS SELECT CAST(date AS DATE) date, * EXCLUDE (date) "
                "FROM read_parquet($f)", {"f": str(data / "daily.parquet")})
    every = sorted(r[0] for r in con.execute("SELECT DISTINCT instrument FROM raw").fetchall())
    if n_stocks and n_stocks < len(every):
        rng = np.random.default_rng(seed)
        every = sorted(rng.choice(every, n_stocks, replace=False).tolist())
    con.execute("CREATE TABLE prices AS SELECT * FROM raw WHERE list_contains($i, instrument)",
                {"i": every})
    return every


def write_qlib_layout(con, out: Path) -> None:
    """Qlib's binary dataset of table `prices` (see module docstring)."""
    calendar = [r[0] for r in con.execute("SELECT DISTINCT date FROM raw ORDER BY date").fetchall()]
    pos = {d: i for i, d in enumerate(calendar)}
    (out / "calendars").mkdir(parents=True, exist_ok=True)
    (out / "instruments").mkdir(exist_ok=True)
    (out / "calendars" / "day.txt").write_text("".join(f"{d:%Y-%m-%d}\n" for d in calendar))
    df = con.execute(f"""
        SELECT instrument, date, open * factor AS open, high * factor AS high, low * factor AS low,
               close * factor AS close, {VWAP_SQL} AS vwap, volume / factor AS volume, factor
        FROM prices ORDER BY instrument, date""").df()
    lines = []
    for inst, g in df.groupby("instrument", sort=True):
        idx = np.array([pos[d] for d in g["date"].dt.date], dtype=np.int64)
        first, last = int(idx[0]), int(idx[-1])
        folder = out / "features" / inst.lower()
        folder.mkdir(parents=True, exist_ok=True)
        for field in FIELDS:
            values = np.full(last - first + 1, np.nan, dtype="<f4")
            values[idx - first] = g[field].to_numpy(np.float64)
            np.hstack([np.array([first], dtype="<f4"), values]).astype("<f4").tofile(
                folder / f"{field}.day.bin")
        lines.append(f"{inst}\t{calendar[first]:%Y-%m-%d}\t{calendar[last]:%Y-%m-%d}\n")
    (out / "instruments" / "all.txt").write_text("".join(lines))


def comparable_rows(con) -> pd.DataFrame:
    """(instrument, date) where the stock traded on each of the last 61 market days."""
    return con.execute("""
        WITH cal AS (SELECT date, row_number() OVER (ORDER BY date) AS m FROM (SELECT DISTINCT date FROM raw)),
        p AS (SELECT instrument, date, m, row_number() OVER (PARTITION BY instrument ORDER BY date) AS x
              FROM prices JOIN cal USING (date))
        SELECT instrument, date FROM (
            SELECT *, lag(m, $lb) OVER (PARTITION BY instrument ORDER BY date) AS m_back FROM p)
        WHERE x > $lb AND m - m_back = $lb""", {"lb": LOOKBACK_ROWS - 1}).df()


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    keys = keys.assign(date=pd.to_datetime(keys["date"]))
    a = keys.merge(ours.assign(date=pd.to_datetime(ours["date"])), on=["instrument", "date"])
    t = theirs.reset_index().rename(columns={"datetime": "date"})
    t["date"] = pd.to_datetime(t["date"])
    b = keys.merge(t, on=["instrument", "date"])
    a = a.sort_values(["instrument", "date"]).reset_index(drop=True)
    b = b.sort_values(["instrument", "date"]).reset_index(drop=True)
    if len(a) != len(b) or not (a["date"].values == b["date"].values).all():
        raise SystemExit(f"row sets differ: ours {len(a)}, qlib {len(b)}")
    rows = []
    for name in FEATURE_NAMES:
        x = a[name].to_numpy(np.float64)
        y = b[name].to_numpy(np.float64)
        both = ~np.isnan(x) & ~np.isnan(y)
        row = {"feature": name, "n": int(both.sum()),
               "nan_mismatch": int((np.isnan(x) != np.isnan(y)).sum())}
        for rtol, atol in TOLERANCES:
            row[f"ok@{rtol:g}"] = float(np.isclose(x[both], y[both], rtol=rtol, atol=atol).mean()) if both.any() else 1.0
        rel = np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-12)
        row["median_rel"] = float(np.median(rel)) if both.any() else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qlib-python", default=os.environ.get("QLIB_PYTHON", str(ROOT / ".venv-qlib/bin/python")))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/miga-bench-qlib"))
    ap.add_argument("--stocks", type=int, default=300,
                    help="random sample size; 0 = all. Both DataFrames are held for the comparison: "
                         "1000 stocks peaked at 6.2 GB, the whole panel would need about 4x that")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not Path(args.qlib_python).exists():
        raise SystemExit(f"no Qlib interpreter at {args.qlib_python}: see this script's docstring")
    args.work.mkdir(parents=True, exist_ok=True)
    provider = args.work / f"qlib_data_{args.stocks}_{args.seed}"

    con = duckdb.connect()
    con.execute("SET threads = 2")
    stocks = load_prices(con, args.data, args.stocks, args.seed)
    n_rows = con.execute("SELECT count(*) FROM prices").fetchall()[0][0]
    print(f"{len(stocks)} stocks, {n_rows:,} stock-days")
    if not (provider / "instruments" / "all.txt").exists():
        t = time.perf_counter()
        write_qlib_layout(con, provider)
        print(f"Qlib layout written to {provider} in {time.perf_counter() - t:.1f} s")

    params = {"instruments": stocks, "after": "1900-01-01", "lookback": LOOKBACK_ROWS}
    t, c = time.perf_counter(), cpu()
    ours = con.execute(sql_text("features/alpha158"), params).df()
    sql_wall, sql_cpu = time.perf_counter() - t, cpu() - c

    inst_file = args.work / "instruments.txt"
    inst_file.write_text("".join(f"{s}\n" for s in stocks))
    out = args.work / "qlib_alpha158.parquet"
    start, end = (str(v) for v in con.execute("SELECT min(date), max(date) FROM raw").fetchall()[0])
    t = time.perf_counter()
    res = subprocess.run([args.qlib_python, str(ROOT / "benchmarks/qlib_alpha158_worker.py"), str(provider),
                          str(inst_file), start, end, str(out), "2"],
                         capture_output=True, text=True)
    qlib_proc = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"Qlib worker failed:\n{res.stderr[-3000:]}")
    q = json.loads(res.stdout.strip().splitlines()[-1])
    theirs = pd.read_parquet(out)

    print(f"\nAlpha158 on the same {len(stocks)} stocks, 2 cores each:")
    print(f"  our SQL (DuckDB, fetch DataFrame): {sql_wall:7.2f} s wall  {sql_cpu:7.2f} s CPU  "
          f"({len(ours):,} rows)")
    print(f"  Qlib D.features (2 processes)    : {q['seconds']:7.2f} s wall  "
          f"(worker process {qlib_proc:.2f} s with imports; {q['rows']:,} rows incl. suspended days)")
    print(f"  ratio Qlib / ours (wall)         : {q['seconds'] / sql_wall:7.2f}x")

    keys = comparable_rows(con)
    table = compare(ours, theirs, keys)
    n_vals = int(table["n"].sum())
    print(f"\nValues on {len(keys):,} comparable stock-days ({n_vals:,} feature values):")
    for rtol, atol in TOLERANCES:
        col = f"ok@{rtol:g}"
        share = float((table[col] * table["n"]).sum() / max(n_vals, 1))
        print(f"  within rtol {rtol:g} / atol {atol:g}: {share:.5%} of values; "
              f"features with every value within: {(table[col] == 1).sum()}/158")
    one_side = table[table["nan_mismatch"] > 0]
    print(f"  NaN on one side only: {int(table['nan_mismatch'].sum()):,} values"
          + "".join(f"; {r.feature} {r.nan_mismatch}" for r in one_side.itertuples()))
    worst = table.sort_values("ok@0.001").head(12)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("\nleast agreeing features:\n" + worst.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
