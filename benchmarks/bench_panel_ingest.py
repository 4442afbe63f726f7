"""Feature panel as a features/ folder: initial ingest vs DuckDB's bare insert, and the daily
append at two history lengths. Every figure is measured in a child process (wall seconds, and
peak RSS from os.wait4, as bench_ingest.py does), so the figures do not mix.

    .venv/bin/python benchmarks/bench_panel_ingest.py                      # 1,000 x 1,000 x 626
    .venv/bin/python benchmarks/bench_panel_ingest.py --stocks 200 --days 120 --short 60

(a) A synthetic panel of --stocks x --days x 626 float32 features as features/ month files
    (written once to --wide-dir and reused): DuckDB's bare `INSERT INTO t SELECT * FROM
    read_parquet([...files])` into a fresh DuckDB file (the floor), then `miga ingest` of the
    same folder into an empty warehouse (schema checks, the feature_panel suite over every row,
    the insert, the per-date hashes), side by side; the ratio ingest / bare.
(b) The daily append: one more day's file added to a folder already ingested, at two history
    lengths (--short days and --days days): ingest seconds only (unchanged files are not read).
(c) --layouts: the bare insert under other DuckDB settings (preserve_insertion_order, threads,
    a DOUBLE table) to see whether the 626-column insert has a cheaper layout.

Measured 2026-12-08 on this 2-core box (load average ~7: two other agents' jobs ran too, so
seconds are noisy), DuckDB 2.0.0, memory_limit 3GB (the ingest's), 626 float32 features,
month files; full output in the final report of issue 22:

  1,000 stocks x 1,000 days (47 files, 2.27 GiB parquet, 1.0M rows)
    bare INSERT INTO t SELECT * FROM read_parquet(files)        47.9 s   2.59 GiB
      the same, preserve_insertion_order=false                  42.5 s   2.75 GiB
    ingest + validation, empty warehouse                        58.3 s   2.86 GiB  1.22x / 1.37x
      hash 3.5, validate features/ 4.8, insert 40.0, per-date hashes 4.6, the rest ~5
    daily append of one day                                      6.1 s   0.42 GiB
      features/ part: validate 1.6 + write 0.2 (prices: validate 1.3 + upsert 1.1, the
      whole daily.parquet as ever)
  1,000 stocks x 250 days (12 files, 0.58 GiB)
    bare insert 14.6 s (16.4 s with preserve_insertion_order=false); ingest 21.4 s, 1.53 GiB
    (1.46x / 1.31x); daily append 4.1 s (features/: validate 2.3 + write 0.1)
  The daily append's features/ part is the same at 250 and 1,000 days (~2 s: the suite's
  1,900 checks compiled for one file); what grows is daily.parquet's, re-read every time.

The largest the disk held, --data (a), 2026-12-08, nothing else running but another agent's
work for part of it: `miga synth --stocks 2000 --days 2500 --features 626 --panel-files month
--price-files month` (116 month files, 11.30 GiB of parquet, 4.6M rows; the ingest also loads
the 5M price rows of daily/, which the bare insert does not):

    bare INSERT INTO t SELECT * FROM read_parquet(files)        162.3 s   3.07 GiB
      the same, preserve_insertion_order=false                   98.3 s   3.00 GiB
    ingest + validation, empty warehouse                        158.1 s   3.31 GiB  0.97x / 1.61x
      hash 15.4, validate daily/ 3.7 + features/ 6.2, daily/ write 2.1, features/ insert 103.6,
      per-date hashes 24.1

Where the time goes: the 626-column insert is DuckDB's own cost (40 of 58 s; the bare insert
alone takes as long); validation is one scan (~5 s). The bare insert's variants on the
1,000-day files: threads=1 43.8 s; a DOUBLE table 56.4 s (float32 stays: faster, and 4
bytes a value); force_compression=uncompressed 25.2 s (-40%: DuckDB's float compression analysis
is what a wide insert spends its time on). Not adopted: on price-derived float32 features
(10 columns of returns and ratios over ../shared/data's 7.25M rows) the default compression
keeps the table 35% smaller (292 vs 447 MiB) for 20% more insert time (4.2 vs 3.5 s); noise
does not compress, real features do. The parquet row-group size was not varied: DuckDB stores
the table in its own row groups (122,880 rows), so it only changes how the files are read.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench_ingest import child   # a fresh interpreter per measurement: wall s, peak RSS GiB

ROOT = Path(__file__).resolve().parent.parent

SYNTH = """
import sys
from pathlib import Path
import pyarrow.parquet as pq
from pipeline.data.synth import SynthSpec, write_synthetic
out, stocks, days = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
write_synthetic(out, SynthSpec(n_stocks=stocks, n_days=days, n_features=626, start="2015-01-05",
                               seed=0, panel_files="month"))
# hold the last day back as its own file: the daily append
last = sorted((out / "features").glob("*.parquet"))[-1]
t = pq.read_table(last)
day = t.column("date").to_numpy().max()
import pyarrow.compute as pc
keep, new = t.filter(pc.less(t["date"], day)), t.filter(pc.equal(t["date"], day))
pq.write_table(keep, last, compression="none")
(out / "aside").mkdir(exist_ok=True)
pq.write_table(new, out / "aside" / (str(day.astype("datetime64[D]")) + ".parquet"), compression="none")
"""
BARE = """
import sys, duckdb, glob
db, folder, settings = sys.argv[1], sys.argv[2], sys.argv[3:]
files = sorted(glob.glob(folder + "/features/*.parquet"))
con = duckdb.connect(db, config=dict(s.split("=", 1) for s in settings))
cast = "FLOAT" if "double" not in db else "DOUBLE"
con.execute("CREATE TABLE t AS SELECT * FROM read_parquet($f) LIMIT 0", {"f": files})
if cast == "DOUBLE":
    con.execute("DROP TABLE t")
    con.execute("CREATE TABLE t AS SELECT date, instrument, COLUMNS(* EXCLUDE (date, instrument))::DOUBLE "
                "FROM read_parquet($f) LIMIT 0", {"f": files})
