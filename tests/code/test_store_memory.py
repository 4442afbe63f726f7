"""Bounded memory with a store bigger than RAM: the readers (DayLoader, the engine's gather, the
anchors) and the store writer drop the pages of features.f32 they mapped every MAPPED_BYTES, so
a process's resident share of the file stays bounded, and what they read or wrote is unchanged
by it. And the rule that puts a store on the GPU."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pipeline.engine import StackDays
from pipeline.loader import GPU_FRACTION, DayLoader, device_bytes, fits_on_device
from pipeline.store import TensorStore
from pipeline.store import arrays as store_arrays
from pipeline.store.arrays import StoreWriter, as_segments
from tests.synthetic_store import make_store

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def _resident(path) -> int:
    """Bytes of `path` resident in this process's mappings (/proc/self/smaps)."""
    total, inside = 0, False
    target = str(path.resolve())
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:        # a mapping's first line
                inside = len(head) >= 6 and head[-1] == target
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


@pytest.fixture
def store(tmp_path):
    # 70 days x 40 stocks x 600 features: 6.7 MB of features, each row 2.4 KB
    return make_store(tmp_path / "s", days=70, n=40, d=600)


def _loader_pass(store) -> list[np.ndarray]:
    return [b.x.numpy().copy() for b in DayLoader(store, "train", "all", batch_days=2)]


@linux
def test_loader_pass_keeps_its_mapped_pages_bounded(store, monkeypatch):
    path = store.root / "features.f32"
    unbounded = _loader_pass(store)
    assert _resident(path) > 0.5 * path.stat().st_size          # without a bound: most of the file
    store.release_pages()
    assert _resident(path) == 0
    fresh = TensorStore(store.root)
    monkeypatch.setattr(store_arrays, "MAPPED_BYTES", 256 << 10)
    peak = 0
    bounded = []
    for b in DayLoader(fresh, "train", "all", batch_days=2):
        bounded.append(b.x.numpy().copy())
        peak = max(peak, _resident(path))
    # a batch reads 2 days x 40 stocks x 5 days of window: ~1 MB of pages at most past the bound
    assert peak < (256 << 10) + (1 << 20) < 0.5 * path.stat().st_size
    assert all(np.array_equal(a, b) for a, b in zip(unbounded, bounded))   # same values


@linux
def test_engine_gather_keeps_its_mapped_pages_bounded(store, monkeypatch):
    path = store.root / "features.f32"
    monkeypatch.setattr(store_arrays, "MAPPED_BYTES", 256 << 10)
    days = StackDays(store, ["all", "small"], torch.device("cpu"))
    order = store.segment_days("train")
    peak, seen = 0, []
    for a in range(0, len(order) - 1, 2):
        d = torch.from_numpy(np.stack([order[a:a + 2], order[a:a + 2][::-1].copy()]))
        seen.append(days.gather(d).x.clone())
        peak = max(peak, _resident(path))
    assert peak < (256 << 10) + (1 << 20) < 0.5 * path.stat().st_size
    ref = StackDays(TensorStore(store.root), ["all", "small"], torch.device("cpu"))
    monkeypatch.setattr(store_arrays, "MAPPED_BYTES", 1 << 40)
    for a, x in zip(range(0, len(order) - 1, 2), seen):
        d = torch.from_numpy(np.stack([order[a:a + 2], order[a:a + 2][::-1].copy()]))
        assert torch.equal(ref.gather(d).x, x)


@linux
def test_writer_drops_written_pages_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(store_arrays, "MAPPED_BYTES", 256 << 10)
    days, n, d = 30, 50, 500
    dates = np.arange("2020-01-01", "2020-01-31", dtype="datetime64[D]")
    seg = as_segments({"train": ("2020-01-01", "2020-01-10"), "valid": ("2020-01-11", "2020-01-20"),
                       "test": ("2020-01-21", "2020-01-30"), "embargo_days": 0})
    w = StoreWriter(tmp_path / "w", "w", dates, [f"S{i}" for i in range(n)],
                    [f"f{j}" for j in range(d)], [], seg, 5)
    x = np.random.default_rng(0).normal(size=(days, n, d)).astype(np.float32)
    path, peak = w.tmp / "features.f32", 0
    for t in range(days):                       # as the build scatters batches of rows
        w.features[t] = x[t]
        w.count_written(n)
        peak = max(peak, _resident(path))
    assert peak < (256 << 10) + 2 * n * d * 4 < 0.5 * x.nbytes
    traded = np.ones((days, n), bool)
    lab = np.zeros((days, n), np.float32)
    w.finish(labels=lab, traded=traded, members={}, stats={}, market=np.zeros((days, 0)),
             execution={"exec_ret": lab, "buy_ok": traded, "short_ok": traded, "hold_ret": lab,
                        "sell_ok": traded, "at_limit": ~traded})
    assert np.array_equal(np.asarray(TensorStore(tmp_path / "w").features), x)


def test_the_store_goes_to_the_gpu_only_within_its_share_of_free_memory(store):
    need = device_bytes(store)
    assert need >= store.features.nbytes + store.labels.nbytes
    assert fits_on_device(store, int(need / GPU_FRACTION) + 1)
    assert not fits_on_device(store, int(need / GPU_FRACTION) - 1)
    assert not fits_on_device(store, need)            # no headroom left: gathered on the host
