"""DayLoader throughput (stock-days/s) for csi300, B = 1 and B = 16, vs a naive pandas loader.

    .venv/bin/python benchmarks/bench_loader.py [--home /tmp/miga-bench] [--store PATH]

Uses the tensor store of --home (built by bench_store.py / `miga store`), or --store. The naive
loader is what one writes first: a long DataFrame (date, instrument, D features) and, per day,
a group-by over the window's rows of that day's members, reindexed to the 5 dates and stacked.
Reference: Qlib's TSDataSampler, csi300, T = 5, 2 cores: ~100k stock-days/s.

Measured 2026-11-24 on the shared 2-core box (load average ~7): B=1 442k, B=16 454k
stock-days/s; naive loader ~400 stock-days/s.
Later the same day, store with spare stock slots (rows d * capacity + j), load 1.6: B=1 1.19M,
B=16 1.32M stock-days/s; naive loader 941/s (1268x / 1400x; 11.9x / 13.2x TSDataSampler).
A later session, load 1.1: B=1 1.18M, B=16 1.37M stock-days/s; naive loader 931/s (1271x /
1468x; 11.8x / 13.7x TSDataSampler).

Figure behind a design choice (earlier session; moved here from a code comment): one np.take
of B*N*T rows from the (Days*capacity, D) view of the memmap is about twice as fast as
2-array fancy indexing on the memmap object.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.loader import DayLoader  # noqa: E402
from pipeline.store import TensorStore  # noqa: E402


def find_store(home: Path) -> Path:
    roots = sorted((p for p in (home / "store").glob("*") if (p / "meta.json").is_file()),
                   key=lambda p: p.stat().st_mtime)
    if not roots:
        raise SystemExit(f"no tensor store under {home}/store: run benchmarks/bench_store.py first")
    return roots[-1]


def time_loader(store, stockset, batch_days, max_batches):
    """Steady state, as in training: one epoch pages the store in, the next is timed."""
    loader = DayLoader(store, "train", stockset, batch_days=batch_days, shuffle=True)
    for _ in loader:
        pass
    loader.set_epoch(1)
    n, t = 0, time.perf_counter()
    for i, b in enumerate(loader):
        n += int(b.mask.sum())
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t)


def naive_rate(store, stockset, n_days):
    """Per day: filter the long frame to the window's dates and members, group by stock."""
    window = store.window
    days = store.segment_days("train")
    members = store.members[stockset]
    used = np.flatnonzero(members[days].any(0))
    d_idx, j_idx = np.nonzero(store.traded[:, used])
    feats = np.asarray(store.features[d_idx[:, None], used[j_idx][:, None],
                                      np.arange(len(store.feature_names))[None, :]])
    long = pd.DataFrame(feats, columns=store.feature_names)
    long.insert(0, "date", store.dates[d_idx])
    long.insert(1, "instrument", store.instruments[used[j_idx]])
    long["label"] = store.labels[d_idx, used[j_idx]]
    rng = np.random.default_rng(0)
    pick = rng.choice(days, size=min(n_days, len(days)), replace=False)
    n, t = 0, time.perf_counter()
    for d in pick:
        dates = store.dates[d - window + 1:d + 1]
        insts = store.instruments[members[d]]
        sub = long[long["date"].isin(dates) & long["instrument"].isin(insts)]
        xs = []
        for _, g in sub.groupby("instrument"):
            xs.append(g.set_index("date").reindex(dates)[store.feature_names].fillna(0).to_numpy(np.float32))
        x = np.stack(xs)  # (N, T, D)
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/miga-bench")
    ap.add_argument("--store")
    ap.add_argument("--stockset", default="csi300")
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--naive-days", type=int, default=20)
    args = ap.parse_args()
    store = TensorStore(args.store or find_store(Path(args.home)))
    print(f"store {store.root}: {store.shape} ; load average {os.getloadavg()[0]:.1f}")
    rates = {}
    for b in (1, 16):
        rates[b] = time_loader(store, args.stockset, b, max(10, args.batches // b))
        print(f"DayLoader {args.stockset} B={b:<2} T=5: {rates[b]:>12,.0f} stock-days/s")
    naive = naive_rate(store, args.stockset, args.naive_days)
    print(f"naive pandas group-by loader:   {naive:>12,.0f} stock-days/s")
    for b, r in rates.items():
        print(f"  B={b}: {r / naive:.0f}x the naive loader, {r / 100_000:.1f}x Qlib TSDataSampler (~100k/s)")


if __name__ == "__main__":
    main()
