"""Qlib's Alpha158 (`qlib/contrib/data/loader.py`, `Alpha158DL`) as one DuckDB statement.

`render_sql()` writes `sql/features/alpha158.sql` from the operator table below, so the 145
rolling columns come from one definition each instead of 145 hand-copied lines; the file is
committed and `tests/code/test_features.py` checks it is up to date
(`python -m pipeline.features.alpha158 > sql/features/alpha158.sql` regenerates it).

Inputs (from `prices`), as Qlib's data has them:
  open, high, low, close  = raw x factor (back-adjusted)
  vwap                    = amount / volume x factor, or (open+high+low+close)/4 x factor
                            where volume or amount is 0/missing (the label uses the same p)
  volume                  = volume / factor (Qlib stores adjusted volume; shares scale
                            inversely to prices at a split, so this removes split jumps)

Windows are the stock's own trading days (`ROWS BETWEEN w-1 PRECEDING`). Where Qlib fills the
warm-up with `min_periods=1`, we return NULL until the window is full: w rows for operators on
prices, w valid one-day changes (w+1 rows) for operators on changes, d+1 rows for ROC{d}.
A log volume ratio that is not finite (previous volume 0) counts as missing. Volume is never
NULL in `prices` (its expectations), so volume windows hold w values. RANK is the
average-rank percentile of today's close in the window (`rank(pct=True)`, as current Qlib);
CORR/CORD and RSQR are NULL where a series' window std is <= 2e-5 (Qlib's np.isclose rule).
"""
from __future__ import annotations

import re

WINDOWS = (5, 10, 20, 30, 60)
LOOKBACK_ROWS = max(WINDOWS) + 1  # 60 one-day changes need 61 rows of the stock


def _pick(fn: str, a: str, b: str) -> str:
    """least / greatest of two columns as a CASE: about half the cost of DuckDB's least(a, b),
    and the same value wherever a feature reads it (open, high, low and close are never NULL
    in `prices`; a NULL day lag only occurs in a stock's warm-up, whose features are NULL)."""
    return f"CASE WHEN {a} {'<' if fn == 'least' else '>'} {b} THEN {a} ELSE {b} END"


KBAR = [
    ("KMID", "(c - o) / o"),
    ("KLEN", "(h - l) / o"),
    ("KMID2", "(c - o) / (h - l + 1e-12)"),
    ("KUP", f"(h - {_pick('greatest', 'o', 'c')}) / o"),
    ("KUP2", f"(h - {_pick('greatest', 'o', 'c')}) / (h - l + 1e-12)"),
    ("KLOW", f"({_pick('least', 'o', 'c')} - l) / o"),
    ("KLOW2", f"({_pick('least', 'o', 'c')} - l) / (h - l + 1e-12)"),
    ("KSFT", "(2 * c - h - l) / o"),
    ("KSFT2", "(2 * c - h - l) / (h - l + 1e-12)"),
]
PRICE = [("OPEN0", "o / c"), ("HIGH0", "h / c"), ("LOW0", "l / c"), ("VWAP0", "vwap / c")]

# Window aggregates, computed once per window w (suffix _w): name -> SQL aggregate. Each framed
# aggregate is a DuckDB window expression (~200-600 ns per row); the sums below replace the
# others (std and corr of c included, ~2x cheaper from sums).
AGGS = {
    # for w in NETWORK_WINDOWS (5, 10) the order statistics come from a comparator network over
    # the day lags instead (_network_ctes), cheaper than DuckDB's windowed quantile (a skip list
    # per window); for w = 20 the network (~190 least/greatest) is slower than the skip list
    "q": "quantile_cont(c, [0.2, 0.8])",
}
# hmax_w, lmin_w (highest high, lowest low) and imax_w, imin_w (row number x of their first
# day, as numpy's argmax) come from running scans of the day lags (_scan_layers, w <= 10)
# and from lags of the 10-day ones (_long_ext), with exact ties.
# RANK's rkd_w = #(window < c) - #(window > c) =
# sum of sign(c - c_j) over the closes j < w days back, summed in blocks between consecutive
# windows (_rank_blocks), each block once: 59 signs per row cost less than the two framed
# ranks (rank(ORDER BY c) and its DESC twin, ~220 ns each) per window they replace. The closes
# 1..10 days back are day lags; older ones are read from the lagged PACKED structs (_close).