con.execute("INSERT INTO t SELECT * FROM read_parquet($f)", {"f": files})
con.execute("CHECKPOINT")
print(con.execute("SELECT count(*) FROM t").fetchone()[0])
"""
INGEST = """
import sys
from pipeline.settings import Settings
from pipeline.data.ingest import ingest
print(ingest(Settings.from_env(sys.argv[2]).ensure(), sys.argv[1]))
"""


def row(label: str, wall: float, rss: float, extra: str = "") -> None:
    print(f"{label:<52} {wall:8.1f} s  {rss:6.2f} GiB  {extra}", flush=True)


def folder(wide: Path, stocks: int, days: int) -> Path:
    out = wide / f"panel-{stocks}x{days}"
    if not (out / "aside").is_dir():
        shutil.rmtree(out, ignore_errors=True)
        row(f"write {stocks} x {days + 1} days (once, reused)", *child(SYNTH, str(out), str(stocks),
                                                                       str(days + 1))[:2])
    back = list((out / "features").glob("20??-??-??.parquet"))   # a previous run's appended day
    for f in back:
        f.rename(out / "aside" / f.name)
    return out


def timings(report: str) -> str:
    return next((ln.strip() for ln in report.splitlines() if ln.strip().startswith("seconds:")), "")


def bench(tmp: Path, data: Path, label: str, memory: str, bare: bool, append: bool = True) -> None:
    files = sorted((data / "features").glob("*.parquet"))
    size = sum(f.stat().st_size for f in files) / 2**30
    print(f"== {label}: {len(files)} files, {size:.2f} GiB of parquet", flush=True)
    settings = [f"memory_limit={memory}", f"temp_directory={tmp / 'spill'}"]
    if bare:
        bw, brss, _ = child(BARE, str(tmp / f"bare-{label}.duckdb"), str(data), *settings)
        row("bare INSERT INTO t SELECT * FROM read_parquet(files)", bw, brss)
        (tmp / f"bare-{label}.duckdb").unlink()
        # the same, with the ingest's setting (the ingest lets DuckDB reorder a bulk insert)
        sw, srss, _ = child(BARE, str(tmp / f"bare2-{label}.duckdb"), str(data), *settings,
                            "preserve_insertion_order=false")
        row("  the same, preserve_insertion_order=false", sw, srss)
        (tmp / f"bare2-{label}.duckdb").unlink()
    home = tmp / f"home-{label}"
    iw, irss, out = child(INGEST, str(data), str(home))
    row("ingest + validation, empty warehouse", iw, irss,
        f"ratio {iw / bw:.2f}x the bare insert, {iw / sw:.2f}x with its setting" if bare else "")
    print("   ", timings(out), flush=True)
    if not append:
        return
    aside = next((data / "aside").glob("*.parquet"))
    target = data / "features" / aside.name
    shutil.copyfile(aside, target)
    try:
        aw, arss, out = child(INGEST, str(data), str(home))
        row(f"daily append of one day ({aside.stem}) to {label}", aw, arss)
        print("   ", timings(out), flush=True)
        print("   ", next(ln.strip() for ln in out.splitlines() if "features/:" in ln), flush=True)
    finally:
        target.unlink()


def layouts(tmp: Path, data: Path, memory: str) -> None:
    print("== bare insert under other settings (same files)", flush=True)
    base = [f"memory_limit={memory}", f"temp_directory={tmp / 'spill'}"]
    for name, extra in (("threads=1", ["threads=1"]),
                        ("preserve_insertion_order=false, force_compression=uncompressed",
                         ["preserve_insertion_order=false", "force_compression=uncompressed"]),
                        ("DOUBLE table", [])):
        db = tmp / f"layout-{name.replace('=', '-')}{'-double' if 'DOUBLE' in name else ''}.duckdb"
        row(f"bare insert, {name}", *child(BARE, str(db), str(data), *base, *extra)[:2])
        db.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stocks", type=int, default=1000)
    p.add_argument("--days", type=int, default=1000, help="the long history (a)")
    p.add_argument("--short", type=int, default=250, help="the short history of (b)")
    p.add_argument("--memory", default="3GB", help="DuckDB memory_limit (the ingest's default)")
    p.add_argument("--layouts", action="store_true", help="(c): the bare insert's variants")
    p.add_argument("--wide-dir", default=str(Path(tempfile.gettempdir()) / "miga-bench-panel"))
    p.add_argument("--data", help="(a) only, on this data folder's features/ files (e.g. `miga "
                   "synth --features 626 --panel-files month --price-files month` at a size "
                   "whose second copy would not fit on the disk); the daily append is "
                   "bench_panel_store.py's")
    args = p.parse_args()
    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}, 626 float32 features, "
          f"month files", flush=True)
    wide = Path(args.wide_dir)
    tmp = Path(tempfile.mkdtemp(prefix="miga-bench-panel-"))
    try:
        if args.data:
            return bench(tmp, Path(args.data), Path(args.data).name, args.memory, bare=True,
                         append=False)
        short = folder(wide, args.stocks, args.short)
        bench(tmp, short, f"{args.stocks} x {args.short} days", args.memory, bare=True)
        shutil.rmtree(tmp / f"home-{args.stocks} x {args.short} days", ignore_errors=True)
        long = folder(wide, args.stocks, args.days)
        bench(tmp, long, f"{args.stocks} x {args.days} days", args.memory, bare=True)
        if args.layouts:
            layouts(tmp, long, args.memory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
