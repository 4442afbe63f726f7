"""The daily append and the tensor store at the panel's width (D = 626): first ingest, store
build, each step of a one-day append, extended == rebuilt, and training memory and speed.

    miga synth --out DATA --stocks 2000 --days 2500 --features 626 --panel-files month --price-files month
    .venv/bin/python benchmarks/bench_panel_store.py --data DATA [--work DIR] [--history 1250,2500]
                        [--all-days 96] [--threads 1] [--panel-file] [--price-file] [--no-rebuild]
                        [--skip-train] [--store ROOT]

Each step runs in its own child process, which reports its peak RSS (VmHWM of /proc/self/status:
the high-water mark of its own memory; os.wait4's ru_maxrss is not used, because a child started
by vfork, as Python's subprocess does, inherits the parent's peak). The prices and the panel are
delivered as daily/ and features/ folders: the data's own files (synth --price-files/--panel-files
month), or, from one daily.parquet / features.parquet, 50-day files (hard-linked between the
runs); the day L arrives as one more file in each. --price-file / --panel-file instead
re-deliver daily.parquet / features.parquet whole (every row re-read). Segments (a config file
written into --work): train 2016-01-04..2018-06-29, valid to 2018-12-31, test to 2019-11-01
(synthetic business days).

  1. For each history length L (--history): ingest the first L-1 days, build the features and
     the store from scratch (seconds, peak RSS); then the daily append of day L, step by step as
     the flow runs it: ingest (the two new files), validate (the flow's step: the rows the
     ingest wrote), features (labels extended, market features), store (extends the previous
     one); then a rebuild on the same data, compared with the extension bit for bit (every
     array; --no-rebuild skips it, for a disk without room for a second store).
  2. Training on the largest store, memory-mapped on the CPU: MIGA-Conv (default size, D = 626,
     B = 1) one epoch of csi300's whole train segment, and --all-days train days of `all`
     (spread over the segment: every batch reads rows all over the file), with the pages read
     released every MAPPED_BYTES (pipeline/store/arrays.py) and, for contrast, never released.
     Stock-days per second (training phase, `FitResult.throughput`) and peak RSS beside the
     store's size.

Prints the figures; asserts nothing but that each extension happened and equals its rebuild.
`--store ROOT` runs part 2 alone on a built store.

Measured 2026-12-08, this 2-core box, nothing else running:

  `miga synth --stocks 2000 --days 2500 --features 626 --panel-files month --price-files month`
  (11.3 GiB of parquet), --history 1250,2500 --no-rebuild (the disk held no second store):

    history  ingest L-1 days    store BUILD        the daily append of day L (each step's seconds, peak RSS)
                                                   ingest      validate    features    store EXTEND  end to end
    1250      60.0 s 3.16 GiB   26.3 s 3.88 GiB    1.4 s 0.36  1.1 s 0.33  0.5 s 0.22  0.6 s 0.32    3.5 s
    2500     119.5 s 3.30 GiB   55.0 s 3.85 GiB    1.7 s 0.45  1.2 s 0.42  0.6 s 0.26  0.9 s 0.49    4.4 s

  (store features file 6.19 GiB at 1249 days, 12.38 GiB at 2499 days.) Part 2 on the 2500-day
  store: the gather over every train day of `all` (644 days, 1,219,364 stock-days) 6.0 s at
  0.46 GiB peak with the page release, 4.5 s at 3.43 GiB without it; MIGA-Conv (244,686
  parameters), one epoch, B = 1, 1 thread: csi300 254,839 stock-days 4,607 /s, 0.94 GiB peak;
  all (96 days) 181,771 stock-days 4,149 /s, 1.60 GiB peak.

  The whole market's prices with a narrow panel, `miga synth --stocks 5000 --days 2500
  --features 16` (daily.parquet and features/ months; the bench cuts daily/ into 50-day files),
  --history 1250,2500 --skip-train:

    history  ingest L-1 days    store BUILD        ingest      validate    features    store EXTEND  end to end  extended == rebuilt
    1250       9.4 s 1.65 GiB    7.3 s 1.67 GiB    0.5 s 0.40  0.4 s 0.40  0.6 s 0.26  0.8 s 0.45    2.3 s       True
    2500      19.6 s 2.92 GiB   15.4 s 2.70 GiB    0.6 s 0.61  0.5 s 0.61  0.8 s 0.33  1.5 s 0.90    3.5 s       True

  The same with --price-file (daily.parquet re-delivered whole, the old way), --no-rebuild:
  ingest 5.1 s / 8.9 s, validate 2.2 s / 4.3 s (every price row: the file changed), features
  0.6 s / 0.6 s, store extend 0.4 s / 0.7 s; end to end 8.3 s at 1250 days, 14.5 s at 2500.

  Before the daily/ folder and the incremental side arrays (a profile of the same 5,000-stock
  append, daily.parquet re-read whole): ingest 5.9 s / 9.7 s, features 1.6 s / 3.1 s, store
  extend 4.5 s / 9.3 s: 12 s at 1,250 days, 22 s at 2,500. What still grows: the store's
  (days x stocks) side arrays written whole into the new store (~0.25 GB at 5,000 x 2,500),
  the old ones read, and a few scans of the prices' date column (the calendar, the label
  recompute date).

Before the daily/ folder (same box, earlier the same day; daily.parquet re-read at every
ingest, the store's side arrays recomputed over every day):
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
# table file -> its folder (pipeline.data.files.FOLDERS)
DATED = {"daily": "daily", "features": "features"}
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


def child_validate(home: str) -> dict:
    """The flow's validate step: the rows the last ingest wrote (flows/steps.py)."""
    from pipeline.data.validate import validate_warehouse
    from pipeline.settings import Settings

    t = time.perf_counter()
    v = validate_warehouse(Settings.from_env(Path(home)), gx="failures", latest=True)
    return {"seconds": time.perf_counter() - t, "rows": {x.table: x.rows for x in v.tables}}


