"""The tensor store at the panel's width (D = 626): build, one-day extend, and training memory.

    miga synth --out DATA --stocks 1500 --days 1200 --features 626
    .venv/bin/python benchmarks/bench_panel_store.py --data DATA [--work DIR] [--history 700,1200]
                        [--all-days 96] [--threads 1] [--panel-file] [--skip-train] [--store ROOT]

Each step runs in its own child process, which reports its peak RSS (VmHWM of /proc/self/status:
the high-water mark of its own memory; os.wait4's ru_maxrss is not used, because a child started
by vfork, as Python's subprocess does, inherits the parent's peak). The data folder's
features.parquet is cut into a features/ folder of 50-day files (hard-linked between the runs),
so a daily delivery is one more file, as pipeline/data/ingest.py reads it; --panel-file instead re-delivers the whole features.parquet
(every row re-ingested). Segments (a config file written into --work): train 2016-01-04..
2018-06-29, valid to 2018-12-31, test to 2019-11-01 (synthetic business days).

  1. For each history length L (--history): ingest the first L-1 days, build the store from
     scratch (seconds, peak RSS), ingest day L, build the store again: it extends the previous one
     (seconds, peak RSS); then a rebuild on the same data, and the two compared bit for bit.
  2. Training on the largest store, memory-mapped on the CPU: MIGA-Conv (default size, D = 626,
     B = 1) one epoch of csi300's whole train segment, and --all-days train days of `all`
     (spread over the segment: every batch reads rows all over the file), with the pages read
     released every MAPPED_BYTES (pipeline/store/arrays.py) and, for contrast, never released.
     Stock-days per second (training phase, `FitResult.throughput`) and peak RSS beside the
     store's size.

Prints the figures; asserts nothing but that each extension happened and equals its rebuild.
`--store ROOT` runs part 2 alone on a built store.

Measured 2026-12-08 on the shared 2-core box (load average 5-7 from two other sessions, so
seconds vary by up to 1.5x between runs), `miga synth --stocks 1500 --days 1200 --features 626`
(1,723,578 stock-days, 4.3 GB features.parquet), --history 700,1200, features/ folder delivery;
the whole run 11 minutes:

    history  ingest L-1 days  store BUILD        ingest new day  store EXTEND     REBUILD          equal
    700      68.5 s  2.84 GiB  31.4 s  3.60 GiB   4.1 s 0.44 GiB   2.6 s  0.45 GiB  31.4 s  3.59 GiB  True
    1200    110.9 s  3.08 GiB  50.0 s  4.01 GiB   9.2 s 0.58 GiB   4.3 s  0.59 GiB  46.1 s  4.00 GiB  True

  (store features file: 2.60 GiB at 699 days, 4.45 GiB at 1199 days x 1593 slots x 626 x 4 B.)
  The build's RSS is DuckDB's buffer (`warehouse.MEMORY_LIMIT` 3 GB) plus one Arrow batch and
  the fit sample; the written pages are released every MAPPED_BYTES. With MAPPED_BYTES = 256 MiB
  (the value kept; the table above ran with 1 GiB) a rebuild at 1200 days: 42.2 s, 3.71 GiB.
  Before the release existed (the same session, 1500 x 1000 days, 3.7 GiB store): 31 s, 7.5 GB
  peak RSS (/usr/bin/time): every written page stayed mapped.

  Ten years at the panel's width, 2026-12-08 (same box, this run alone but for a test suite
  running beside it at normal priority, the bench at nice 19): `miga synth --stocks 1000 --days
  2500 --features 626` (6.05 GB features.parquet), --history 1250,2500, whole run 8 min 55 s:

    history  ingest L-1 days  store BUILD        ingest new day  store EXTEND     REBUILD          equal
    1250     74.5 s  3.08 GiB  22.2 s  3.68 GiB   3.9 s 0.52 GiB   2.1 s  0.49 GiB  21.8 s  3.71 GiB  True
    2500    116.6 s  3.13 GiB  45.5 s  3.79 GiB   5.3 s 0.67 GiB   3.7 s  0.76 GiB  45.4 s  3.78 GiB  True

  (features file 3.09 GiB at 1249 days, 6.19 GiB at 2499 days.) The gather over every train day
  of `all` (612,875 stock-days): 13.7 s, 0.35 GiB released / 15.9 s, 1.87 GiB never released.
  MIGA-Conv one epoch, B = 1, 1 thread: csi300 127,520 stock-days 3,870 /s, 0.86 GiB; all 96 days
  91,365 stock-days 3,818 /s, 1.02 GiB.

  Part 2, on the 1200-day store (4.46 GiB of features; train segment 644 days), MAPPED_BYTES
  256 MiB, 1 torch thread:
    the gather alone, every train day of `all` (930,575 stock-days):
      pages released every MAPPED_BYTES  24.8 s   peak RSS 0.39 GiB
      pages never released (before)      21.7 s   peak RSS 2.61 GiB  (grows with the segment)
    MIGA-Conv (244,686 parameters at D = 626), one epoch, B = 1:
      csi300  644 days  191,316 stock-days  2,326 /s  peak RSS 0.88 GiB
      all      96 days  138,713 stock-days  4,294 /s  peak RSS 1.36 GiB
    (with MAPPED_BYTES = 1 GiB: gather 20.9 s / 0.44 GiB, never released 18.9 s / 2.64 GiB;
    csi300 3,657 /s, 1.91 GiB; all 3,652 /s, 1.45 GiB.) Throughput differences between the two
    runs are the machine's load, not the release (the gather's pages re-map from the page cache).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK_DAYS = 50
CONFIG = """[segments]
train = ["2016-01-04", "2018-06-29"]
valid = ["2018-07-02", "2018-12-31"]
test = ["2019-01-01", "2019-11-01"]