# Window sums without framed aggregates. A lag of a double costs ~1/20 of a framed aggregate,
# so the 5- and 10-day sums are plain sums of the day's and the 9 previous days' values
# (built from lags c_j = lag(c, j), v_j of close and volume, j = 0..10: no extra window pass),
# and sum_20/30/60 = sum_10 + lag(sum_10, 10) + ... (k lags of sum_10, taken in the framed
# aggregates' pass as lags of one struct of all the 10-day quantities, PACKED). Sums of at
# most 60 terms, as exact as the framed sum (no running totals, so no cancellation between
# large prefix sums). A day before the stock's first row makes a sum NULL, and so does a
# missing log volume ratio in CORD's sums (no coalesce: ~5% of the statement): the warm-up
# rules only read windows whose days all exist (close and volume are never NULL in `prices`)
# and CORD's needs w finite ratios, so a NULL only reaches features that are NULL anyway.
# Variances from sums of squares are only taken of O(1) centred series, so that a flat window
# gives exactly 0 (Qlib's 2e-5 rules read them): CORD's cr - 1 and lvr - ln 2, and for STD,
# RSQR and CORR the closes relative to the row's own close, y_j = c_j / c - 1 (y2, ylv). A
# 10-day block lagged by 10 k holds its y sums relative to its own close r (packed `ref`);
# _long_sums rescales them to today's close. Volume sums stay raw: a flat window's rounding is
# ~1.5e-8 of the level, below the features' tolerance and, for ln(v + 1) < 25, CORR's 2e-5.
# The day's series in terms of {c}, {c1}, {v}, {v1} = close and volume of the day and the day before.
BASE = {
    "lv": "ln({v} + 1)",
    "cr": "{c} / {c1}",
    # NULL where v1 is missing or 0 (then v / v1 + 1 is inf or NaN): a missing ratio
    "lvr": "ln({v} / nullif({v1}, 0) + 1)",
    "wv": "abs({c} / {c1} - 1) * {v}",
}
SUMS = {
    # packed counts, exact in a double: sign(dc) + 1000 |sign(dc)| + 1e6 [lvr valid]; over w <= 60
    # days that is (rises - falls) + 1000 (rises + falls) + 1e6 k (decoded in DERIVED)
    "n": "sign({c} - {c1}) + 1000 * abs(sign({c} - {c1}))"
         " + 1000000 * CAST({lvr} IS NOT NULL AS DOUBLE)",
    "c": "{c}",
    # sum |dc|; sum max(dc, 0) = (sum |dc| + c - c_w) / 2 (the dc telescope), likewise for v
    "ad": "abs({c} - {c1})",
    "avd": "abs({v} - {v1})",
    "v": "{v}",
    "v2": "{v} * {v}",
    "wv": "{wv}",
    "wv2": "{wv} * {wv}",
    "lv": "{lv}",
    "lv2": "{lv} * {lv}",
    "cr": "{cr} - 1",
    "cr2": "({cr} - 1) * ({cr} - 1)",
    "lr": "{lvr} - ln(2)",
    "lr2": "({lvr} - ln(2)) * ({lvr} - ln(2))",
    "crlr": "({cr} - 1) * ({lvr} - ln(2))",
    # closes relative to the row's own close (y = c_j / c - 1): std and corr of c from sums
    "y2": "({c} / c - 1) * ({c} / c - 1)",
    "ylv": "({c} / c - 1) * {lv}",
}
SUM_STEP = 10   # sums of the last 5 and 10 days from day lags; longer windows from lags of sum_10


# Running extremes of the day lags, one day a layer of the network CTEs (_scan_layers): the
# highest high and its row number over days 0..j back, and likewise the lowest low.
SCANS = {"hmax": ("h", ">=", "imax"), "lmin": ("l", "<=", "imin")}


def _scan_layers() -> list[list[str]]:
    """Layer j - 1 compares day j with the extreme of days 0..j-1 (a CASE on one condition for
    the value and its row number x - j); ties go to day j, the older, so the row number is the
    earliest day holding the extreme (numpy's argmax). hmax_w = hmax_d{w-1}, for w <= SUM_STEP."""
    layers = []
    for j in range(1, SUM_STEP):
        cols = []
        for name, (col, op, arg) in SCANS.items():
            ext, ext_x = (col, "x") if j == 1 else (f"{name}_d{j - 1}", f"{arg}_d{j - 1}")
            cond = f"{col}_{j} {op} {ext}"
            cols += [f"CASE WHEN {cond} THEN {col}_{j} ELSE {ext} END AS {name}_d{j}",
                     f"CASE WHEN {cond} THEN x - {j} ELSE {ext_x} END AS {arg}_d{j}"]
        layers.append(cols)
    return layers


