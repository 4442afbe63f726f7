"""Tensor store build time and size for the shared data.

    .venv/bin/python benchmarks/bench_store.py [--home /tmp/miga-bench]

Needs the warehouse of --home with features built (benchmarks/bench_features.py makes it).
Prints build time, peak RSS, size on disk and the store's description, then the time of a
second `build_store` (a no-op: same fingerprint).

Measured 2026-11-24 on the shared 2-core box (load average ~10): 282 s, 6.71 GiB on disk
(2674 days x 4202 stocks x 158 features); peak RSS 8.3 GB counts the memory-mapped pages
written (file-backed, reclaimable) besides ~1 GB of arrays and DuckDB's buffer (limit 3 GB).
Later the same day, idle (load ~1.5), side by side: 48.9 s (writer 39.2 s), 6.71 GiB; with 262
spare stock slots (4464 for 4202 stocks) and the stock axis in order of first trading day
(features table built in the same order): 49.2 s (writer 39.7 s), 7.12 GiB on disk.
A later session (load ~1, right after bench_features.py wrote the warehouse): 60.3 s (50.9 s by
the store's own clock, build_seconds), peak RSS 8.20 GB, 7.12 GiB; a second build_store 0.79 s.
2026-12-08, alone on the box, after the writer's page release (pipeline/store/arrays.py,
MAPPED_BYTES) and with the execution arrays: 51.7 s (39.3 s by the store's clock), peak RSS
4.17 GB, 7.25 GiB on disk (features 7.03 GiB); a second build_store 0.11 s.

Figure behind a design choice (moved from a code comment): spare stock slots of n/16 (at
least 16) take the shared data's 4202 stocks to 4464 slots, about a year of listings, for ~6%
more file.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.store import build_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="/tmp/miga-bench")
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings.from_env(args.home).ensure()
    config = load_config(args.config)
    t = time.perf_counter()
    store = build_store(settings, config, force=True)
    build = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    size = sum(p.stat().st_size for p in store.root.iterdir()) / 2**30
    print(store.describe())
    print(f"STORE BUILD: {build:.1f} s, peak RSS {rss:.2f} GB, {size:.2f} GiB on disk")
    t = time.perf_counter()
    build_store(settings, config)
    print(f"second build_store (unchanged inputs): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
