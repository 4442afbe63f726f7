"""Is a difference real? The mean of a daily series with a Newey-West (HAC) t-statistic.

Daily IC series are autocorrelated (overlapping label horizons, persistent regimes), so the
plain t = mean / (std / sqrt(n)) overstates significance. Newey and West (1987): the variance
of the mean is (gamma_0 + 2 sum_{l=1..L} w_l gamma_l) / n with Bartlett weights
w_l = 1 - l / (L + 1) and gamma_l the lag-l autocovariance (divided by n); L defaults to
floor(4 (n / 100)^(2/9)), Newey and West's (1994) rule of thumb, as statsmodels' `cov_hac`
uses when given no lag count (`sandwich_covariance.cov_hac`, nlags=None).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def default_lags(n: int) -> int:
    """Newey-West (1994): floor(4 (n / 100)^(2/9))."""
    return int(math.floor(4 * (n / 100) ** (2 / 9))) if n > 0 else 0


def newey_west(x, lags: int | None = None) -> dict[str, float]:
    """{mean, se, t, lags, n} of the mean of `x` (NaN dropped), se by Newey-West."""
    v = np.asarray(pd.Series(x).dropna(), dtype=np.float64)
    n = len(v)
    if n < 2:
        return {"mean": float(v.mean()) if n else math.nan, "se": math.nan, "t": math.nan,
                "lags": 0, "n": n}
    lags = default_lags(n) if lags is None else int(lags)
    lags = max(0, min(lags, n - 1))
    e = v - v.mean()
    var = e @ e / n
    for lag in range(1, lags + 1):
        var += 2 * (1 - lag / (lags + 1)) * (e[lag:] @ e[:-lag]) / n
    se = math.sqrt(max(var, 0.0) / n)
    mean = float(v.mean())
    return {"mean": mean, "se": se, "t": mean / se if se > 0 else math.nan, "lags": lags, "n": n}


def ic_difference(a: pd.Series, b: pd.Series, lags: int | None = None) -> dict[str, float]:
    """Daily IC of model a minus model b on the days both have, with its Newey-West t."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    return newey_west(both["a"] - both["b"], lags)
