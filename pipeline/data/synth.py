"""Deterministic synthetic data folder in the layout of `../shared/data`.

`write_synthetic(out_dir, SynthSpec(...))` writes `daily.parquet`, `membership.parquet`,
`index.parquet` (and `features.parquet` when `n_features > 0`, or with `panel_files` = day,
month or year the same rows as a `features/` folder: `features/2019-03-01.parquet`,
`features/2019-03.parquet`, or hive style `features/year=2019/part-0.parquet`; with
`price_files` = day, month or year the prices likewise as a `daily/` folder). Same spec, same
bytes.

The market is simulated on the adjusted average price p = amount / volume * factor, the
price the label uses (y_t = p_{t+2} / p_{t+1} - 1). Its log return is

    r_{i,t+2} = alpha_{i,t} + beta_i * m_{t+2} + sigma_{i,t+2} * z_{i,t+2}

so the label of day t has a predictable part alpha_{i,t} known at the close of t:

    alpha_{i,t} = MOM_B * style_i * mom5_{i,t} + VOL_C * sigma_i * highvol_t * vsurp_{i,t}

- `mom5` = log p_t - log p_{t-5}: the stock's own last-5-day return.
- `style_i` = +1 (momentum) or -1 (reversal). Momentum is likely for large caps, reversal for
  small caps, and the style is observable from price features because reversal stocks are
  about twice as volatile. Every stock set therefore mixes both styles.
- `vsurp` = log volume_t - mean(log volume_{t-4..t}): a volume surprise that only matters in
  the high-volatility market regime (a two-state Markov chain that doubles market volatility).

A model that knows the rule reaches a daily IC of about 0.1 (see `oracle_ic`). Around that:
three stock sets (csi300 / csi500 / csi1000 = the largest 20%, next 33%, next 47% by market
cap, rebalanced every 125 trading days), suspensions (missing rows), splits (factor changes),
late listings and early delistings, and one cap-weighted index series per set.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

INDEX_CODES = {"csi300": "SH000300", "csi500": "SH000905", "csi1000": "SH000852"}
SET_SHARES = (("csi300", 0.20), ("csi500", 1 / 3), ("csi1000", 0.4667))  # of n_stocks, by cap
REBALANCE_DAYS = 125   # two rebalances a year
MOM_B = 0.05           # momentum / reversal strength on the 5-day return
VOL_C = 0.25           # volume-surprise strength in the high-volatility regime
INFORMATIVE = ("mom5", "vsurp", "style", "highvol", "logcap")  # f0000.. in features.parquet
PANEL_FILES = ("single", "day", "month", "year")


@dataclass(frozen=True)
class SynthSpec:
    """Size and seed of a synthetic data folder."""

    n_stocks: int = 300
    n_days: int = 750
    seed: int = 0
    n_features: int = 0        # > 0: also write features.parquet with f0000..f{D-1}
    start: str = "2016-01-04"  # first business day
    panel_files: str = "single"  # the panel as features.parquet, or a features/ folder of one
                                 # file per "day", "month" or "year" (PANEL_FILES)
    price_files: str = "single"  # the prices as daily.parquet, or a daily/ folder of one file
                                 # per "day", "month" or "year" (PANEL_FILES)


@dataclass
class SynthPanel:
    """The simulated market, dense (Days, N) arrays; `traded` marks rows written to daily."""

    dates: pd.DatetimeIndex
    instruments: np.ndarray     # (N,) str
    logp: np.ndarray            # (Days, N) log adjusted average price
    alpha: np.ndarray           # (Days, N) predictable part of log(p_{t+2}/p_{t+1})
    traded: np.ndarray          # (Days, N) bool
    signals: dict[str, np.ndarray]  # name -> (Days, N) float, the inputs of alpha
    frames: dict[str, pd.DataFrame]  # daily, membership, index


def simulate(spec: SynthSpec) -> SynthPanel:
    """Simulate the whole market in memory (vectorised over stocks, one loop over days)."""
    if spec.n_stocks < 10 or spec.n_days < 30:
        raise ValueError("synthetic data needs at least 10 stocks and 30 days")
    rng = np.random.default_rng(spec.seed)
    n, days = spec.n_stocks, spec.n_days
    dates = pd.bdate_range(pd.Timestamp(spec.start), periods=days)
    half = n // 2
    instruments = np.array([f"SH{600000 + i:06d}" if i < half else f"SZ{i - half + 1:06d}"
                            for i in range(n)])

    # Per-stock constants. Size: log total shares; larger caps are more often momentum stocks.
    total_shares0 = np.exp(rng.normal(20.5, 1.0, n)).astype(np.int64) + 1_000_000
    price0 = np.exp(rng.normal(2.3, 0.5, n))
    logcap0 = np.log(total_shares0 * price0)
    cap_pct = logcap0.argsort().argsort() / (n - 1)                     # 0 = smallest
    style = np.where(rng.random(n) < 0.2 + 0.6 * cap_pct, 1.0, -1.0)   # (N,) +1 momentum
    sigma = np.where(style > 0, 0.013, 0.024) * np.exp(rng.normal(0, 0.15, n))
    beta = rng.uniform(0.7, 1.3, n)
    float_frac = rng.uniform(0.3, 1.0, n)
    logv_base = rng.normal(15.0, 0.7, n)

    # Market regime: two-state Markov chain, high-vol ~30% of days in spells of ~40 days.
    highvol = np.zeros(days, dtype=bool)
    u = rng.random(days)
    for t in range(1, days):
        highvol[t] = (u[t] < 0.975) if highvol[t - 1] else (u[t] < 0.011)
    m = rng.normal(0.0003, 1.0, days) * np.where(highvol, 0.02, 0.009)
    z = rng.standard_normal((days, n))
    zv = rng.standard_normal((days, n))

    logp = np.zeros((days, n))
    logv = np.zeros((days, n))
    alpha = np.zeros((days, n))
    mom5 = np.zeros((days, n))
    vsurp = np.zeros((days, n))
    logp_prev = np.log(price0)
    for t in range(days):
        sig_t = sigma * (1.5 if highvol[t] else 1.0)
        r = (alpha[t - 2] if t >= 2 else 0.0) + beta * m[t] + sig_t * z[t]
        logp[t] = logp_prev + r
        logp_prev = logp[t]
        logv[t] = logv_base + 0.35 * zv[t] + 0.4 * np.minimum(np.abs(r) / sigma, 4.0)
        if t >= 5:
            mom5[t] = logp[t] - logp[t - 5]
            vsurp[t] = logv[t] - logv[t - 4:t + 1].mean(axis=0)
            alpha[t] = MOM_B * style * mom5[t] + VOL_C * sigma * highvol[t] * vsurp[t]

    traded = _trading_mask(rng, days, n)
    factor = _factors(rng, days, n)
    shares_mult = factor / factor[0]              # splits multiply share counts too
    total_shares = (total_shares0 * shares_mult).astype(np.int64)
    float_shares = (total_shares * float_frac).astype(np.int64)

    avg_raw = np.exp(logp) / factor               # (Days, N) raw average price
    volume = np.maximum(np.exp(logv) * factor, 100).astype(np.int64)
    amount = volume * avg_raw                     # so amount / volume * factor == p exactly
    close = avg_raw * np.exp(rng.normal(0, 0.3, (days, n)) * sigma)
    open_ = avg_raw * np.exp(rng.normal(0, 0.4, (days, n)) * sigma)
    hi_base = np.maximum(np.maximum(open_, close), avg_raw)
    lo_base = np.minimum(np.minimum(open_, close), avg_raw)
    high = hi_base * np.exp(np.abs(rng.normal(0, 0.4, (days, n))) * sigma)
    low = lo_base * np.exp(-np.abs(rng.normal(0, 0.4, (days, n))) * sigma)
    cap = total_shares * close                    # (Days, N)

    names = np.array([f"STK{i:04d}" for i in range(n)], dtype=object)
    name_grid = np.broadcast_to(names, (days, n)).copy()
    last_day = np.where(traded.any(0), days - 1 - np.argmax(traded[::-1], axis=0), -1)
    delisting = (last_day < days - 1)[None, :] & (np.arange(days)[:, None] > last_day - 60)
    name_grid[delisting] = np.char.add("*ST", names.astype(str))[np.nonzero(delisting)[1]]

    ti, si = np.nonzero(traded)                   # row order: date, then instrument
    daily = pd.DataFrame({
        "date": dates.values[ti].astype("datetime64[ms]"),
        "instrument": instruments[si],
        "name": name_grid[ti, si].astype(str),
        "open": open_[ti, si], "high": high[ti, si], "low": low[ti, si], "close": close[ti, si],
        "volume": volume[ti, si], "amount": amount[ti, si], "factor": factor[ti, si],
        "float_shares": float_shares[ti, si], "total_shares": total_shares[ti, si],
    })
    member = _membership(traded, cap)             # name -> (Days, N) bool
    frames = {
        "daily": daily,
        "membership": _membership_frame(member, dates, instruments),
        "index": _index_frame(member, traded, cap, logp, volume, dates, rng),
    }
    signals = {"mom5": mom5, "vsurp": vsurp, "style": np.broadcast_to(style, (days, n)),
               "highvol": np.broadcast_to(highvol[:, None], (days, n)).astype(float),
               "logcap": np.log(cap)}
    return SynthPanel(dates, instruments, logp, alpha, traded, signals, frames)


def _trading_mask(rng, days: int, n: int) -> np.ndarray:
    """(Days, N) bool: listed and not suspended. ~5% list late, ~5% delist early."""
    traded = np.ones((days, n), dtype=bool)
    late = rng.random(n) < 0.05
    for i in np.nonzero(late)[0]:
        traded[: rng.integers(days // 8, days // 2), i] = False
    early = (rng.random(n) < 0.05) & ~late
    for i in np.nonzero(early)[0]:
        traded[rng.integers(days // 2, days - days // 8):, i] = False
    # Suspensions: ~0.1% chance a day starts one, lasting 1-20 days.
    starts = np.argwhere(rng.random((days, n)) < 0.001)
    lengths = rng.integers(1, 21, len(starts))
    for (t, i), k in zip(starts, lengths):
        traded[t:t + k, i] = False
    return traded


def _factors(rng, days: int, n: int) -> np.ndarray:
    """(Days, N) adjustment factor: starts in [1, 3]; ~10% of stocks split 2:1 once."""
    factor = np.broadcast_to(rng.uniform(1.0, 3.0, n), (days, n)).copy()
    for i in np.nonzero(rng.random(n) < 0.10)[0]:
        factor[rng.integers(10, days - 10):, i] *= 2.0
    return factor


def _membership(traded: np.ndarray, cap: np.ndarray) -> dict[str, np.ndarray]:
    """Point-in-time sets by cap rank among stocks trading on each rebalance day."""
    days, n = traded.shape
    member = {name: np.zeros((days, n), dtype=bool) for name, _ in SET_SHARES}
    listed_until = days - 1 - np.argmax(traded[::-1], axis=0)
    for t0 in range(0, days, REBALANCE_DAYS):
        t1 = min(t0 + REBALANCE_DAYS, days)
        ok = traded[t0]
        order = np.nonzero(ok)[0][np.argsort(-cap[t0, ok])]
        pos = 0
        for name, share in SET_SHARES:
            k = int(round(share * n))
            chosen = order[pos:pos + k]
            pos += k
            member[name][t0:t1, chosen] = True
    for name in member:  # a delisted stock leaves its set on its last trading day
        member[name] &= np.arange(days)[:, None] <= listed_until[None, :]
    return member


def _membership_frame(member, dates, instruments) -> pd.DataFrame:
    """Inclusive [start_date, end_date] intervals of consecutive membership days."""
    rows = []
    for name, grid in member.items():
        padded = np.vstack([np.zeros((1, grid.shape[1]), bool), grid, np.zeros((1, grid.shape[1]), bool)])
        diff = np.diff(padded.astype(np.int8), axis=0)   # (Days+1, N): +1 start, -1 end
        st, si = np.nonzero(diff == 1)
        et, ei = np.nonzero(diff == -1)
        starts = sorted(zip(si, st))
        ends = sorted(zip(ei, et))
        for (i, s), (_, e) in zip(starts, ends):
            rows.append((name, instruments[i], dates[s], dates[e - 1]))
    frame = pd.DataFrame(rows, columns=["index_name", "instrument", "start_date", "end_date"])
    for c in ("start_date", "end_date"):
        frame[c] = frame[c].astype("datetime64[ms]")
    return frame.sort_values(["index_name", "instrument", "start_date"], ignore_index=True)


def _index_frame(member, traded, cap, logp, volume, dates, rng) -> pd.DataFrame:
    """One cap-weighted index per set, level 1000 on the first day."""
    days = len(dates)
    ret = np.zeros_like(logp)
    ret[1:] = np.expm1(logp[1:] - logp[:-1])
    frames = []
    for name, grid in member.items():
        w = np.where(grid & traded, cap, 0.0)
        w_prev = np.vstack([w[:1], w[:-1]])           # weights fixed at the previous close
        idx_ret = (w_prev * ret).sum(1) / np.maximum(w_prev.sum(1), 1e-9)
        idx_ret[0] = 0.0
        close = 1000.0 * np.cumprod(1 + idx_ret)
        prev = np.concatenate([[close[0]], close[:-1]])
        open_ = prev * (1 + rng.normal(0, 0.002, days))
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, days)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, days)))
        vol = np.where(grid & traded, volume, 0).sum(1).astype(float)
        frames.append(pd.DataFrame({
            "date": dates.values.astype("datetime64[ms]"), "index_name": name,
            "instrument": INDEX_CODES[name], "open": open_, "high": high, "low": low,
            "close": close, "volume": vol}))
    return pd.concat(frames, ignore_index=True).sort_values(["date", "index_name"], ignore_index=True)


def oracle_ic(panel: SynthPanel) -> float:
    """Mean daily Pearson IC of alpha_t against the label y_t on traded rows (t, t+1, t+2)."""
    p = np.exp(panel.logp)
    y = np.full_like(p, np.nan)
    y[:-2] = p[2:] / p[1:-1] - 1
    ok = panel.traded.copy()
    ok[:-2] &= panel.traded[1:-1] & panel.traded[2:]
    ok[-2:] = False
    ics = []
    for t in range(5, len(p) - 2):
        sel = ok[t]
        if sel.sum() > 10:
            ics.append(np.corrcoef(panel.alpha[t, sel], y[t, sel])[0, 1])
    return float(np.nanmean(ics))


def write_synthetic(out_dir: Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write a data folder (daily, membership, index [, features] parquet); returns `out_dir`."""
    for what in ("panel_files", "price_files"):
        if getattr(spec, what) not in PANEL_FILES:
            raise ValueError(f"{what} {getattr(spec, what)!r}: expected one of {PANEL_FILES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panel = simulate(spec)
    for name, frame in panel.frames.items():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if name == "daily" and spec.price_files != "single":
            _write_split(table, out_dir / "daily", spec.price_files)
        else:
            pq.write_table(table, out_dir / f"{name}.parquet")
    if spec.n_features > 0:
        write_feature_panel(out_dir / "features.parquet", panel, spec)
    log.info("synthetic data: %d stocks x %d days, %d price rows -> %s",
             spec.n_stocks, spec.n_days, len(panel.frames["daily"]), out_dir)
    return out_dir


def _panel_file(date: np.datetime64, by: str) -> str:
    """The file (relative to features/ or daily/) holding `date` when the panel or the prices
    are split `by` day/month/year."""
    day = str(date.astype("datetime64[D]"))
    return {"day": f"{day}.parquet", "month": f"{day[:7]}.parquet",
            "year": f"year={day[:4]}/part-0.parquet"}[by]


def _write_split(table: pa.Table, folder: Path, by: str) -> None:
    """`table` (in date order) as one file per day, month or year under `folder`."""
    dates = table.column("date").to_numpy().astype("datetime64[D]")
    keys = np.array([_panel_file(x, by) for x in np.unique(dates)])[
        np.searchsorted(np.unique(dates), dates)]
    cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    for a, b in zip(np.r_[0, cut], np.r_[cut, len(keys)]):
        (folder / keys[a]).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(a, b - a), folder / keys[a])


