"""Wall time of the quick synthetic run (the README's main command) and where it goes.

Runs the `miga` flow in-process on a fresh home folder, exactly as `miga demo` does, with
timers wrapped around the pipeline functions. "Model work" is training (`train.fit`) and
evaluation (`train.predict` wherever it is called, and `experiment.evaluate`: metrics and
backtest); everything else (Prefect, MLflow logging and model registration, plots, DuckDB,
parquet, the tensor store) is overhead. Target: overhead under 25% of the wall time.

    .venv/bin/python benchmarks/bench_pipeline.py [--config quick] [--epochs N] [--data DIR]
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TIMED = defaultdict(float)
COUNT = defaultdict(int)
_depth = threading.local()

# (module, attribute, bucket): model work is counted once even when calls nest.
PROBES = [
    ("pipeline.train", "fit", "model: train"),
    ("pipeline.train", "predict", "model: predict"),
    ("pipeline.experiment", "evaluate", "model: metrics+backtest"),
    ("pipeline.data.ingest", "ingest", "ingest+validate"),
    ("pipeline.data.validate", "validate_warehouse", "validate (full GX)"),
    ("pipeline.features.build", "build_features", "features+labels"),
    ("pipeline.store", "build_store", "tensor store"),
    ("pipeline.report", "build_report", "report"),
    ("pipeline.champion", "challenge", "champion/challenger"),
    ("pipeline.predict", "predict_next_day", "next-day predictions"),
    ("pipeline.experiment", "run_experiment", "grid cells (all)"),
]


def _wrap(mod, attr, bucket):
    fn = getattr(mod, attr)

    @functools.wraps(fn)
    def timed(*a, **kw):
        model = bucket.startswith("model:")
        nested = model and getattr(_depth, "model", 0) > 0
        if model:
            _depth.model = getattr(_depth, "model", 0) + 1
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            if model:
                _depth.model -= 1
            if not nested:
                TIMED[bucket] += time.perf_counter() - t
                COUNT[bucket] += 1

    setattr(mod, attr, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quick")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--data")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="miga-bench-"))
    os.environ["MIGA_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    for mod, attr, bucket in PROBES:
        _wrap(importlib.import_module(mod), attr, bucket)

    from flows.miga import run_demo

    t0 = time.perf_counter()
    run_demo(data=args.data, config=args.config, home=str(home), epochs=args.epochs)
    wall = time.perf_counter() - t0

    model = sum(v for k, v in TIMED.items() if k.startswith("model:"))
    print("\n=== bench_pipeline: the quick synthetic run ===")
    print(f"config {args.config}, home {home}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'step':<28}{'calls':>6}{'seconds':>10}{'share':>8}")
    for _, _, bucket in PROBES:
        if bucket in TIMED:
            print(f"{bucket:<28}{COUNT[bucket]:>6}{TIMED[bucket]:>10.1f}{TIMED[bucket] / wall:>8.1%}")
    print(f"{'wall time':<28}{'':>6}{wall:>10.1f}")
    print(f"model training + evaluation: {model:.1f} s ({model / wall:.1%})")
    print(f"outside it (Prefect, MLflow, I/O, data steps): {wall - model:.1f} s "
          f"({(wall - model) / wall:.1%}; target < 25%)")


if __name__ == "__main__":
    main()