def _short(name: str, w: int) -> str:
    """Max / min / first arg max of a window w <= SUM_STEP: the scan's column for day w - 1."""
    return f"{name}_d{w - 1}"


SHORT = ("hmax", "lmin", "imax", "imin")
CLOSE_LAGS = SUM_STEP   # day lags of the close c_1 .. c_10


def _close(j: int) -> str:
    """The close of j days back, 1 <= j < max(WINDOWS). Beyond the day lags it is a field of
    the PACKED struct lagged by k (a multiple of SUM_STEP), which carries its row's closes
    c_1 .. c_9 (PACKED_CLOSES) besides its own (REF): nine more fields in the 5 struct lags
    cost less than 49 more day lags (figures in benchmarks/bench_features.py)."""
    if j <= CLOSE_LAGS:
        return f"c_{j}"
    k, i = divmod(j, SUM_STEP)
    return f"{_packed_lag(k * SUM_STEP)}." + (REF if i == 0 else f"c_{i}")


def _rank_block(a: int, b: int) -> str:
    """#(closes a..b-1 days back < c) - #(> c), one block of _rank_blocks()."""
    return " + ".join(f"sign(c - {_close(j)})" for j in range(a, b)) + f" AS rkb_{a}"


def _rank_blocks() -> list[tuple[int, int]]:
    """Day-lag ranges [a, b) between consecutive windows: (1, 5), (5, 10), .., (30, 60)."""
    return list(zip((1,) + WINDOWS[:-1], WINDOWS))


def _is_short(name: str, w: int) -> bool:
    if name == "q":
        return w in NETWORK_WINDOWS
    return name in SHORT and w <= SUM_STEP


LONG_EXT = ("hmax", "lmin", "imax", "imin")


def _long_ext(name: str, w: int) -> str:
    """Max / min / first arg max of a window w = 10 k from lags of the 10-day ones: the
    extreme of the block extremes, and the oldest block holding it gives the earliest day."""
    def lag(col: str, k: int) -> str:
        return col if k == 0 else f"{_packed_lag(k)}.{col}"
    offs = range(0, w, SUM_STEP)
    ext_name = "hmax" if name in ("hmax", "imax") else "lmin"
    fn = "greatest" if ext_name == "hmax" else "least"
    ext = f"{fn}(" + ", ".join(lag(f"{ext_name}_{SUM_STEP}", k) for k in offs) + ")"
    if name == ext_name:
        return ext
    return ("CASE " + " ".join(f"WHEN {lag(f'{ext_name}_{SUM_STEP}', k)} = {ext} THEN {lag(f'{name}_{SUM_STEP}', k)}"
                               for k in reversed(offs[1:])) + f" ELSE {name}_{SUM_STEP} END")
