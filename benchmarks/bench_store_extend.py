"""Tensor store after new days: extending the previous store vs building it again.

    .venv/bin/python benchmarks/bench_store_extend.py [--data ../shared/data] [--home DIR]
                                                      [--new-days 1] [--until DATE] [--config NAME]

Ingests the data folder without its last --new-days market days into a scratch home, builds
features and the store; then ingests the whole folder (the new days, as a daily run does),
extends features and store, and, side by side on the same final data, times a full rebuild
of the store (`force=True`). Prints the seconds of each step and checks that the extended
store equals the rebuilt one (features, labels, stock sets: bit for bit).

Measured 2026-11-24 on the shared data, idle 2-core machine (load ~1.7):
  last day 2020-12-31 (3 stocks listed that day): extend 19.8 s vs rebuild 43.2 s
  --until 2020-12-09 (no listing that day, features file linked): extend 2.9 s vs rebuild 52.3 s
  features for the new day (extend) 7.9-8.0 s; extended == rebuilt: True in both.
  Next session, with Alpha158 statements packed by rows (a one-day extend is one statement,
  not 11 of ~0.3 s planning each), --until 2020-12-09: features (extend) 5.2 s; store
  extend 2.9 s vs rebuild 42.1 s; extended == rebuilt: True.
  Later the same day, with the stock axis in order of first trading day and spare stock slots
  in features.f32 (newly listed stocks no longer rewrite the old days), load ~1.5:
  last day 2020-12-31 (3 stocks listed): store extend 2.8 s (was 19.8 s) vs rebuild 50.8 s;
  features (extend) 5.2 s; extended == rebuilt: True.
  Next session, with RANK from sign sums of day lags and QTLU/QTLD of 5/10 days from a
  comparator network (d323073), load ~1.5, --until 2020-12-09: features (full build) 61.9 s,
  features (extend) 4.6 s; store build 46.5 s, store extend 2.7 s vs rebuild 37.9 s;
  extended == rebuilt: True.

Figure behind a design choice (earlier session; moved here from a code comment): writing the
rewritten old days sequentially before the file is mapped (StoreWriter's prefix_chunks) is
~1.5x faster than writing them through the memory map.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.features.build import build_features  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.store import build_store  # noqa: E402


def _prefix_folder(data: Path, out: Path, new_days: int = 0, until: str | None = None) -> str:
    """`data` up to `until` (default: its end) without its last `new_days` market days;
    returns the last date kept."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    daily = str(data / "daily.parquet")
    cut = con.execute(f"SELECT max(date) FROM (SELECT DISTINCT date FROM read_parquet('{daily}') "
                      f"WHERE date <= $u ORDER BY date DESC OFFSET {int(new_days)})",
                      {"u": until or "9999-12-31"}).fetchall()[0][0]
    for name in ("daily", "index"):
        src = data / f"{name}.parquet"
        con.execute(f"COPY (SELECT * FROM read_parquet('{src}') WHERE date <= $cut) "
                    f"TO '{out / (name + '.parquet')}' (FORMAT parquet)", {"cut": cut})
    shutil.copy(data / "membership.parquet", out / "membership.parquet")
    con.close()
    return str(cut)[:10]


def timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label:<44}{time.perf_counter() - t:>8.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--home")
    ap.add_argument("--new-days", type=int, default=1)
    ap.add_argument("--config")
    ap.add_argument("--until", help="use the data up to this date only (e.g. a day on which no "
                                     "stock listed: the old features file is then linked)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    home = Path(args.home or tempfile.mkdtemp(prefix="miga-extend-"))
    settings = Settings.from_env(home).ensure()
    config = load_config(args.config)
    data = Path(args.data)
    if args.until:
        _prefix_folder(data, home / "until_data", 0, args.until)
        data = home / "until_data"

    cut = _prefix_folder(data, home / "prefix_data", args.new_days)
    print(f"home {home}; data {data}; first build up to {cut}, then {args.new_days} new day(s)")
    timed("ingest (all but the new days)", lambda: ingest(settings, home / "prefix_data"))
    timed("features (full build)", lambda: build_features(settings, config))
    first = timed("store (full build)", lambda: build_store(settings, config))
    timed("ingest of the new days (whole folder)", lambda: ingest(settings, data))
    timed("features (extend)", lambda: build_features(settings, config))
    ext = timed("store (EXTEND the previous one)", lambda: build_store(settings, config))
    assert ext.meta["extended_from"] == first.fingerprint, ext.meta.get("extended_from")
    ext_copy = home / "extended"
    ext.root.rename(ext_copy)       # kept aside (no copy): the rebuild writes the same folder
    full = timed("store (REBUILD on the same data, side by side)",
                 lambda: build_store(settings, config, force=True))
    from pipeline.store import TensorStore

    ext = TensorStore(ext_copy)
    same = (np.array_equal(np.asarray(ext.features), np.asarray(full.features))
            and np.array_equal(ext.labels, full.labels, equal_nan=True)
            and all(np.array_equal(ext.members[s], full.members[s]) for s in full.members))
    print(f"store: {len(full.dates)} days x {len(full.instruments)} stocks x "
          f"{len(full.feature_names)} features; {len(full.instruments) - len(first.instruments)} "
          f"new stocks; extended == rebuilt: {same}")


if __name__ == "__main__":
    main()