def child_features(home: str, config: str) -> dict:
    """`miga features` (the labels and market features; the panel's view stays)."""
    from pipeline.config import load_config
    from pipeline.features.build import build_features
    from pipeline.settings import Settings

    t = time.perf_counter()
    build_features(Settings.from_env(Path(home)).ensure(), load_config(config))
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
    """Two stores equal bit for bit (tests/store_equality.py: every array, the features a slab
    at a time, the statistics)?"""
    from pipeline.store import TensorStore
    from tests.store_equality import assert_same_store

    try:
        assert_same_store(TensorStore(a), TensorStore(b))
    except AssertionError as e:
        print(f"stores differ: {e}", file=sys.stderr)
        return {"same": False}
    return {"same": True}


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


CHILDREN = {"ingest": child_ingest, "validate": child_validate, "features": child_features,
            "store": child_store, "gather": child_gather, "train": child_train,
            "compare": child_compare}


# ---------------------------------------------------------------------------- data folders
def _source(data: Path, name: str) -> str:
    """`name`.parquet of `data`, or the files of its folder (synth --price-files/--panel-files
    month) as a read_parquet pattern."""
    single = data / f"{name}.parquet"
    return str(single) if single.exists() else str(data / DATED[name] / "*.parquet")


def _dates(data: Path) -> list:
    import duckdb

    con = duckdb.connect()
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT date FROM read_parquet('{_source(data, 'daily')}') ORDER BY date").fetchall()]


def _copy(con, src: str, dst: Path, lo, hi) -> None:
    con.execute(f"COPY (SELECT * FROM read_parquet('{src}') WHERE date >= $lo AND date <= $hi) "
                f"TO '{dst}' (FORMAT parquet)", {"lo": lo, "hi": hi})


def _cut(con, data: Path, name: str, folder: Path, dates: list, last: int, chunks: Path) -> None:
    """`name`'s days 0..last as `folder`/, the files before `last` hard-linked: from one
    `name`.parquet, 50-day files of `chunks` (written once); from a folder of files (synth's
    month files), its files that end before `last`; then one file for the rest of the days
    before `last` and one for `last`."""
    folder.mkdir()
    src, a = data / f"{name}.parquet", 0
    if src.exists():
        while a + CHUNK_DAYS - 1 <= last:
            chunk = chunks / f"{name}-d{a:05d}.parquet"
            if not chunk.exists():
                _copy(con, str(src), chunk, dates[a], dates[a + CHUNK_DAYS - 1])
            os.link(chunk, folder / f"d{a:05d}.parquet")
            a += CHUNK_DAYS
    else:
        for f in sorted((data / DATED[name]).glob("*.parquet")):
            hi = con.execute(f"SELECT max(date) FROM read_parquet('{f}')").fetchone()[0]
            if hi >= dates[last]:
                break
            os.link(f, folder / f.name)
            a = dates.index(hi) + 1
    if a <= last:                     # the rest: days a..last-1 in one file, the day `last` in its own
        if a < last:
            _copy(con, _source(data, name), folder / f"d{a:05d}-{last - 1:05d}.parquet", dates[a],
                  dates[last - 1])
        _copy(con, _source(data, name), folder / f"d{last:05d}.parquet", dates[last], dates[last])