# t_w = sum over the window of j * c_j, j = 0..w-1 (for BETA): t_w = sum over k of
# lag(t_10, 10 k) + 10 k lag(s_10, 10 k). Then sum((x - mean x) c) = (w - 1) / 2 s_c - t and regr_slope(c, x) follows.
# window quantities from the sums s_<name> and t (suffix _w)
DERIVED = {
    "k": "floor(s_n / 1000000)",
    "ncd": "round((s_n - 1000000 * k_{w}) / 1000)",
    "cntp": "(s_n - 1000000 * k_{w} - 999 * ncd_{w}) / (2 * {w})",
    "cntn": "(1001 * ncd_{w} - s_n + 1000000 * k_{w}) / (2 * {w})",
    "ma": "s_c / {w}",
    "slope": "({half} * s_c - t) / {ssx}",
    "sgp": "(s_ad + c - c{w}) / 2",
    "vgp": "(s_avd + v - v{w}) / 2",
    # volume is never NULL in `prices` (expectations/prices.json): every day of a window counts
    "vma": "s_v / {w}",
    "wma": "s_wv / {w}",
    # sample std from sums: sqrt(|S2 - S1^2 / n| / (n - 1)). The abs is against rounding: a
    # rounding-level negative becomes a rounding-level positive, and abs costs ~1/5 of
    # greatest(x, 0); a flat centred window still gives exactly 0.
    # For v and wv (no 2e-5 rule; features vsd / v and wsd / mean) the rounding of a flat
    # window is ~sqrt(eps) v = 1.5e-8 v, below the 1e-7 absolute tolerance of the features.
    "vsd": "sqrt(abs(s_v2 - s_v * s_v / {w}) / ({w} - 1))",
    "wsd": "sqrt(abs(s_wv2 - s_wv * s_wv / {w}) / ({w} - 1))",
    "sd_lv": "sqrt(abs(s_lv2 - s_lv * s_lv / {w}) / ({w} - 1))",
    "sd_cr": "sqrt(abs(s_cr2 - s_cr * s_cr / {w}) / ({w} - 1))",
    "sd_lvr": "sqrt(abs(s_lr2 - s_lr * s_lr / {w}) / ({w} - 1))",
    # y = c_j / c - 1 over the window: sum y = s_c / c - w; sd of c = c sd(y); corr(c, lv) = corr(y, lv)
    "syy": "abs(s_y2 - (s_c / c - {w}) * (s_c / c - {w}) / {w})",
    "sd": "c * sqrt(syy_{w} / ({w} - 1))",
    "corr_cv": "(s_ylv - (s_c / c - {w}) * s_lv / {w}) / sqrt(syy_{w} * abs(s_lv2 - s_lv * s_lv / {w}))",
    "corr_rv": "(s_crlr - s_cr * s_lr / {w}) / sqrt(abs(s_cr2 - s_cr * s_cr / {w})"
               " * abs(s_lr2 - s_lr * s_lr / {w}))",
}
# Rolling features: (Qlib name, warm-up, SQL over the aggregates of window {w}). Warm-up "n":
# w rows (x >= w; x is the row number, complete thanks to the look-back); "m": w one-day
# changes (x > w); "k": w finite log volume ratios. Applied as a factor to PARTIAL only.
ROLLING = [
    ("ROC", None, "c{w} / c"),
    ("MA", "n", "ma_{w} / c"),
    ("STD", "n", "sd_{w} / c"),
    ("BETA", "n", "slope_{w} / c"),
    # R^2 = slope^2 var(x) / var(c), var(x) = w(w+1)/12 for x = 1..w
    ("RSQR", "n", "CASE WHEN sd_{w} > 2e-5 THEN slope_{w} * slope_{w} * {varx} / (sd_{w} * sd_{w}) END"),
    # residual of today: c - (mean(c) + slope (x - mean(x))), x - mean(x) = (w-1)/2 today
    ("RESI", "n", "(c - ma_{w} - slope_{w} * {half}) / c"),
    ("MAX", "n", "hmax_{w} / c"),
    ("MIN", "n", "lmin_{w} / c"),
    ("QTLU", "n", "{qtlu} / c"),
    ("QTLD", "n", "{qtld} / c"),
    ("RANK", "n", "(rkd_{w} + {w} + 1) / (2.0 * {w})"),
    ("RSV", "n", "(c - lmin_{w}) / (hmax_{w} - lmin_{w} + 1e-12)"),
    ("IMAX", "n", "(imax_{w} - x + {w}) / {w}"),
    ("IMIN", "n", "(imin_{w} - x + {w}) / {w}"),
    ("IMXD", "n", "(imax_{w} - imin_{w}) / {w}"),
    ("CORR", "n", "CASE WHEN sd_{w} > 2e-5 AND sd_lv_{w} > 2e-5 THEN corr_cv_{w} END"),
    ("CORD", "k", "CASE WHEN sd_cr_{w} > 2e-5 AND sd_lvr_{w} > 2e-5 THEN corr_rv_{w} END"),
    ("CNTP", "m", "cntp_{w}"),
    ("CNTN", "m", "cntn_{w}"),
    ("CNTD", "m", "cntp_{w} - cntn_{w}"),
    ("SUMP", "m", "sgp_{w} / (2 * sgp_{w} - (c - c{w}) + 1e-12)"),
    ("SUMN", "m", "(sgp_{w} - (c - c{w})) / (2 * sgp_{w} - (c - c{w}) + 1e-12)"),
    ("SUMD", "m", "(c - c{w}) / (2 * sgp_{w} - (c - c{w}) + 1e-12)"),
    ("VMA", "n", "vma_{w} / (v + 1e-12)"),
    ("VSTD", "n", "vsd_{w} / (v + 1e-12)"),
    ("WVMA", "m", "wsd_{w} / (wma_{w} + 1e-12)"),
    ("VSUMP", "m", "vgp_{w} / (2 * vgp_{w} - (v - v{w}) + 1e-12)"),
    ("VSUMN", "m", "(vgp_{w} - (v - v{w})) / (2 * vgp_{w} - (v - v{w}) + 1e-12)"),
    ("VSUMD", "m", "(v - v{w}) / (2 * vgp_{w} - (v - v{w}) + 1e-12)"),
]
NETWORK_WINDOWS = (5, 10)
# adjusted vwap from a `prices` row (the label's p uses the same rule, sql/features/labels.sql)
VWAP_SQL = ("CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor\n"
            "             ELSE (open + high + low + close) / 4 * factor END")
