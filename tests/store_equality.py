"""Two tensor stores hold the same arrays (an extended store against a fresh build)."""
from __future__ import annotations

import numpy as np

from pipeline.store import TensorStore
from pipeline.store.arrays import EXECUTION_ARRAYS


def assert_same_store(a: TensorStore, b: TensorStore, slab_days: int = 50) -> None:
    """Every array equal bit for bit; the features compared `slab_days` days at a time, so a
    store bigger than memory compares too (benchmarks/bench_panel_store.py)."""
    assert list(a.dates) == list(b.dates) and list(a.instruments) == list(b.instruments)
    assert a.feature_names == b.feature_names and a.market_names == b.market_names
    for i in range(0, len(a.dates), slab_days):
        assert np.array_equal(np.asarray(a.features[i:i + slab_days]),
                              np.asarray(b.features[i:i + slab_days])), f"features, days {i}.."
    assert np.array_equal(a.labels, b.labels, equal_nan=True)
    assert np.array_equal(a.traded, b.traded) and np.array_equal(a.market, b.market)
    assert a.members.keys() == b.members.keys()
    for s in a.members:
        assert np.array_equal(a.members[s], b.members[s]), s
    for k in EXECUTION_ARRAYS:
        x, y = a.execution[k], b.execution[k]
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k
    assert a.norm_stats == b.norm_stats