def _start(data: Path, out: Path, dates: list, last: int, single: set):
    """`out` with index (up to day index `last`) and membership, and each table named in
    `single` as one file up to `last`; returns the DuckDB connection that copies them."""
    import duckdb

    out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    _copy(con, str(data / "index.parquet"), out / "index.parquet", dates[0], dates[last])
    shutil.copy(data / "membership.parquet", out / "membership.parquet")
    for name in single:
        _copy(con, _source(data, name), out / f"{name}.parquet", dates[0], dates[last])
    return con


def _folder(data: Path, out: Path, dates: list, last: int, chunks: Path, single: set) -> Path:
    """`data` up to day index `last` (inclusive) in `out` (`_start`), the prices and the panel
    not in `single` each as a folder of 50-day files (`_cut`)."""
    con = _start(data, out, dates, last, single)
    for name, folder in DATED.items():
        if name not in single:
            _cut(con, data, name, out / folder, dates, last, chunks)
    return out


def _with_new_day(base: Path, out: Path, data: Path, dates: list, day: int, single: set) -> Path:
    """`base` (up to day-1) plus the day `day`: a folder's files linked and one new file, a
    single file re-delivered whole."""
    con = _start(data, out, dates, day, single)
    for name, folder in DATED.items():
        if name in single:
            continue
        (out / folder).mkdir()
        for f in (base / folder).iterdir():
            os.link(f, out / folder / f.name)
        _copy(con, _source(data, name), out / folder / f"new{day:05d}.parquet", dates[day], dates[day])
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
    ap.add_argument("--price-file", action="store_true", help="re-deliver daily.parquet whole")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--no-rebuild", action="store_true", help="skip the rebuild and the comparison "
                    "(disk: a second store); the old store is removed once the new one is built")
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
    single = {n for n, flag in (("features", args.panel_file), ("daily", args.price_file)) if flag}
    mode = ", ".join(f"{n}.parquet re-delivered whole" if n in single else
                     f"{f}/ of {CHUNK_DAYS}-day files + 1 new file" if (data / f"{n}.parquet").exists()
                     else f"{f}/ of the data's own files + 1 new file" for n, f in DATED.items())
    print(f"data {data}: {len(dates)} days; delivery: {mode}", flush=True)
    last_root = None
    for hist in (int(h) for h in args.history.split(",")):
        home = work / f"home{hist}"
        t = time.perf_counter()
        base = _folder(data, work / f"data{hist}-old", dates, hist - 2, work / "chunks", single)
        new = _with_new_day(base, work / f"data{hist}-new", data, dates, hist - 1, single)
        print(f"\n-- history {hist} days (folders written in {time.perf_counter() - t:.0f} s)", flush=True)
        r = run("ingest", str(home), str(base))
        print(f"ingest {hist - 1} days                   {r['wall']:7.1f} s  peak RSS {r['rss_gib']:5.2f} GiB")
        run("features", str(home), str(config))
        first = run("store", str(home), str(config))
        print(f"store BUILD from scratch               {first['seconds']:7.1f} s  peak RSS {first['rss_gib']:5.2f} GiB"
              f"  ({first['days']} days x {first['stocks']} stocks x {first['features']} features, "
              f"features file {first['file_gib']:.2f} GiB)", flush=True)
        append = {"ingest": run("ingest", str(home), str(new)), "validate": run("validate", str(home)),
                  "features": run("features", str(home), str(config))}
        ext = append["store"] = run("store", str(home), str(config))
        assert ext["extended_from"] == first["fingerprint"], ext
        print("the daily append of day L (each step in its own process, as the flow runs them):")
        for step, what in (("ingest", "ingest of the new day's files"),
                           ("validate", "validate (the flow's step: the rows just written)"),
                           ("features", "features (labels, market; the panel is a view)"),
                           ("store", "store EXTEND by one day")):
            print(f"  {what:<52} {append[step]['seconds']:7.1f} s  peak RSS "
                  f"{append[step]['rss_gib']:5.2f} GiB", flush=True)
        print(f"  {'end to end':<52} {sum(r['seconds'] for r in append.values()):7.1f} s  "
              f"(validated rows: {append['validate']['rows']})", flush=True)
        if args.no_rebuild:
            full = ext
        else:
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
