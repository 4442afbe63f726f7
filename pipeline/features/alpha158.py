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

Below: what the features are (the operator table, windows, warm-up rules, the day's features),
how they are computed (day series and window sums, sorting network, running extremes, packed
10-day blocks), how the statement is assembled. SQL fragments are `str.format` templates.
"""
from __future__ import annotations

# ---- What the features are -------------------------------------------------------------------

# Rolling features: (Qlib name, warm-up, SQL over the aggregates of window {w}), one column per
# window. Warm-up "n": w rows (x >= w; x is the row number, complete thanks to the look-back);
# "m": w one-day changes (x > w); "k": w finite log volume ratios (WARMUP).
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
WINDOWS = (5, 10, 20, 30, 60)
LOOKBACK_ROWS = max(WINDOWS) + 1  # 60 one-day changes need 61 rows of the stock
WARMUP = {"n": "x >= {w}", "m": "x > {w}", "k": "k_{w} = {w}"}
# The operators that need their warm-up rule applied, as a factor. The others are NULL wherever
# their rule fails by construction: a window sum that reaches a day before the stock's first row
# (a NULL lag, in a full build or past the look-back of an extend) is NULL, and so is one that
# holds a missing log volume ratio (CORD's "k"), and NULL propagates through their arithmetic.
# The extremes and quantiles are taken over partial windows (a CASE scan skips a NULL day, a
# comparator's output there means nothing, DuckDB's framed quantile reads the rows there are),
# so they get the factor.
# The reference tests compare the NULL pattern of every feature.
PARTIAL = ("MAX", "MIN", "QTLU", "QTLD", "RSV", "IMAX", "IMIN", "IMXD")

# The day's own features, over o, h, l, c, vwap of the day; {max_oc} and {min_oc} are the
# greater and the lesser of open and close (_pick).
KBAR = [
    ("KMID", "(c - o) / o"),
    ("KLEN", "(h - l) / o"),
    ("KMID2", "(c - o) / (h - l + 1e-12)"),
    ("KUP", "(h - {max_oc}) / o"),
    ("KUP2", "(h - {max_oc}) / (h - l + 1e-12)"),
    ("KLOW", "({min_oc} - l) / o"),
    ("KLOW2", "({min_oc} - l) / (h - l + 1e-12)"),
    ("KSFT", "(2 * c - h - l) / o"),
    ("KSFT2", "(2 * c - h - l) / (h - l + 1e-12)"),
]
PRICE = [("OPEN0", "o / c"), ("HIGH0", "h / c"), ("LOW0", "l / c"), ("VWAP0", "vwap / c")]

FEATURE_NAMES = ([n for n, _ in KBAR] + [n for n, _ in PRICE]
                 + [f"{op}{w}" for op, _, _ in ROLLING for w in WINDOWS])

# adjusted vwap from a `prices` row (the label's p uses the same rule, sql/features/labels.sql)
VWAP_SQL = ("CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor\n"
            "             ELSE (open + high + low + close) / 4 * factor END")

# ---- How they are computed -------------------------------------------------------------------

# Window sums without framed aggregates. Each framed aggregate is a DuckDB window expression,
# and a lag of a double costs a small fraction of one, so the 5- and 10-day sums are plain sums
# of the day's and the 9 previous days' values (built from lags c_j = lag(c, j), v_j of close
# and volume, j = 0..10: no extra window pass), and sum_20/30/60 = sum_10 + lag(sum_10, 10) + ...
# (k lags of sum_10, taken in the framed aggregates' pass as lags of one struct of all the 10-day
# quantities, PACKED). Sums of at most 60 terms, as exact as the framed sum (no running totals,
# so no cancellation between large prefix sums). A day before the stock's first row makes a sum
# NULL, and so does a missing log volume ratio in CORD's sums (no coalesce, which would cost a
# noticeable share of the statement): the warm-up rules only read windows whose days all exist
# (close and volume are never NULL in `prices`) and CORD's needs w finite ratios, so a NULL only
# reaches features that are NULL anyway.
# Variances from sums of squares are only taken of O(1) centred series, so that a flat window
# gives exactly 0 (Qlib's 2e-5 rules read them): CORD's cr - 1 and lvr - ln 2, and for STD,
# RSQR and CORR the closes relative to the row's own close, y_j = c_j / c - 1 (y2, ylv). A
# 10-day block lagged by 10 k holds its y sums relative to its own close r (packed `ref`);
# _long_sums rescales them to today's close. Volume sums stay raw: a flat window's rounding is
# ~1.5e-8 of the level, below the features' tolerance and, for ln(v + 1) < 25, CORR's 2e-5.
SUM_STEP = 10   # sums of the last 5 and 10 days from day lags; longer windows from lags of sum_10

# The day's series in terms of {c}, {c1}, {v}, {v1} = close and volume of the day and the day before.
BASE = {
    "lv": "ln({v} + 1)",
    "cr": "{c} / {c1}",
    # NULL where v1 is missing or 0 (then v / v1 + 1 is inf or NaN): a missing ratio
    "lvr": "ln({v} / nullif({v1}, 0) + 1)",
    "wv": "abs({c} / {c1} - 1) * {v}",
}
# The summed series (u{j}_name of day t - j, summed to s{w}_name), over the BASE series.
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
RELATIVE = ("y2", "ylv")   # the SUMS relative to the row's own close (rescaled by _long_sums)

# Window quantities (suffix _w) from the sums {s_name} = s{w}_name and {t} = t{w}, where t_w is
# the sum over the window of j * c_j, j = 0..w-1 (for BETA): t_w = sum over k of
# lag(t_10, 10 k) + 10 k lag(s_10, 10 k). Then sum((x - mean x) c) = (w - 1) / 2 s_c - t and
# regr_slope(c, x) follows.
DERIVED = {
    "k": "floor({s_n} / 1000000)",
    "ncd": "round(({s_n} - 1000000 * k_{w}) / 1000)",
    "cntp": "({s_n} - 1000000 * k_{w} - 999 * ncd_{w}) / (2 * {w})",
    "cntn": "(1001 * ncd_{w} - {s_n} + 1000000 * k_{w}) / (2 * {w})",
    "ma": "{s_c} / {w}",
    "slope": "({half} * {s_c} - {t}) / {ssx}",
    "sgp": "({s_ad} + c - c{w}) / 2",
    "vgp": "({s_avd} + v - v{w}) / 2",
    # volume is never NULL in `prices` (expectations/prices.json): every day of a window counts
    "vma": "{s_v} / {w}",
    "wma": "{s_wv} / {w}",
    # sample std from sums: sqrt(|S2 - S1^2 / n| / (n - 1)). The abs is against rounding: a
    # rounding-level negative becomes a rounding-level positive, and abs is cheaper than
    # greatest(x, 0); a flat centred window still gives exactly 0.
    # For v and wv (no 2e-5 rule; features vsd / v and wsd / mean) the rounding of a flat
    # window is ~sqrt(eps) v = 1.5e-8 v, below the 1e-7 absolute tolerance of the features.
    "vsd": "sqrt(abs({s_v2} - {s_v} * {s_v} / {w}) / ({w} - 1))",
    "wsd": "sqrt(abs({s_wv2} - {s_wv} * {s_wv} / {w}) / ({w} - 1))",
    "sd_lv": "sqrt(abs({s_lv2} - {s_lv} * {s_lv} / {w}) / ({w} - 1))",
    "sd_cr": "sqrt(abs({s_cr2} - {s_cr} * {s_cr} / {w}) / ({w} - 1))",
    "sd_lvr": "sqrt(abs({s_lr2} - {s_lr} * {s_lr} / {w}) / ({w} - 1))",
    # y = c_j / c - 1 over the window: sum y = s_c / c - w; sd of c = c sd(y); corr(c, lv) = corr(y, lv)
    "syy": "abs({s_y2} - ({s_c} / c - {w}) * ({s_c} / c - {w}) / {w})",
    "sd": "c * sqrt(syy_{w} / ({w} - 1))",
    "corr_cv": "({s_ylv} - ({s_c} / c - {w}) * {s_lv} / {w})"
               " / sqrt(syy_{w} * abs({s_lv2} - {s_lv} * {s_lv} / {w}))",
    "corr_rv": "({s_crlr} - {s_cr} * {s_lr} / {w}) / sqrt(abs({s_cr2} - {s_cr} * {s_cr} / {w})"
               " * abs({s_lr2} - {s_lr} * {s_lr} / {w}))",
}

# QTLU/QTLD: for w in NETWORK_WINDOWS the order statistics come from a comparator network over
# the day lags (_network_ctes), cheaper than DuckDB's windowed quantile (a skip list per
# window); for w = 20 the network would be slower than the skip list, so the longer windows
# take QUANTILE_AGG, a framed aggregate.
NETWORK_WINDOWS = (5, 10)
QUANTILES = (0.2, 0.8)
QUANTILE_AGG = "quantile_cont(c, [0.2, 0.8])"

# Running extremes of the day lags, one day a layer of the network CTEs (_scan_layers): the
# highest high and its row number over days 0..j back, and likewise the lowest low. hmax_w,
# lmin_w (highest high, lowest low) and imax_w, imin_w (row number x of their first day, as
# numpy's argmax) of w <= SUM_STEP are the scans' columns for day w - 1; of longer windows they
# come from lags of the 10-day ones (_long_extreme), with exact ties.
SCANS = {"hmax": ("h", ">=", "imax"), "lmin": ("l", "<=", "imin")}
EXTREMES = ("hmax", "lmin", "imax", "imin")

# RANK's rkd_w = #(window < c) - #(window > c) = sum of sign(c - c_j) over the closes j < w days
# back, summed in blocks between consecutive windows (_rank_blocks), each block once: these
# 59 signs per row cost less than the two framed ranks (rank(ORDER BY c) and its DESC twin) per
# window they replace. The closes 1..10 days back are day lags; older ones are read from the
# lagged PACKED structs (_close).

# The 10-day quantities that the 20/30/60-day ones are built from, lagged by 10, 20, .., 50 days:
# one lag of a struct of them costs much less than lagging each separately.
PACKED = [f"s{SUM_STEP}_{n}" for n in SUMS] + [f"t{SUM_STEP}"] + [f"{n}_{SUM_STEP}" for n in EXTREMES]
REF = "ref"   # the packed row's own close, to which its y sums are relative
PACKED_CLOSES = [f"c_{j}" for j in range(1, SUM_STEP)]   # and the 9 before it (_close)


def _pick(fn: str, a: str, b: str) -> str:
    """least / greatest of two columns as a CASE: cheaper than DuckDB's least(a, b), and the
    same value wherever a feature reads it (open, high, low and close are never NULL in
    `prices`; a NULL day lag only occurs in a stock's warm-up, whose features are NULL)."""
    return f"CASE WHEN {a} {'<' if fn == 'least' else '>'} {b} THEN {a} ELSE {b} END"


def _day(j: int) -> dict[str, str]:
    """The template fields of day t - j: c, c1, v, v1 from the lags c_j, v_j (c_0 = c), and
    the BASE series over them."""
    cv = {"c": "c" if j == 0 else f"c_{j}", "c1": f"c_{j + 1}",
          "v": "v" if j == 0 else f"v_{j}", "v1": f"v_{j + 1}"}
    return cv | {n: f"({e.format(**cv)})" for n, e in BASE.items()}


def _packed_lag(k: int) -> str:
    """Column holding the PACKED struct of k days ago (k a multiple of SUM_STEP)."""
    assert k % SUM_STEP == 0
    return f"packed_{k}"


def _ago(col: str, k: int) -> str:
    """The 10-day quantity `col` (a PACKED field) of the row k days back (0: this row's)."""
    return col if k == 0 else f"{_packed_lag(k)}.{col}"


def _close(j: int) -> str:
    """The close of j days back, 1 <= j < max(WINDOWS). Beyond the day lags it is a field of
    the PACKED struct lagged by k (a multiple of SUM_STEP), which carries its row's closes
    c_1 .. c_9 (PACKED_CLOSES) besides its own (REF): nine more fields in the 5 struct lags
    cost less than 49 more day lags (figures in benchmarks/bench_features.py)."""
    if j <= SUM_STEP:
        return f"c_{j}"
    k, i = divmod(j, SUM_STEP)
    return _ago(REF if i == 0 else f"c_{i}", k * SUM_STEP)


def _rank_blocks() -> list[tuple[int, int]]:
    """Day-lag ranges [a, b) between consecutive windows: (1, 5), (5, 10), .., (30, 60)."""
    return list(zip((1,) + WINDOWS[:-1], WINDOWS))


def _rank_block(a: int, b: int) -> str:
    """#(closes a..b-1 days back < c) - #(> c), one block of _rank_blocks()."""
    return " + ".join(f"sign(c - {_close(j)})" for j in range(a, b)) + f" AS rkb_{a}"


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


def sorted_position(w: int, q: float) -> tuple[int, float]:
    """0-based position in the sorted window of quantile q, and the fraction towards the next."""
    pos = q * (w - 1)
    return int(pos), pos - int(pos)


def comparators(n: int, need: set[int]) -> list[tuple[int, int, bool, bool]]:
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


def _network_layers() -> tuple[list[list[str]], dict[tuple[int, int], str]]:
    """The columns of each layer of the network CTEs, sorting the closes of each NETWORK_WINDOWS
    window far enough for QTLU/QTLD: one layer of independent comparators (least/greatest of
    two columns, cheap CASEs) per CTE, and the column of (window, sorted position) for each
    position the quantiles read. The layers also carry the running extremes (_scan_layers)."""
    wire, layers, last_layer, done = {}, [], {}, {}
    for w in NETWORK_WINDOWS:
        need = {p + k for q in QUANTILES for p, f in [sorted_position(w, q)]
                for k in ((0, 1) if f else (0,))}
        for j in range(w):
            wire[w, j] = "c" if j == 0 else f"c_{j}"
        for i, j, lo, hi in comparators(w, need):
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
    return layers, wire


def _quantile(w: int, q: float) -> str:
    """Column of the linear-interpolated quantile (pandas/quantile_cont) of the window's closes."""
    if w not in NETWORK_WINDOWS:
        return f"q_{w}[{QUANTILES.index(q) + 1}]"
    return f"q{'u' if q > 0.5 else 'd'}_{w}"


def _sorted_quantile(w: int, q: float, wire: dict[tuple[int, int], str]) -> str:
    """Quantile q (linear interpolation, as pandas and quantile_cont) of a NETWORK_WINDOWS
    window from its sorted positions. Taken before the window pass: two doubles."""
    lo, frac = sorted_position(w, q)
    if not frac:
        return f"{wire[w, lo]} AS {_quantile(w, q)}"
    return f"({wire[w, lo]} + {frac:.12g} * ({wire[w, lo + 1]} - {wire[w, lo]})) AS {_quantile(w, q)}"


def _long_extreme(name: str, w: int) -> str:
    """Max / min / first arg max of a window w = 10 k from lags of the 10-day ones: the
    extreme of the block extremes, and the oldest block holding it gives the earliest day."""
    offs = range(0, w, SUM_STEP)
    ext_name = "hmax" if name in ("hmax", "imax") else "lmin"
    fn = "greatest" if ext_name == "hmax" else "least"
    ext = f"{fn}(" + ", ".join(_ago(f"{ext_name}_{SUM_STEP}", k) for k in offs) + ")"
    if name == ext_name:
        return ext
    return ("CASE " + " ".join(f"WHEN {_ago(f'{ext_name}_{SUM_STEP}', k)} = {ext} "
                               f"THEN {_ago(f'{name}_{SUM_STEP}', k)}" for k in reversed(offs[1:]))
            + f" ELSE {name}_{SUM_STEP} END")


# The y sums of block k are relative to its own close r: z = c_j / c - 1 = a y + b with
# a = r / c, b = a - 1, so sum z^2 = a^2 S2 + 2 a b S1 + 10 b^2 (S1 = s_c / r - 10) and
# sum z lv = a sum y lv + b sum lv.
RESCALED = {"y2": "{a} * {a} * {s2} + 2 * {a} * {b} * {s1} + {n} * {b} * {b}",
            "ylv": "{a} * {sylv} + {b} * {slv}"}


def _long_sums(w: int) -> list[str]:
    """s_w and t_w of a window w = 10 k from lags of the 10-day sums."""
    offs = range(0, w, SUM_STEP)
    s = f"s{SUM_STEP}"
    out = [" + ".join(_ago(f"{s}_{n}", k) for k in offs) + f" AS s{w}_{n}"
           for n in SUMS if n not in RELATIVE]

    def block(k: int, expr: str) -> str:
        r = _ago(REF, k)
        return "(" + expr.format(a=f"({r} / c)", b=f"({r} / c - 1)", s1=f"({_ago(f'{s}_c', k)} / {r} - {SUM_STEP})",
                                 s2=_ago(f"{s}_y2", k), sylv=_ago(f"{s}_ylv", k), slv=_ago(f"{s}_lv", k),
                                 n=SUM_STEP) + ")"
    out += [f"{s}_{n} + " + " + ".join(block(k, expr) for k in offs[1:]) + f" AS s{w}_{n}"
            for n, expr in RESCALED.items()]
    out.append(" + ".join(_ago(f"t{SUM_STEP}", k) + (f" + {k} * {_ago(f'{s}_c', k)}" if k else "")
                          for k in offs) + f" AS t{w}")
    return out


# ---- How the statement is assembled ----------------------------------------------------------

WIDTH = 100     # longest line of the generated SQL, where an expression can be broken
# where a select-list expression may break (before the token, or after a comma), outermost first
_BREAKS = {",": 0, "WHEN": 0, "ELSE": 0, "AND": 1, "+": 2, "-": 2, "*": 3, "/": 3}

STATEMENT = """\
-- GENERATED by `python -m pipeline.features.alpha158` from pipeline/features/alpha158.py:
-- edit there.
-- Qlib Alpha158 for the stocks in $instruments, for dates after $after (with $lookback rows of
-- each stock's history before it, so every window is complete). Semantics: alpha158.py docstring.
WITH src AS (
    SELECT instrument, date, open, high, low, close, volume, amount, factor
    FROM prices
    WHERE list_contains($instruments, instrument) AND close IS NOT NULL
    QUALIFY date > $after
         OR row_number() OVER (PARTITION BY instrument, date > $after ORDER BY date DESC)
            <= $lookback
),
adj AS (
    SELECT instrument, date,
        open * factor AS o,
        high * factor AS h,
        low * factor AS l,
        close * factor AS c,
        {vwap} AS vwap,
        volume / factor AS v
    FROM src
),
lagged AS (
    SELECT *,
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
    SELECT * REPLACE (
{unpack}
    )
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
NETWORK_CTE = """\
{name} AS (
    SELECT *,
{cols}
    FROM {source}
)"""


def _wrap(line: str) -> str:
    """A line longer than WIDTH broken into continuation lines 4 deeper (_split): only
    whitespace changes, the SQL means the same."""
    if len(line) <= WIDTH:
        return line
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return ("\n" + indent).join(_split(line, WIDTH, WIDTH - len(indent)))


def _split(text: str, first: int, rest: int) -> list[str]:
    """text as lines of at most `first` (the first line) and `rest` characters, where it can:
    broken at the outermost _BREAKS (by parenthesis depth, then rank), its pieces packed
    greedily, and a piece that fits no line split the same way at the next level."""
    if len(text) <= first:
        return [text]
    cuts, depth = [], 0      # ((depth, rank), index of the space where the text may break)
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == " " and i:
            token = "," if text[i - 1] == "," else text[i + 1:i + 6].split(" ", 1)[0]
            if token in _BREAKS:
                cuts.append(((depth, _BREAKS[token]), i))
    if not cuts:
        return [text]
    level = min(c for c, _ in cuts)
    ends = [i for c, i in cuts if c == level]
    lines, line = [], ""
    for start, end in zip([0] + [i + 1 for i in ends], ends + [len(text)]):
        piece = text[start:end]
        if line and len(line) + 1 + len(piece) <= (rest if lines else first):
            line += " " + piece
            continue
        if line:
            lines.append(line)
        *done, line = _split(piece, rest if lines else first, rest)
        lines += done
    return lines + [line]


def _columns(cols: list[str], indent: int = 8) -> str:
    """A select list: one column a line, each wrapped to WIDTH."""
    return "\n".join(_wrap(" " * indent + c + ("," if k < len(cols) - 1 else "")) for k, c in enumerate(cols))


def render_sql() -> str:
    """The Alpha158 statement (sql/features/alpha158.sql)."""
    layers, wire = _network_layers()
    network = [NETWORK_CTE.format(name=f"net{at}", cols=_columns(cols),
                                  source="lagged" if at == 0 else f"net{at - 1}")
               for at, cols in enumerate(layers)]
    lags = (["CAST(row_number() OVER s AS DOUBLE) AS x"]
            + [f"lag(c, {j}) OVER s AS c_{j}" for j in range(1, SUM_STEP + 1)]
            + [f"lag(v, {j}) OVER s AS v_{j}" for j in range(1, SUM_STEP + 1)]
            + [f"lag({x}, {j}) OVER s AS {x}_{j}" for x in ("h", "l") for j in range(1, SUM_STEP)])
    # c5, c10, v5, v10: the day lags under the names ROC and SUMP read (the longer ones come from
    # lags of their own or the packed structs); rkb_a: the signs of a block of _rank_blocks()
    # within the day lags; u{j}_name: the summed series of day t - j; the short extremes
    units = ([f"c_{w} AS c{w}" for w in WINDOWS if w <= SUM_STEP]
             + [f"v_{w} AS v{w}" for w in WINDOWS if w <= SUM_STEP]
             + [_rank_block(a, b) for a, b in _rank_blocks() if b <= SUM_STEP]
             + [f"{e.format(**_day(j))} AS u{j}_{n}" for j in range(SUM_STEP) for n, e in SUMS.items()]
             + [f"{n}_d{w - 1} AS {n}_{w}" for w in WINDOWS if w <= SUM_STEP for n in EXTREMES])
    sums = []
    for w in (WINDOWS[0], SUM_STEP):
        sums += [" + ".join(f"u{j}_{n}" for j in range(w)) + f" AS s{w}_{n}" for n in SUMS]
        sums.append(" + ".join(f"{j} * u{j}_c" for j in range(1, w)) + f" AS t{w}")
    sums += [_sorted_quantile(w, q, wire) for w in NETWORK_WINDOWS for q in QUANTILES]
    sums += [" + ".join(f"rkb_{a}" for a, b in _rank_blocks() if b <= w) + f" AS rkd_{w}"
             for w in WINDOWS if w <= SUM_STEP]
    sums.append("struct_pack(" + ", ".join(f"{c} := {c}" for c in PACKED + PACKED_CLOSES)
                + f", {REF} := c) AS packed")
    aggs = [f"{QUANTILE_AGG} OVER w{w} AS q_{w}" for w in WINDOWS if w not in NETWORK_WINDOWS]
    # v{w}: the volume w rows back (VSUMP), c{w} the close (ROC) where the packed lags stop. Taken
    # in this pass, as nothing before it reads them: a lag here costs less than carrying a
    # first-pass lag through this pass's sort as payload
    aggs += [f"lag(v, {w}) OVER s AS v{w}" for w in WINDOWS if w > SUM_STEP]
    aggs += [f"lag(c, {w}) OVER s AS c{w}" for w in WINDOWS if w >= max(WINDOWS)]
    aggs += [f"lag(packed, {k}) OVER s AS {_packed_lag(k)}" for k in range(SUM_STEP, max(WINDOWS), SUM_STEP)]
    windows = [f"w{w} AS (PARTITION BY instrument ORDER BY date ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
               for w in WINDOWS]
    longs = [f"{_long_extreme(n, w)} AS {n}_{w}" for w in WINDOWS if w > SUM_STEP for n in EXTREMES]
    longs += [e for w in WINDOWS if w > SUM_STEP for e in _long_sums(w)]
    longs += [f"{_close(w)} AS c{w}" for w in WINDOWS if SUM_STEP < w < max(WINDOWS)]
    longs += [_rank_block(a, b) for a, b in _rank_blocks() if b > SUM_STEP]
    derived = [f"rkd_{SUM_STEP} + " + " + ".join(f"rkb_{a}" for a, b in _rank_blocks() if SUM_STEP < b <= w)
               + f" AS rkd_{w}" for w in WINDOWS if w > SUM_STEP]
    for w in WINDOWS:
        names = {f"s_{n}": f"s{w}_{n}" for n in SUMS} | {"t": f"t{w}"}
        derived += [expr.format(w=w, half=(w - 1) / 2, ssx=w * (w * w - 1) / 12, **names) + f" AS {name}_{w}"
                    for name, expr in DERIVED.items()]
    # warm-up as a factor 1.0 or NULL per (rule, window): a product is cheaper than a CASE per column
    factors = dict.fromkeys((need, w) for op, need, _ in ROLLING if op in PARTIAL for w in WINDOWS)
    masks = [f"CASE WHEN {WARMUP[need].format(w=w)} THEN 1.0 END AS warm_{need}_{w}" for need, w in factors]
    oc = {"max_oc": _pick("greatest", "o", "c"), "min_oc": _pick("least", "o", "c")}
    cols = [f"CAST({expr.format(**oc)} AS FLOAT) AS {name}" for name, expr in KBAR + PRICE]
    for op, need, expr in ROLLING:
        for w in WINDOWS:
            e = expr.format(w=w, varx=w * (w + 1) / 12, half=(w - 1) / 2,
                            qtlu=_quantile(w, 0.8), qtld=_quantile(w, 0.2))
            if op in PARTIAL:
                e = f"({e}) * warm_{need}_{w}"
            cols.append(f"CAST({e} AS FLOAT) AS {op}{w}")
    return STATEMENT.format(
        vwap=VWAP_SQL, lags=_columns(lags), network=",\n".join(network), network_last=f"net{len(network) - 1}",
        units=_columns(units), sums=_columns(sums), aggs=_columns(aggs), windows=_columns(windows),
        unpack=_columns([f"packed.{c} AS {c}" for c in PACKED]), longs=_columns(longs),
        derived=_columns(derived), masks=_columns(masks), cols=_columns(cols, indent=4))


if __name__ == "__main__":
    print(render_sql(), end="")
