"""Robust per-feature normalisation, fitted on the train segment only.

z = clip((x - median) / (1.4826 * MAD), -clip, clip), NaN -> 0. 1.4826 x MAD equals the
standard deviation for normal data but is not moved by the fat tails of daily features.
A feature whose MAD is 0 (mostly constant, e.g. a count that is 0 on most days) falls back
to its standard deviation, and to 1 when that is 0 too, so it is never divided by zero.
The statistics are plain lists so they can be saved as JSON next to the store and logged
with the model: inference must apply exactly the same transform.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MAD_TO_STD = 1.4826


def fit_robust(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust scale per column of `values` (n, D), ignoring NaN.

    Returns (median (D,), scale (D,)) as float64. A column that is all NaN gets (0, 1).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"fit_robust expects (n, D) values, got shape {values.shape}")
    if values.shape[0] == 0 or values.shape[1] == 0:   # no rows, or no columns (no market features)
        d = values.shape[1]
        return np.zeros(d), np.ones(d)
    # in blocks of columns: nanmedian copies its input, and a wide panel has 626 of them;
    # numpy's partition releases the GIL, so blocks on two threads take ~half the time
    blocks = [values[:, a:a + 32] for a in range(0, values.shape[1], 32)]
    # (warning filters are process-wide: set once here, not in the threads)
    with warnings.catch_warnings(), \
            ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1, 4)) as pool:
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are handled below
        parts = list(pool.map(_fit_block, blocks))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _fit_block(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        median = np.nanmedian(v, axis=0)
        mad = np.nanmedian(np.abs(v - median), axis=0)
        std = np.nanstd(v, axis=0)
    scale = MAD_TO_STD * mad
    bad = ~np.isfinite(scale) | (scale <= 1e-12)
    scale[bad] = std[bad]
    bad = ~np.isfinite(scale) | (scale <= 1e-12)
    scale[bad] = 1.0
    median[~np.isfinite(median)] = 0.0
    return median, scale


def apply_robust(x: np.ndarray, median: np.ndarray, scale: np.ndarray, clip: float,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Normalise `x` (..., D) in float32: robust z, clipped to +-clip, NaN -> 0."""
    med = np.asarray(median, dtype=np.float32)
    inv = (1.0 / np.asarray(scale, dtype=np.float64)).astype(np.float32)
    out = np.subtract(np.asarray(x, dtype=np.float32), med, out=out)
    np.multiply(out, inv, out=out)
    np.clip(out, -clip, clip, out=out)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=clip, neginf=-clip)
    return out