[data]
stocksets = ["csi300"]
"""


# ---------------------------------------------------------------------------- children
def child_ingest(home: str, data: str) -> dict:
    from pipeline.data.ingest import ingest
    from pipeline.settings import Settings

    t = time.perf_counter()
    ingest(Settings.from_env(Path(home)).ensure(), Path(data))
    return {"seconds": time.perf_counter() - t}


def child_store(home: str, config: str, force: bool = False) -> dict:
    from pipeline.config import load_config
    from pipeline.settings import Settings
    from pipeline.store import build_store

    t = time.perf_counter()
    store = build_store(Settings.from_env(Path(home)).ensure(), load_config(config), force=force)
    return {"seconds": time.perf_counter() - t, "root": str(store.root),
            "fingerprint": store.fingerprint, "extended_from": store.meta.get("extended_from"),
            "days": len(store.dates), "stocks": len(store.instruments),
            "features": len(store.feature_names), "file_gib": store._file.nbytes / 2**30}


def child_gather(root: str, unbounded: bool) -> dict:
    """The training gather alone (pipeline.engine.StackDays, CPU) over every train day of `all`."""
    import torch

    from pipeline.engine import StackDays
    from pipeline.store import TensorStore, arrays

    if unbounded:
        arrays.MAPPED_BYTES = 1 << 60
    store = TensorStore(root)
    days = StackDays(store, ["all"], torch.device("cpu"))
    train = store.segment_days("train")
    t = time.perf_counter()
    rows = 0
    for d in train:
        b = days.gather(torch.tensor([[int(d)]]))
        rows += int(b.mask.sum())
    return {"seconds": time.perf_counter() - t, "days": len(train), "stock_days": rows}


def child_train(root: str, config: str, stockset: str, days: int, threads: int) -> dict:
    import numpy as np
    import torch

    from pipeline.config import load_config
    from pipeline.models import create_model
    from pipeline.store import TensorStore
    from pipeline.train import StackCell, fit_stack

    torch.set_num_threads(threads)
    cfg = load_config(config)
    store = TensorStore(root)
    train = store.segment_days("train")
    if days and days < len(train):          # spread over the segment
        train = train[np.linspace(0, len(train) - 1, days).round().astype(int)]
    valid = store.segment_days("valid")[:8]
    torch.manual_seed(0)
    model = create_model("miga-conv", d_feat=len(store.feature_names), d_market=len(store.market_names))
    tcfg = cfg.train_for("miga-conv")
    from dataclasses import replace
    tcfg = replace(tcfg, max_epochs=1, batch_days=1, device="cpu")
    cell = StackCell(stockset, 0, tcfg, None, train_days=train, valid_days=valid)
    res = fit_stack([model], [cell], store, progress=False, device="cpu")[0]
    return {"stock_days": res.train_stock_days, "seconds": res.train_seconds,
            "throughput": res.throughput, "days": len(train),
            "params": sum(p.numel() for p in model.parameters())}




def child_compare(a: str, b: str) -> dict:
    """Two stores equal bit for bit (features a slab at a time, labels, stats)?"""
    import numpy as np

    from pipeline.store import TensorStore

    a, b = TensorStore(a), TensorStore(b)
    same = a.shape == b.shape and all(
        np.array_equal(np.asarray(a.features[i:i + 50]), np.asarray(b.features[i:i + 50]))
        for i in range(0, len(a.dates), 50))
    same = same and np.array_equal(a.labels, b.labels, equal_nan=True) and a.norm_stats == b.norm_stats
    return {"same": bool(same)}


def _peak_rss_gib() -> float:
    """This process's own peak RSS (VmHWM), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run(kind: str, *args) -> dict:
    """Run child `kind` in its own process; its result plus wall seconds and peak RSS (GiB)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} {args} failed (status {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t
    return res


CHILDREN = {"ingest": child_ingest, "store": child_store, "gather": child_gather,
            "train": child_train, "compare": child_compare}


# ---------------------------------------------------------------------------- data folders
def _dates(data: Path) -> list:
    import duckdb

    con = duckdb.connect()
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT date FROM read_parquet('{data / 'daily.parquet'}') ORDER BY date").fetchall()]


def _copy(con, src: Path, dst: Path, lo, hi) -> None:
    con.execute(f"COPY (SELECT * FROM read_parquet('{src}') WHERE date >= $lo AND date <= $hi) "
                f"TO '{dst}' (FORMAT parquet)", {"lo": lo, "hi": hi})


def _folder(data: Path, out: Path, dates: list, last: int, chunks: Path, panel_file: bool) -> Path:
    """`data` up to day index `last` (inclusive) in `out`: daily, index, membership, and the
    panel as features/ (the 50-day files of `chunks` that end before `last`, hard-linked, plus one
    file for the rest) or, with panel_file, one features.parquet."""
    import duckdb

    out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    for name in ("daily", "index"):
        _copy(con, data / f"{name}.parquet", out / f"{name}.parquet", dates[0], dates[last])
    shutil.copy(data / "membership.parquet", out / "membership.parquet")
    src = data / "features.parquet"
    if panel_file:
        _copy(con, src, out / "features.parquet", dates[0], dates[last])
        return out
    (out / "features").mkdir()
    a = 0
    while a + CHUNK_DAYS - 1 <= last:
        chunk = chunks / f"d{a:05d}.parquet"
        if not chunk.exists():
            _copy(con, src, chunk, dates[a], dates[a + CHUNK_DAYS - 1])
        os.link(chunk, out / "features" / chunk.name)
        a += CHUNK_DAYS
    if a <= last:                     # the rest: days a..last-1 in one file, the day `last` in its own
        if a < last:
            _copy(con, src, out / "features" / f"d{a:05d}-{last - 1:05d}.parquet", dates[a], dates[last - 1])
        _copy(con, src, out / "features" / f"d{last:05d}.parquet", dates[last], dates[last])
    return out


def _with_new_day(base: Path, out: Path, data: Path, dates: list, day: int, panel_file: bool) -> Path:
    """`base` (up to day-1) plus the day `day`: the base's panel files linked and one new file."""
    import duckdb

    out.mkdir(parents=True)
    con = duckdb.connect()
    for name in ("daily", "index"):
        _copy(con, data / f"{name}.parquet", out / f"{name}.parquet", dates[0], dates[day])
    shutil.copy(data / "membership.parquet", out / "membership.parquet")
    if panel_file:
        _copy(con, data / "features.parquet", out / "features.parquet", dates[0], dates[day])
        return out
    (out / "features").mkdir()
    for f in (base / "features").iterdir():
        os.link(f, out / "features" / f.name)
    _copy(con, data / "features.parquet", out / "features" / f"new{day:05d}.parquet", dates[day], dates[day])
    return out


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=False)
    ap.add_argument("--work", default="/tmp/miga-bench-panel-store")
    ap.add_argument("--history", default="700,1200", help="history lengths L (market days)")
    ap.add_argument("--all-days", type=int, default=96, help="train days of `all` to train on")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training children "
                    "(1: on a shared 2-core box two threads spin-wait and collapse)")
    ap.add_argument("--panel-file", action="store_true", help="re-deliver features.parquet whole")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--store", help="only part 2, on this built store (a folder of a previous run's "
                    "--work, e.g. WORK/home1200/store/<fingerprint>)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import logging
        logging.basicConfig(level=logging.WARNING)
        res = CHILDREN[args.child[0]](*json.loads(args.child[1]))
        print(json.dumps({**res, "rss_gib": _peak_rss_gib()}))
        return

    from pipeline.store import TensorStore

    work = Path(args.work)
    if work.exists() and not args.store:
        shutil.rmtree(work)
    (work / "chunks").mkdir(parents=True, exist_ok=True)
    config = work / "bench.toml"
    config.write_text(CONFIG)
    if args.store:
        return _training(args.store, config, args)
    data = Path(args.data)
    dates = _dates(data)
    mode = "features.parquet re-delivered whole" if args.panel_file else f"features/ of {CHUNK_DAYS}-day files + 1 new file"
    print(f"data {data}: {len(dates)} days; panel delivery: {mode}", flush=True)
    last_root = None
    for hist in (int(h) for h in args.history.split(",")):
        home = work / f"home{hist}"
        t = time.perf_counter()
        base = _folder(data, work / f"data{hist}-old", dates, hist - 2, work / "chunks", args.panel_file)
        new = _with_new_day(base, work / f"data{hist}-new", data, dates, hist - 1, args.panel_file)
        print(f"\n-- history {hist} days (folders written in {time.perf_counter() - t:.0f} s)", flush=True)
        r = run("ingest", str(home), str(base))
        print(f"ingest {hist - 1} days                   {r['wall']:7.1f} s  peak RSS {r['rss_gib']:5.2f} GiB")
        first = run("store", str(home), str(config))
        print(f"store BUILD from scratch               {first['seconds']:7.1f} s  peak RSS {first['rss_gib']:5.2f} GiB"
              f"  ({first['days']} days x {first['stocks']} stocks x {first['features']} features, "
              f"features file {first['file_gib']:.2f} GiB)", flush=True)
        r = run("ingest", str(home), str(new))
        print(f"ingest of the new day                  {r['wall']:7.1f} s  peak RSS {r['rss_gib']:5.2f} GiB")
        ext = run("store", str(home), str(config))
        assert ext["extended_from"] == first["fingerprint"], ext
        print(f"store EXTEND by one day                {ext['seconds']:7.1f} s  peak RSS {ext['rss_gib']:5.2f} GiB", flush=True)
        kept = work / f"extended{hist}"
        Path(ext["root"]).rename(kept)
        full = run("store", str(home), str(config), True)
        print(f"store REBUILD on the same data         {full['seconds']:7.1f} s  peak RSS {full['rss_gib']:5.2f} GiB")
        same = run("compare", str(kept), full["root"])["same"]
        print(f"extended == rebuilt: {same}")
        assert same
        shutil.rmtree(kept)
        for f in (base, new):
            shutil.rmtree(f)
        if last_root is not None:
            shutil.rmtree(Path(last_root).parent.parent)      # the previous history's home
        last_root = full["root"]
    if not args.skip_train and last_root is not None:
        _training(last_root, config, args)


def _training(last_root: str, config: Path, args) -> None:
    from pipeline.store import TensorStore

    size = TensorStore(last_root)._file.nbytes / 2**30
    print(f"\n-- the training gather over every train day of `all` (store: {size:.2f} GiB of features)")
    for unbounded in (False, True):
        r = run("gather", last_root, unbounded)
        how = "pages never released (before)" if unbounded else "pages released every MAPPED_BYTES"
        print(f"{r['days']} days, {r['stock_days']:,} stock-days in {r['seconds']:.1f} s  "
              f"peak RSS {r['rss_gib']:5.2f} GiB  ({how})", flush=True)
    print(f"\n-- training MIGA-Conv (D = {TensorStore(last_root).shape[2]}) on the memory-mapped store, "
          f"CPU, B = 1, {args.threads} torch thread(s)")
    for stockset, days in (("csi300", 0), ("all", args.all_days)):
        r = run("train", last_root, str(config), stockset, days, args.threads)
        print(f"{stockset:<7} {r['days']:4d} train days {r['stock_days']:>9,} stock-days "
              f"{r['throughput']:8,.0f} /s  peak RSS {r['rss_gib']:5.2f} GiB  "
              f"({r['params']:,} parameters)", flush=True)


if __name__ == "__main__":
    main()
