"""Independent plain-pandas Alpha158, one stock at a time, written from Qlib's expressions.

Used to check the SQL (`sql/features/alpha158.sql`) and as the benchmark's baseline. It follows
the same documented conventions (alpha158.py docstring): adjusted prices and vwap, volume /
factor, NaN until a window is full (`min_periods=w`), non-finite log volume ratios missing,
RANK = rolling average-rank percentile, Qlib's std <= 2e-5 rule for CORR/CORD/RSQR.
Regression features use rolling covariances against the day index, not DuckDB's regr_*.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

WINDOWS = (5, 10, 20, 30, 60)


def _idx_first(x: np.ndarray, w: int, fn) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) >= w:
        out[w - 1:] = fn(sliding_window_view(x, w), axis=1) + 1  # first occurrence, 1-based
    return out


def alpha158_one(df: pd.DataFrame) -> pd.DataFrame:
    """df: one stock's price rows sorted by date (open..close raw, volume, amount, factor)."""
    f = df["factor"].to_numpy(float)
    o, h, l, c = (df[k].to_numpy(float) * f for k in ("open", "high", "low", "close"))
    vol, amt = df["volume"].to_numpy(float), df["amount"].to_numpy(float)
    ok = (vol > 0) & (amt > 0)
    with np.errstate(all="ignore"):
        vwap = np.where(ok, amt / np.where(ok, vol, 1) * f, (df["open"] + df["high"] + df["low"]
                                                             + df["close"]).to_numpy(float) / 4 * f)
    v = vol / f
    C, V, H, L = pd.Series(c), pd.Series(v), pd.Series(h), pd.Series(l)
    out: dict[str, np.ndarray | pd.Series] = {}
    out["KMID"] = (c - o) / o
    out["KLEN"] = (h - l) / o
    out["KMID2"] = (c - o) / (h - l + 1e-12)
    out["KUP"] = (h - np.maximum(o, c)) / o
    out["KUP2"] = (h - np.maximum(o, c)) / (h - l + 1e-12)
    out["KLOW"] = (np.minimum(o, c) - l) / o
    out["KLOW2"] = (np.minimum(o, c) - l) / (h - l + 1e-12)
    out["KSFT"] = (2 * c - h - l) / o
    out["KSFT2"] = (2 * c - h - l) / (h - l + 1e-12)
    out["OPEN0"], out["HIGH0"], out["LOW0"], out["VWAP0"] = o / c, h / c, l / c, vwap / c

    C1, V1 = C.shift(1), V.shift(1)
    d = C - C1
    cr = C / C1
    with np.errstate(all="ignore"):
        lvr = np.log(V / V1 + 1)
    lvr = lvr.where(np.isfinite(lvr))
    lv = np.log(V + 1)
    up = (C > C1).astype(float).where(C1.notna())
    dn = (C < C1).astype(float).where(C1.notna())
    gp, gn, ad = d.clip(lower=0), (-d).clip(lower=0), d.abs()
    wv = (cr - 1).abs() * V
    vd = V - V1
    vgp, vgn, vad = vd.clip(lower=0), (-vd).clip(lower=0), vd.abs()
    t = pd.Series(np.arange(len(c), dtype=float))

    def roll(s, w):
        return s.rolling(w, min_periods=w)

    res: dict[str, dict[int, pd.Series]] = {}
    for w in WINDOWS:
        std = roll(C, w).std()
        mean = roll(C, w).mean()
        slope = roll(C, w).cov(t) / roll(t, w).var()
        corr_tc = roll(C, w).corr(t)
        resid = C - (mean + slope * (t - roll(t, w).mean()))
        hmax, lmin = roll(H, w).max(), roll(L, w).min()
        imax = pd.Series(_idx_first(h, w, np.argmax))
        imin = pd.Series(_idx_first(l, w, np.argmin))
        std_lv = roll(lv, w).std()
        std_cr, std_lvr = roll(cr, w).std(), roll(lvr, w).std()
        sp, sn, sa = roll(gp, w).sum(), roll(gn, w).sum(), roll(ad, w).sum()
        vp, vn, va = roll(vgp, w).sum(), roll(vgn, w).sum(), roll(vad, w).sum()
        cp, cn = roll(up, w).mean(), roll(dn, w).mean()
        r = {
            "ROC": C.shift(w) / C,
            "MA": mean / C,
            "STD": std / C,
            "BETA": slope / C,
            "RSQR": (corr_tc ** 2).where(std > 2e-5),
            "RESI": resid / C,
            "MAX": hmax / C,
            "MIN": lmin / C,
            "QTLU": roll(C, w).quantile(0.8) / C,
            "QTLD": roll(C, w).quantile(0.2) / C,
            "RANK": roll(C, w).rank(pct=True),
            "RSV": (C - lmin) / (hmax - lmin + 1e-12),
            "IMAX": imax / w,
            "IMIN": imin / w,
            "IMXD": (imax - imin) / w,
            "CORR": roll(C, w).corr(lv).where((std > 2e-5) & (std_lv > 2e-5)),
            "CORD": roll(cr, w).corr(lvr).where((std_cr > 2e-5) & (std_lvr > 2e-5)),
            "CNTP": cp,
            "CNTN": cn,
            "CNTD": cp - cn,
            "SUMP": sp / (sa + 1e-12),
            "SUMN": sn / (sa + 1e-12),
            "SUMD": (sp - sn) / (sa + 1e-12),
            "VMA": roll(V, w).mean() / (V + 1e-12),
            "VSTD": roll(V, w).std() / (V + 1e-12),
            "WVMA": roll(wv, w).std() / (roll(wv, w).mean() + 1e-12),
            "VSUMP": vp / (va + 1e-12),
            "VSUMN": vn / (va + 1e-12),
            "VSUMD": (vp - vn) / (va + 1e-12),
        }
        # operators on one-day changes need w changes (w + 1 rows); on prices w rows
        for k, s in r.items():
            res.setdefault(k, {})[w] = s
    for k, by_w in res.items():
        for w, s in by_w.items():
            out[f"{k}{w}"] = np.asarray(s, dtype=float)
    frame = pd.DataFrame({k: np.asarray(val, dtype=float) for k, val in out.items()})
    frame.insert(0, "date", df["date"].to_numpy())
    return frame


def alpha158_reference(prices: pd.DataFrame) -> pd.DataFrame:
    """All stocks of `prices` (date, instrument, raw OHLC, volume, amount, factor)."""
    parts = []
    for inst, g in prices.sort_values(["instrument", "date"]).groupby("instrument", sort=True):
        f = alpha158_one(g.reset_index(drop=True))
        f.insert(1, "instrument", inst)
        parts.append(f)
    return pd.concat(parts, ignore_index=True)