WARMUP = {"n": "x >= {w}", "m": "x > {w}", "k": "k_{w} = {w}"}
# The operators that need their warm-up rule applied as a factor. The others are NULL wherever
# their rule fails by construction: a window sum that reaches a day before the stock's first row
# (a NULL lag, in a full build or past the look-back of an extend) is NULL, and so is one that
# holds a missing log volume ratio (CORD's "k"), and NULL propagates through their arithmetic.
# The extremes and quantiles are taken over partial windows (a CASE scan skips a NULL day, a
# comparator's output there means nothing, DuckDB's framed quantile reads the rows there are),
# so they get the factor.
# The reference tests compare the NULL pattern of every feature.
PARTIAL = ("MAX", "MIN", "QTLU", "QTLD", "RSV", "IMAX", "IMIN", "IMXD")

FEATURE_NAMES = ([n for n, _ in KBAR] + [n for n, _ in PRICE]
                 + [f"{op}{w}" for op, _, _ in ROLLING for w in WINDOWS])

_HEAD = """\
-- GENERATED by `python -m pipeline.features.alpha158` from pipeline/features/alpha158.py: edit there.
-- Qlib Alpha158 for the stocks in $instruments, for dates after $after (with $lookback rows of
-- each stock's history before it, so every window is complete). Semantics: alpha158.py docstring.
WITH src AS (
    SELECT instrument, date, open, high, low, close, volume, amount, factor
    FROM prices
    WHERE list_contains($instruments, instrument) AND close IS NOT NULL
    QUALIFY date > $after
         OR row_number() OVER (PARTITION BY instrument, date > $after ORDER BY date DESC) <= $lookback
),
adj AS (
    SELECT instrument, date,
        open * factor AS o, high * factor AS h, low * factor AS l, close * factor AS c,
        {vwap} AS vwap,
        volume / factor AS v
    FROM src
),
lagged AS (
    SELECT *,
        CAST(row_number() OVER s AS DOUBLE) AS x,
{lags}
    FROM adj
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
),
{network},
units AS (
    SELECT *,
{units}
    FROM {network_last}
),
sums AS (
    SELECT *,
{sums}
    FROM units
),
win AS (
    SELECT *,
{aggs}
    FROM sums
    WINDOW s AS (PARTITION BY instrument ORDER BY date),
        {windows}
),
unpacked AS (
    -- the 10-day quantities from the packed struct: kept out of the window pass's payload
    SELECT * REPLACE ({unpack})
    FROM win
),
longs AS (
    SELECT *,
{longs}
    FROM unpacked
),
derived AS (
    SELECT *,
{derived}
    FROM longs
),
masks AS (
    SELECT *,
{masks}
    FROM derived
)
SELECT date, instrument,
{cols}
FROM masks
WHERE date > $after
"""


def _mask(need: str, w: int) -> str:
    return f"warm_{need}_{w}"


def _agg(name: str, expr: str, w: int) -> str:
    return f"{expr} OVER w{w}"


def _quantile(w: int, q: float) -> str:
    """Column of the linear-interpolated quantile (pandas/quantile_cont) of the window's closes."""
    if w not in NETWORK_WINDOWS:
        return f"q_{w}[{2 if q > 0.5 else 1}]"
    return f"q{'u' if q > 0.5 else 'd'}_{w}"


QUANTILES = (0.2, 0.8)


def _position(w: int, q: float) -> tuple[int, float]:
    """0-based position in the sorted window of quantile q, and the fraction towards the next."""
    pos = q * (w - 1)
    return int(pos), pos - int(pos)


