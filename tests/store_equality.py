"""Two tensor stores hold the same arrays (an extended store against a fresh build)."""
from __future__ import annotations

import numpy as np

from pipeline.store import TensorStore
from pipeline.store.arrays import EXECUTION_ARRAYS


def assert_same_store(a: TensorStore, b: TensorStore) -> None:
    assert list(a.dates) == list(b.dates) and list(a.instruments) == list(b.instruments)
    assert a.feature_names == b.feature_names and a.market_names == b.market_names
    assert np.array_equal(np.asarray(a.features), np.asarray(b.features))
    assert np.array_equal(a.labels, b.labels, equal_nan=True)
    assert np.array_equal(a.traded, b.traded) and np.array_equal(a.market, b.market)
    assert a.members.keys() == b.members.keys()
    for s in a.members:
        assert np.array_equal(a.members[s], b.members[s]), s
    for k in EXECUTION_ARRAYS:
        x, y = a.execution[k], b.execution[k]
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k
    assert a.norm_stats == b.norm_stats
