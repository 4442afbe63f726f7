"""A small synthetic TensorStore with a planted linear signal (shared by training tests).

label(t, i) = x0(t, i) + 0.5 x1(t, i) + 0.3 x2(t-1, i) + noise: a model that looks at the
window can reach a test IC around 0.7. With `shuffle_labels` the labels are permuted across
stocks within each day, which destroys the signal but keeps every day's label distribution.
"""
from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.store import TensorStore


def make_store(root: Path, days: int = 70, n: int = 48, d: int = 6, m: int = 3, seed: int = 0,
               shuffle_labels: bool = False, noise: float = 1.0) -> TensorStore:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=days).to_numpy().astype("datetime64[D]")
    feats = rng.normal(size=(days, n, d)).astype(np.float32)
    traded = rng.random((days, n)) > 0.05
    sig = feats[:, :, 0] + 0.5 * feats[:, :, 1]
    sig[1:] += 0.3 * feats[:-1, :, 2]
    labels = (sig + noise * rng.normal(size=(days, n))).astype(np.float32) * 0.02
    labels[~traded] = np.nan
    labels[-2:] = np.nan                                   # t+1, t+2 not known at the end
    if shuffle_labels:
        for t in range(days):
            labels[t] = labels[t, rng.permutation(n)]
    members = {"small": np.zeros((days, n), bool), "large": np.zeros((days, n), bool)}
    members["small"][:, : n // 2] = True
    members["large"][:, n // 3:] = True
    market = rng.normal(size=(days, m)).astype(np.float32)
    d_ = [date.fromisoformat(str(x)) for x in dates]
    segments = {"train": (d_[0], d_[39]), "valid": (d_[40], d_[54]), "test": (d_[55], d_[-1]),
                "embargo_days": 2}
    return TensorStore.from_arrays(
        root, dates, np.array([f"S{i:03d}" for i in range(n)]), [f"f{j}" for j in range(d)],
        feats, traded, labels, members, market=market, market_names=[f"m{j}" for j in range(m)],
        segments=segments, window=5)
