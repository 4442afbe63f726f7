"""Try the mistakes a new user makes, each as a real `miga` process, and count the clean refusals.

    .venv/bin/python benchmarks/mistakes.py [--keep DIR]

A case passes when the command exits 2 (130 for Ctrl-C), prints no traceback, ends with one
error line under 1,000 characters, and leaves the warehouse tables and the MLflow runs exactly
as they were. Prints one row per case and the count. Builds its own small synthetic home
(60 stocks, 750 days, the quick config's store); no shared data needed.

Measured 2026-12-07 on the 2-core CPU box: 57 of 57 refused cleanly, 106 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MIGA = str(Path(sys.executable).with_name("miga"))
TABLES = ("prices", "membership", "index_prices")


def run(home: Path, *argv, env=None, sigint_after: float | None = None):
    """(exit code, stderr) of `miga --home HOME ARGV`; Ctrl-C (SIGINT) after `sigint_after` s."""
    cmd = [MIGA, "--home", str(home), *map(str, argv)]
    e = {**os.environ, **(env or {})}
    if sigint_after is None:
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)
        return p.returncode, p.stderr
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=e)
    time.sleep(sigint_after)
    p.send_signal(signal.SIGINT)
    return p.wait(timeout=120), p.stderr.read()


def state(home: Path) -> tuple:
    """Row counts and a checksum of each warehouse table, and the MLflow runs' ids and states."""
    out = []
    wh = home / "warehouse.duckdb"
    if wh.exists():
        con = duckdb.connect(str(wh), read_only=True)
        for t in TABLES:
            out.append(con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {t}").fetchall())
        con.close()
    if (home / "mlflow.db").exists():
        import sqlite3

        con = sqlite3.connect(home / "mlflow.db")
        out.append(sorted(con.execute("SELECT run_uuid, status FROM runs").fetchall()))
        con.close()
    return tuple(map(str, out))


def verdict(rc: int, err: str, want_rc: int = 2) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        return "traceback"
    if rc != want_rc:
        return f"exit {rc}"
    if not lines:
        return "silent"
    last = lines[-1]
    if not (last.startswith(("error:", "miga", "interrupted:"))):
        return f"last line: {last[:80]}"
    if len(last) > 1000:
        return f"{len(last)} characters"
    return "ok"


def data_variant(src: Path, root: Path, name: str, edit) -> Path:
    out = root / name
    shutil.copytree(src, out)
    edit(out)
    return out


def _edit_daily(fn):
    def edit(d: Path):
        df = pd.read_parquet(d / "daily.parquet")
        fn(df).to_parquet(d / "daily.parquet", index=False)
    return edit


def _edit_membership(fn):
    def edit(d: Path):
        df = pd.read_parquet(d / "membership.parquet")
        fn(df).to_parquet(d / "membership.parquet", index=False)
    return edit


def _first_row(col: str, value):
    def fn(df):
        df = df.copy()
        if df[col].dtype.kind == "f" and isinstance(value, str):
            df[col] = df[col].astype(object)
        df.loc[df.index[5], col] = value
        return df
    return fn


def _overlap(df):
    row = df.iloc[[0]].copy()
    row["start_date"] = pd.Timestamp(df.iloc[0]["start_date"]) + pd.Timedelta(days=3)
    row["end_date"] = pd.Timestamp(df.iloc[0]["start_date"]) + pd.Timedelta(days=30)
    if pd.isna(df.iloc[0]["end_date"]) or pd.Timestamp(df.iloc[0]["end_date"]) > row["end_date"].iloc[0]:
        return pd.concat([df, row], ignore_index=True)
    return pd.concat([df, row], ignore_index=True)


def _wide_features(n_cols: int, bad: bool):
    def edit(d: Path):
        import numpy as np

        daily = pd.read_parquet(d / "daily.parquet", columns=["date", "instrument"])
        x = np.random.default_rng(0).normal(size=(len(daily), n_cols)).astype("float32")
        if bad:
            x[::97, 3::5] = np.nan
        f = pd.concat([daily.reset_index(drop=True),
                       pd.DataFrame(x, columns=[f"f{i:04d}" for i in range(n_cols)])], axis=1)
        f.to_parquet(d / "features.parquet", index=False)
    return edit


def _dup_features(d: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    daily = pd.read_parquet(d / "daily.parquet", columns=["date", "instrument"])
    t = pa.table([pa.array(daily["date"]), pa.array(daily["instrument"]),
                  pa.array([1.0] * len(daily)), pa.array([2.0] * len(daily))],
                 names=["date", "instrument", "f0001", "f0001"])
    pq.write_table(t, d / "features.parquet")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="miga-mistakes-"))
    root.mkdir(parents=True, exist_ok=True)
    home, data = root / "home", root / "data"
    t0 = time.perf_counter()
    if not data.exists():
        subprocess.run([MIGA, "--home", str(home), "synth", "--out", str(data), "--stocks", "60",
                        "--days", "750", "--seed", "3"], check=True, capture_output=True)
    for step in (("ingest", "--data", data), ("store", "--config", "quick")):
        subprocess.run([MIGA, "--home", str(home), *map(str, step)], check=True, capture_output=True)

    cfgs = root / "configs"
    cfgs.mkdir(exist_ok=True)
    quick = (ROOT / "configs" / "quick.toml").read_text()

    def cfg(name: str, text: str) -> str:
        p = cfgs / f"{name}.toml"
        p.write_text(text)
        return str(p)

    variants = root / "variants"
    shutil.rmtree(variants, ignore_errors=True)
    variants.mkdir()
    afile = root / "afile"
    afile.write_text("not a folder")
    (root / "empty").mkdir(exist_ok=True)
    # A folder whose name is a glob pattern, beside a sibling it would match.
    star = variants / "d*"
    star.mkdir()
    shutil.copytree(data, variants / "d-sibling")
    trunc = data_variant(data, variants, "truncated", lambda d: (d / "daily.parquet").write_bytes(
        (d / "daily.parquet").read_bytes()[:5000]))
    fresh = root / "fresh-home"

    cases = [
        # (what, argv, env, home, expected rc, sigint_after)
        ("train --epochs 0", ["train", "--model", "tcn", "--config", "quick", "--epochs", "0"]),
        ("train --epochs -3", ["train", "--model", "tcn", "--epochs", "-3"]),
        ("train --epochs many", ["train", "--model", "tcn", "--epochs", "many"]),
        ("train --batch-days -1", ["train", "--model", "tcn", "--batch-days", "-1"]),
        ("train --seed -1", ["train", "--model", "tcn", "--seed", "-1"]),
        ("train --stack-size 0", ["train", "--model", "tcn", "--stack-size", "0"]),
        ("train --device cuda (no GPU)", ["train", "--model", "tcn", "--config", "quick", "--device", "cuda"]),
        ("train --device tpu", ["train", "--model", "tcn", "--device", "tpu"]),
        ("train --device cuda:7", ["train", "--model", "tcn", "--config", "quick", "--device", "cuda:7"]),
        ("train --model nosuch", ["train", "--model", "nosuch"]),
        ("train --stockset nosuch", ["train", "--model", "tcn", "--config", "quick", "--stockset", "nosuch"]),
        ("train --stockset csi500 (not in this store)", ["train", "--model", "tcn", "--config", "quick", "--stockset", "csi500"]),
        ("train without a store", ["train", "--model", "tcn", "--config", "quick"], {}, fresh),
        ("train before ingest: report", ["report"], {}, root / "fresh-home-2"),
        ("synth --stocks 0", ["synth", "--out", root / "s0", "--stocks", "0"]),
        ("synth --days -5", ["synth", "--out", root / "s1", "--days", "-5"]),
        ("synth --features -1", ["synth", "--out", root / "s2", "--features", "-1"]),
        ("demo --epochs 0", ["demo", "--epochs", "0"]),
        ("stack start --workers 0", ["stack", "start", "--workers", "0"]),
        ("--home is a file", ["validate"], {}, afile),
        ("--home cannot be written", ["validate"], {}, Path("/proc/miga-home")),
        ("MIGA_LOCK_WAIT=soon", ["validate"], {"MIGA_LOCK_WAIT": "soon"}),
        ("MIGA_LOCK_WAIT=-1", ["validate"], {"MIGA_LOCK_WAIT": "-1"}),
        ("config: not TOML", ["store", "--config", cfg("nottoml", "[train\nlr = 1\n")]),
        ("config: unknown key", ["store", "--config", cfg("key", "[train]\nlearning_rate = 1e-3\n")]),
        ("config: unknown section", ["store", "--config", cfg("section", "[trian]\nlr = 1e-3\n")]),
        ("config: lr = \"fast\"", ["store", "--config", cfg("lrfast", '[train]\nlr = "fast"\n')]),
        ("config: max_epochs = 1.5", ["store", "--config", cfg("epochs15", "[train]\nmax_epochs = 1.5\n")]),
        ("config: lr = -1", ["store", "--config", cfg("lrneg", "[train]\nlr = -1.0\n")]),
        ("config: patience = 0", ["store", "--config", cfg("pat0", "[train]\npatience = 0\n")]),
        ("config: segments out of order", ["store", "--config", cfg("order",
            '[segments]\ntrain = ["2018-01-01", "2018-12-31"]\nvalid = ["2017-01-01", "2017-06-30"]\n'
            'test = ["2019-01-01", "2019-06-30"]\n')]),
        ("config: malformed date", ["store", "--config", cfg("date",
            '[segments]\ntrain = ["2018-13-01", "2018-12-31"]\n')]),
        ("config: unknown preset", ["store", "--config", cfg("preset", '[segments]\npreset = "papr"\n')]),
        ("config: unknown model in [run]", ["store", "--config", cfg("runmodel", '[run]\nmodels = ["miga-cnv"]\n')]),
        ("config: unknown [models.x]", ["store", "--config", cfg("modelsec", '[models.tcnn]\nhidden = 4\n')]),
        ("config: unknown model setting", ["train", "--model", "tcn", "--config",
                                           cfg("modelkey", quick + "\n[models.tcn]\nnosuch_width = 3\n")]),
        ("config: model setting of a wrong type", ["train", "--model", "tcn", "--config",
                                                   cfg("modeltype", quick + '\n[models.tcn]\ndropout = "some"\n')]),
        ("config: file does not exist (path)", ["store", "--config", root / "nope.toml"]),
        ("config: name does not exist", ["store", "--config", "nope"]),
        ("ingest: folder does not exist", ["ingest", "--data", root / "nodata"]),
        ("ingest: a file, not a folder", ["ingest", "--data", afile]),
        ("ingest: empty folder", ["ingest", "--data", root / "empty"]),
        ("ingest: folder named d* (glob)", ["ingest", "--data", star]),
        ("ingest: truncated parquet", ["ingest", "--data", trunc]),
        ("ingest: close = 1e300", ["ingest", "--data", data_variant(data, variants, "huge",
                                                                   _edit_daily(_first_row("close", 1e300)))]),
        ("ingest: amount = 1e20", ["ingest", "--data", data_variant(data, variants, "amount",
                                                                   _edit_daily(_first_row("amount", 1e20)))]),
        ("ingest: close x100 for a day", ["ingest", "--data", data_variant(data, variants, "x100",
            _edit_daily(lambda df: df.assign(close=df["close"].where(df.index != 200, df["close"] * 100),
                                             high=df["high"].where(df.index != 200, df["high"] * 100))))]),
        ("ingest: high < low", ["ingest", "--data", data_variant(data, variants, "highlow",
                                                                 _edit_daily(_first_row("high", 0.001)))]),
        ("ingest: NaN close", ["ingest", "--data", data_variant(data, variants, "nanclose",
                                                               _edit_daily(_first_row("close", float("nan"))))]),
        ("ingest: string in a price column", ["ingest", "--data", data_variant(data, variants, "string",
            _edit_daily(lambda df: df.assign(close=df["close"].astype(str))))]),
        ("ingest: duplicate (date, instrument)", ["ingest", "--data", data_variant(data, variants, "dupkey",
            _edit_daily(lambda df: pd.concat([df, df.iloc[[10]]], ignore_index=True)))]),
        ("ingest: missing column", ["ingest", "--data", data_variant(data, variants, "nocol",
            _edit_daily(lambda df: df.drop(columns=["amount"])))]),
        ("ingest: overlapping membership", ["ingest", "--data", data_variant(data, variants, "overlap",
                                                                             _edit_membership(_overlap))]),
        ("ingest: duplicate feature columns", ["ingest", "--data", data_variant(data, variants, "dupfeat",
                                                                                _dup_features)]),
        ("ingest: 626 features, NaN in 125 columns", ["ingest", "--data", data_variant(
            data, variants, "wide", _wide_features(626, bad=True))]),
        ("ingest: Ctrl-C during a 626-feature ingest", ["ingest", "--data", data_variant(
            data, variants, "wide-ok", _wide_features(626, bad=False))], {}, None, 130, 2.5),
        ("ingest while another process writes (MIGA_LOCK_WAIT=0.5)", "HELD"),
    ]

    def log_line(n, what, v, dt, err):
        last = ([ln for ln in err.splitlines() if ln.strip()] or [""])[-1]
        print(f"{n:>3}  {'ok  ' if v == 'ok' else 'FAIL'}  {what:<48} {dt:5.1f} s  "
              f"{(last if v == 'ok' else v)[:110]}", flush=True)

    passed = 0
    for n, case in enumerate(cases, 1):
        defaults = (None, None, {}, None, 2, None)     # what, argv, env, home, exit code, Ctrl-C after
        what, argv, env, h, want, sig = tuple(case) + defaults[len(case):]
        if argv == "HELD":
            argv = None
        h = h or home
        before = state(home)
        t = time.perf_counter()
        if argv is None:         # a writer while another process holds the warehouse
            hold = subprocess.Popen([sys.executable, "-c", "import duckdb,sys,time; c=duckdb.connect(sys.argv[1]);"
                                     " print('held', flush=True); time.sleep(20)", str(home / "warehouse.duckdb")],
                                    stdout=subprocess.PIPE, text=True)
            hold.stdout.readline()
            rc, err = run(h, "ingest", "--data", data, env={"MIGA_LOCK_WAIT": "0.5"})
            hold.kill()
            hold.wait()
        else:
            rc, err = run(h, *argv, env=env, sigint_after=sig)
        dt = time.perf_counter() - t
        v = verdict(rc, err, want)
        if v == "ok" and state(home) != before:
            v = "the warehouse or MLflow changed"
        passed += v == "ok"
        log_line(n, what, v, dt, err)
    print(f"\n{passed} of {len(cases)} mistakes refused cleanly "
          f"({time.perf_counter() - t0:.0f} s; work folder {root})")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