def write_feature_panel(path: Path, panel: SynthPanel, spec: SynthSpec,
                        rows_per_group: int = 50_000) -> None:
    """Wide float32 panel, one row per traded stock-day, written in row groups.

    f0000..f0004 are the (noisy) signal inputs named in `INFORMATIVE`; the rest is noise.
    Chunks are drawn from their own seeded generator, so memory stays ~rows_per_group x D.
    `spec.panel_files` other than "single": `path`'s folder gets features/ instead, the same
    rows split by date into one file per day, month or year.
    """
    from tqdm import tqdm

    d = spec.n_features
    names = [f"f{j:04d}" for j in range(d)]
    ti, si = np.nonzero(panel.traded)
    dates = panel.dates.values.astype("datetime64[ms]")
    stats = {sig: (panel.signals[sig][ti, si].mean(), panel.signals[sig][ti, si].std() + 1e-12)
             for sig in INFORMATIVE[:d]}
    schema = pa.schema([("date", pa.timestamp("ms")), ("instrument", pa.string())]
                       + [(c, pa.float32()) for c in names])
    split = spec.panel_files != "single"
    folder = path.parent / "features"
    # one file per period: rows are in date order, so a period's rows are contiguous
    period = (np.array([_panel_file(x, spec.panel_files) for x in dates]) if split else None)
    writer, current = None, None

    def open_writer(target: Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        # Noise does not compress: compressing it costs time and saves no space.
        return pq.ParquetWriter(target, schema, compression="none", use_dictionary=["instrument"])

    try:
        if not split:
            writer = open_writer(path)
        starts = range(0, len(ti), rows_per_group)
        for k, lo in enumerate(tqdm(starts, desc="features", unit="group", file=sys.stderr,
                                    disable=None, leave=False)):
            t, s = ti[lo:lo + rows_per_group], si[lo:lo + rows_per_group]
            rng = np.random.default_rng([spec.seed, 7, k])
            block = rng.standard_normal((len(t), d), dtype=np.float32)   # (rows, D)
            for j, sig in enumerate(INFORMATIVE[:d]):
                mu, sd = stats[sig]
                x = (panel.signals[sig][t, s] - mu) / sd
                block[:, j] = x + 0.1 * block[:, j]
            cols = [pa.array(dates[t]), pa.array(panel.instruments[s])]
            block = np.asfortranarray(block)          # contiguous columns for pyarrow
            cols += [pa.array(block[:, j]) for j in range(d)]
            table = pa.Table.from_arrays(cols, schema=schema)
            if not split:
                writer.write_table(table)
                continue
            keys = period[t]
            cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
            for a, b in zip(np.r_[0, cut], np.r_[cut, len(t)]):
                if keys[a] != current:
                    if writer is not None:
                        writer.close()
                    current = keys[a]
                    writer = open_writer(folder / current)
                writer.write_table(table.slice(a, b - a))
    finally:
        if writer is not None:
            writer.close()
