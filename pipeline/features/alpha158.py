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
A log volume ratio that is not finite (previous volume 0) counts as missing. RANK is the
average-rank percentile of today's close in the window (`rank(pct=True)`, as current Qlib);
CORR/CORD and RSQR are NULL where a series' window std is <= 2e-5 (Qlib's np.isclose rule).
"""
from __future__ import annotations

WINDOWS = (5, 10, 20, 30, 60)
LOOKBACK_ROWS = max(WINDOWS) + 1  # 60 one-day changes need 61 rows of the stock

KBAR = [
    ("KMID", "(c - o) / o"),
    ("KLEN", "(h - l) / o"),
    ("KMID2", "(c - o) / (h - l + 1e-12)"),
    ("KUP", "(h - greatest(o, c)) / o"),
    ("KUP2", "(h - greatest(o, c)) / (h - l + 1e-12)"),
    ("KLOW", "(least(o, c) - l) / o"),
    ("KLOW2", "(least(o, c) - l) / (h - l + 1e-12)"),
    ("KSFT", "(2 * c - h - l) / o"),
    ("KSFT2", "(2 * c - h - l) / (h - l + 1e-12)"),
]
PRICE = [("OPEN0", "o / c"), ("HIGH0", "h / c"), ("LOW0", "l / c"), ("VWAP0", "vwap / c")]

# Window aggregates, computed once per window w (suffix _w): name -> SQL aggregate. Each is a
# DuckDB window expression (~70% of the run time), so derivable ones are derived instead:
# sum|d| = sum(d+) + sum(d-); intercept and R^2 from slope, mean and std (x = 1..w is known).
AGGS = {
    "k": "count(lvr)",          # valid log volume ratios (CORD)
    "ma": "avg(c)",
    "sd": "stddev_samp(c)",
    "slope": "regr_slope(c, x)",
    "hmax": "max(h)",
    "lmin": "min(l)",
    # DuckDB's windowed quantile is ~5x slower on 5-row frames than sorting the frame's list;
    # render_sql() swaps in list_sort for w = 5 (interpolated the same way, see QTLU/QTLD)
    "q": "quantile_cont(c, [0.2, 0.8])",
    "rk_lo": "rank(ORDER BY c)",            # 1 + #(window < c)
    "rk_hi": "rank(ORDER BY c DESC)",       # 1 + #(window > c)
    # first day of the highest high / lowest low: the 1e-12 x nudge breaks exact ties toward
    # the earlier day (numpy argmax), far below any real price difference
    "imax": "arg_max(x, h * (1 - x * 1e-12))",
    "imin": "arg_min(x, l * (1 + x * 1e-12))",
    "corr_cv": "corr(c, lv)",
    "sd_lv": "stddev_samp(lv)",
    "corr_rv": "corr(cr, lvr)",
    "sd_cr": "stddev_samp(cr)",
    "sd_lvr": "stddev_samp(lvr)",
    "cntp": "avg(up)",
    "cntn": "avg(dn)",
    "sgp": "sum(gp)",          # sum of falls = sum of rises - (c - c_w): the changes telescope
    "vma": "avg(v)",
    "vsd": "stddev_samp(v)",
    "wsd": "stddev_samp(wv)",
    "wma": "avg(wv)",
    "vgp": "sum(vgp)",          # likewise for volume, with v_w
}

# Rolling features: (Qlib name, warm-up, SQL over the aggregates of window {w}). Warm-up "n":
# w rows (x >= w; x is the row number, complete thanks to the look-back); "m": w one-day
# changes (x > w); "k": w finite log volume ratios.
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
    ("RANK", "n", "(rk_lo_{w} - rk_hi_{w} + {w} + 1) / (2.0 * {w})"),
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
SORTED_LIST_WINDOWS = (5,)
WARMUP = {"n": "x >= {w}", "m": "x > {w}", "k": "k_{w} = {w}"}

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
        CASE WHEN volume > 0 AND amount > 0 THEN amount / volume * factor
             ELSE (open + high + low + close) / 4 * factor END AS vwap,
        volume / factor AS v
    FROM src
),
lagged AS (
    SELECT *,
        CAST(row_number() OVER s AS DOUBLE) AS x,
        lag(c, 1) OVER s AS c1,
        lag(v, 1) OVER s AS v1,
{lags}
    FROM adj
    WINDOW s AS (PARTITION BY instrument ORDER BY date)
),
series AS (
    SELECT *,
        ln(v + 1) AS lv,
        c - c1 AS dc,
        c / c1 AS cr,
        CASE WHEN isfinite(ln(v / v1 + 1)) THEN ln(v / v1 + 1) END AS lvr,
        CAST(c > c1 AS DOUBLE) AS up,
        CAST(c < c1 AS DOUBLE) AS dn,
        CASE WHEN c1 IS NOT NULL THEN greatest(c - c1, 0) END AS gp,
        abs(c / c1 - 1) * v AS wv,
        CASE WHEN v1 IS NOT NULL THEN greatest(v - v1, 0) END AS vgp
    FROM lagged
),
win AS (
    SELECT *,
{aggs}
    FROM series
    WINDOW {windows}
)
SELECT date, instrument,
{cols}
FROM win
WHERE date > $after
"""


def _agg(name: str, expr: str, w: int) -> str:
    if name == "q" and w in SORTED_LIST_WINDOWS:
        return f"list_sort(list(c) OVER w{w})"
    return f"{expr} OVER w{w}"


def _quantile(w: int, q: float) -> str:
    """Linear-interpolated quantile (pandas/quantile_cont) of the window's closes."""
    if w not in SORTED_LIST_WINDOWS:
        return f"q_{w}[{2 if q > 0.5 else 1}]"
    pos = q * (w - 1)              # 0-based position in the sorted window
    lo, frac = int(pos), pos - int(pos)
    return f"(q_{w}[{lo + 1}] + {frac:.12g} * (q_{w}[{lo + 2}] - q_{w}[{lo + 1}]))"


def render_sql() -> str:
    ind = " " * 8
    lags = ",\n".join(f"{ind}lag({s}, {w}) OVER s AS {s}{w}" for s in ("c", "v") for w in WINDOWS)
    aggs = ",\n".join(f"{ind}{_agg(name, expr, w)} AS {name}_{w}"
                      for w in WINDOWS for name, expr in AGGS.items())
    windows = ",\n        ".join(
        f"w{w} AS (PARTITION BY instrument ORDER BY date ROWS BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
        for w in WINDOWS)
    cols = [f"    CAST({expr} AS FLOAT) AS {name}" for name, expr in KBAR + PRICE]
    for op, need, expr in ROLLING:
        for w in WINDOWS:
            e = expr.format(w=w, varx=w * (w + 1) / 12, half=(w - 1) / 2,
                            qtlu=_quantile(w, 0.8), qtld=_quantile(w, 0.2))
            if need:
                e = f"CASE WHEN {WARMUP[need].format(w=w)} THEN {e} END"
            cols.append(f"    CAST({e} AS FLOAT) AS {op}{w}")
    return _HEAD.format(lags=lags, aggs=aggs, windows=windows, cols=",\n".join(cols))


if __name__ == "__main__":
    print(render_sql(), end="")