def _comparators(n: int, need: set[int]) -> list[tuple[int, int, bool, bool]]:
    """Batcher's odd-even merge sort of n wires (padded to a power of 2 with +inf, so the
    comparators that touch the padding do nothing), keeping only the comparators that reach the
    sorted positions in `need`: (i, j, min needed after, max needed after), in order."""
    size = 1 << (n - 1).bit_length()

    def merge(lo: int, hi: int, r: int):
        step = 2 * r
        if step < hi - lo:
            yield from merge(lo, hi, step)
            yield from merge(lo + r, hi, step)
            yield from ((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            yield lo, lo + r

    def sort(lo: int, hi: int):
        if hi > lo:
            mid = (lo + hi) // 2
            yield from sort(lo, mid)
            yield from sort(mid + 1, hi)
            yield from merge(lo, hi, 1)
    live, kept = set(need), []
    for i, j in reversed([(i, j) for i, j in sort(0, size - 1) if j < n]):
        if i in live or j in live:
            kept.append((i, j, i in live, j in live))
            live |= {i, j}
    return kept[::-1]


def _network_ctes(source: str) -> tuple[list[str], dict[tuple[int, int], str]]:
    """CTEs sorting the closes of each NETWORK_WINDOWS window far enough for QTLU/QTLD: one
    CTE per layer of independent comparators (least/greatest of two columns, a few ns each),
    and the column of (window, sorted position) for each position the quantiles read. The
    layers also carry the running extremes of high and low (_scan_layers)."""
    wire, layers, last_layer, done = {}, [], {}, {}
    for w in NETWORK_WINDOWS:
        need = {p + k for q in QUANTILES for p, f in [_position(w, q)] for k in ((0, 1) if f else (0,))}
        for j in range(w):
            wire[w, j] = "c" if j == 0 else f"c_{j}"
        for i, j, lo, hi in _comparators(w, need):
            at = max(last_layer.get((w, i), -1), last_layer.get((w, j), -1)) + 1
            last_layer[w, i] = last_layer[w, j] = at
            while len(layers) <= at:
                layers.append([])
            a, b = wire[w, i], wire[w, j]
            for k, fn, keep in ((i, "least", lo), (j, "greatest", hi)):
                if keep:
                    expr = _pick(fn, a, b)
                    if (expr, at) not in done:     # the 5- and 10-day networks start alike
                        done[expr, at] = f"srt{w}_{at}_{k}"
                        layers[at].append(f"{expr} AS {done[expr, at]}")
                    wire[w, k] = done[expr, at]
    for at, cols in enumerate(_scan_layers()):
        if at == len(layers):
            layers.append([])
        layers[at] += cols
    ctes, prev = [], source
    for at, cols in enumerate(layers):
        ctes.append(f"net{at} AS (\n    SELECT *, " + ", ".join(cols) + f"\n    FROM {prev}\n)")
        prev = f"net{at}"
    return ctes, wire


def _sorted_quantile(w: int, q: float, wire: dict[tuple[int, int], str]) -> str:
    """Quantile q (linear interpolation, as pandas and quantile_cont) of a NETWORK_WINDOWS
    window from its sorted positions. Taken before the window pass: two doubles."""
    lo, frac = _position(w, q)
    if not frac:
        return f"{wire[w, lo]} AS {_quantile(w, q)}"
    return f"({wire[w, lo]} + {frac:.12g} * ({wire[w, lo + 1]} - {wire[w, lo]})) AS {_quantile(w, q)}"


def _day(j: int) -> dict[str, str]:
    """The BASE series of day t - j, from the lags c_j, v_j (c_0 = c)."""
    cv = {"c": "c" if j == 0 else f"c_{j}", "c1": f"c_{j + 1}",
          "v": "v" if j == 0 else f"v_{j}", "v1": f"v_{j + 1}"}
    return cv | {n: f"({e.format(**cv)})" for n, e in BASE.items()}


def _sums(wire: dict[tuple[int, int], str]) -> tuple[str, str, str]:
    """SQL of the day-lag columns, of the per-day summed series, of the 5/10-day sums."""
    ind = " " * 8
    lags = ",\n".join([f"{ind}lag(c, {j}) OVER s AS c_{j}" for j in range(1, CLOSE_LAGS + 1)]
                       + [f"{ind}lag(v, {j}) OVER s AS v_{j}" for j in range(1, SUM_STEP + 1)]
                       + [f"{ind}lag({x}, {j}) OVER s AS {x}_{j}" for x in ("h", "l")
                          for j in range(1, SUM_STEP)])
    # c5, c10, v5, v10: the day lags under the names ROC and SUMP read (the longer ones come from
    # lags of their own or the packed structs); rkb_a: the signs of a block of _rank_blocks()
    # within the day lags
    units = ",\n".join([f"{ind}c_{w} AS c{w}" for w in WINDOWS if w <= SUM_STEP]
                        + [f"{ind}v_{w} AS v{w}" for w in WINDOWS if w <= SUM_STEP]
                        + [f"{ind}{_rank_block(a, b)}" for a, b in _rank_blocks() if b <= SUM_STEP]
                        + [f"{ind}{e.format(**_day(j))} AS u{j}_{n}"
                         for j in range(SUM_STEP) for n, e in SUMS.items()]
                        + [f"{ind}{_short(n, w)} AS {n}_{w}"
                           for w in WINDOWS for n in SHORT if _is_short(n, w)])
    sums = []
    for w in (WINDOWS[0], SUM_STEP):
        sums += [f"{ind}" + " + ".join(f"u{j}_{n}" for j in range(w)) + f" AS s{w}_{n}" for n in SUMS]
        sums.append(f"{ind}" + " + ".join(f"{j} * u{j}_c" for j in range(1, w)) + f" AS t{w}")
    sums += [f"{ind}{_sorted_quantile(w, q, wire)}" for w in NETWORK_WINDOWS for q in QUANTILES]
    sums += [f"{ind}" + " + ".join(f"rkb_{a}" for a, b in _rank_blocks() if b <= w) + f" AS rkd_{w}"
             for w in WINDOWS if w <= SUM_STEP]
    sums.append(f"{ind}struct_pack(" + ", ".join(f"{c} := {c}" for c in PACKED + PACKED_CLOSES) + f", {REF} := c) AS packed")
    return lags, units, ",\n".join(sums)


# The 10-day quantities that the 20/30/60-day ones are built from, lagged by 10, 20, .., 50 days.
# One lag of a struct of them costs ~1/5 of lagging each separately (~6% of the statement).
PACKED = ([f"s{SUM_STEP}_{n}" for n in SUMS] + [f"t{SUM_STEP}"] + [f"{n}_{SUM_STEP}" for n in LONG_EXT])
REF = "ref"   # the packed row's own close, to which its y sums are relative
PACKED_CLOSES = [f"c_{j}" for j in range(1, SUM_STEP)]   # and the 9 before it (_close)
RELATIVE = ("y2", "ylv")   # the SUMS relative to the row's own close (rescaled by _long_sums)


def _packed_lag(k: int) -> str:
    """Column holding the PACKED struct of k days ago (k a multiple of SUM_STEP)."""
    assert k % SUM_STEP == 0
    return f"packed_{k}"


def _long_sums(w: int) -> list[str]:
    """s_w and t_w of a window w = 10 k from lags of the 10-day sums."""
    ind = " " * 8

    def lag(col: str, k: int) -> str:
        return col if k == 0 else f"{_packed_lag(k)}.{col}"
    offs = range(0, w, SUM_STEP)
    out = [f"{ind}" + " + ".join(lag(f"s{SUM_STEP}_{n}", k) for k in offs) + f" AS s{w}_{n}" for n in SUMS
           if n not in RELATIVE]

    # The y sums of block k are relative to its own close r: z = c_j / c - 1 = a y + b with
    # a = r / c, b = a - 1, so sum z^2 = a^2 S2 + 2 a b S1 + 10 b^2 (S1 = s_c / r - 10) and
    # sum z lv = a sum y lv + b sum lv.
    def block(k: int, expr: str) -> str:
        p, s = _packed_lag(k), f"{_packed_lag(k)}.s{SUM_STEP}"
        return "(" + expr.format(
            a=f"({p}.{REF} / c)", b=f"({p}.{REF} / c - 1)", s1=f"({s}_c / {p}.{REF} - {SUM_STEP})",
            s2=f"{s}_y2", sylv=f"{s}_ylv", slv=f"{s}_lv", n=SUM_STEP) + ")"
    for n, expr in (("y2", "{a} * {a} * {s2} + 2 * {a} * {b} * {s1} + {n} * {b} * {b}"),
                    ("ylv", "{a} * {sylv} + {b} * {slv}")):
        out.append(f"{ind}s{SUM_STEP}_{n} + " + " + ".join(block(k, expr) for k in offs[1:]) + f" AS s{w}_{n}")
    out.append(f"{ind}" + " + ".join(lag(f"t{SUM_STEP}", k) + (f" + {k} * {lag(f's{SUM_STEP}_c', k)}" if k else "")
                                     for k in offs) + f" AS t{w}")
    return out


def render_sql() -> str:
    ind = " " * 8
    network, wire = _network_ctes("lagged")
    lags, units, sums = _sums(wire)
    aggs = [f"{ind}{_agg(name, expr, w)} AS {name}_{w}" for w in WINDOWS for name, expr in AGGS.items()
            if not _is_short(name, w) and not (name in LONG_EXT and w > SUM_STEP)]
    # v{w}: the volume w rows back (VSUMP), c{w} the close (ROC) where the packed lags stop. Taken
    # in this pass, as nothing before it reads them: a lag here costs less than carrying a
    # first-pass lag through this pass's sort as payload
    aggs += [f"{ind}lag(v, {w}) OVER s AS v{w}" for w in WINDOWS if w > SUM_STEP]
    aggs += [f"{ind}lag(c, {w}) OVER s AS c{w}" for w in WINDOWS if w >= max(WINDOWS)]
    aggs += [f"{ind}lag(packed, {k}) OVER s AS {_packed_lag(k)}"
             for k in range(SUM_STEP, max(WINDOWS), SUM_STEP)]
    aggs = ",\n".join(aggs)
    longs = [f"{ind}{_long_ext(n, w)} AS {n}_{w}" for w in WINDOWS if w > SUM_STEP for n in LONG_EXT]
    longs += [e for w in WINDOWS if w > SUM_STEP for e in _long_sums(w)]
    longs += [f"{ind}{_close(w)} AS c{w}" for w in WINDOWS if SUM_STEP < w < max(WINDOWS)]
    longs += [f"{ind}{_rank_block(a, b)}" for a, b in _rank_blocks() if b > SUM_STEP]
    # warm-up as a factor 1.0 or NULL per (rule, window): a product is cheaper than a CASE per column
    factors = dict.fromkeys((need, w) for op, need, _ in ROLLING if op in PARTIAL for w in WINDOWS)
    masks = [f"{ind}CASE WHEN {WARMUP[need].format(w=w)} THEN 1.0 END AS {_mask(need, w)}"
             for need, w in factors]
    derived = [f"{ind}rkd_{SUM_STEP} + " + " + ".join(f"rkb_{a}" for a, b in _rank_blocks() if SUM_STEP < b <= w)
               + f" AS rkd_{w}" for w in WINDOWS if w > SUM_STEP]
    for w in WINDOWS:
        names = {f"s_{n}": f"s{w}_{n}" for n in SUMS} | {"t": f"t{w}"}
        for name, expr in DERIVED.items():
            e = expr.format(w=w, half=(w - 1) / 2, ssx=w * (w * w - 1) / 12)
            e = re.sub(r"\b(s_\w+|t)\b", lambda m: names[m.group(1)], e)
            derived.append(f"{ind}{e} AS {name}_{w}")
    windows = ",\n        ".join(
        f"w{w} AS (PARTITION BY instrument ORDER BY date ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
        for w in WINDOWS)
    cols = [f"    CAST({expr} AS FLOAT) AS {name}" for name, expr in KBAR + PRICE]
    for op, need, expr in ROLLING:
        for w in WINDOWS:
            e = expr.format(w=w, varx=w * (w + 1) / 12, half=(w - 1) / 2,
                            qtlu=_quantile(w, 0.8), qtld=_quantile(w, 0.2))
            if op in PARTIAL:
                e = f"({e}) * {_mask(need, w)}"
            cols.append(f"    CAST({e} AS FLOAT) AS {op}{w}")
    unpack = ", ".join(f"packed.{c} AS {c}" for c in PACKED)
    return _HEAD.format(network=",\n".join(network), network_last=f"net{len(network) - 1}",
                        unpack=unpack, vwap=VWAP_SQL, lags=lags, units=units, sums=sums, aggs=aggs,
                        windows=windows, longs=",\n".join(longs), derived=",\n".join(derived),
                        masks=",\n".join(masks), cols=",\n".join(cols))


if __name__ == "__main__":
    print(render_sql(), end="")
