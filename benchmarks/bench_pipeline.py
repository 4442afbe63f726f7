"""Wall time of the quick synthetic run (the README's main command) and where it goes.

Runs the `miga` flow in-process on a fresh home folder, exactly as `miga demo` does, with
timers wrapped around the pipeline functions as their modules are imported (so the run
imports what it needs when `miga demo` would). "Model work" is training (`train.fit`) and
evaluation (`train.score_loader` / `score_loader_with_usage` wherever called, `train.expert_usage`: MIGA's
routing over the other stock sets' test days, and `experiment.evaluate`: metrics and backtest);
everything else (Python imports, the Prefect server and task bookkeeping, MLflow logging and
model registration, plots, DuckDB, parquet, the tensor store) is overhead. The wall time is
the whole command's, from before the first import. Target: overhead under 25% of it.

    .venv/bin/python benchmarks/bench_pipeline.py [--config quick] [--epochs N] [--data DIR]

Measured 2026-11-24, idle 2-core machine (load 1.8-2.0), three runs: wall 101.5 / 105.3 /
102.5 s; model training + evaluation 77.7 / 77.2 / 77.7%, so overhead 22.3 / 22.8 / 22.3%
(22.7 / 24.0 / 22.9 s). MIGA's expert-usage pass (1.2-1.3 s, counted as evaluation) as
overhead instead: 23.5-24.0%. The rest: temporary Prefect API ready ~8.5 s on a fresh home
(~6 s of it Prefect's database migrations), features+labels 3.0 s, tensor store 2.1 s, the
cells' MLflow logging and plots ~1.1 s per cell, imports 1.1 s, champion 0.7 s. The same
benchmark before the demo started its own server and the per-cell cuts: 25.4%.

Figures behind design choices in the flow and plot code (earlier sessions, 2-core CPU;
moved here from code comments):
- flows/temporary_api.py: the temporary Prefect API spends ~9 s getting ready on a fresh home
  (mostly its database migrations); the imports the flow's tasks need (torch, MLflow, DuckDB,
  matplotlib) take ~2-3 s and overlap it; importing Prefect's server package in-process would
  cost ~1.6 s more. Block-type registration is ~1 s of the server's start.
- pipeline/plots.py: tight_layout costs about a third of a plot's time; one LineCollection for
  the daily IC bars draws ~5x faster than a bar per day. Since the Qlib-style report panels, IC
  histogram and monthly heatmap, and expert grids per stock set (2026-12-07), the four plots of
  a cell take ~1.2-1.8 s on the loaded 2-core box, against 0.45-0.7 s for the earlier four
  plots timed alongside (the figures above predate them).
"""
from __future__ import annotations

import time

T_PROCESS = time.perf_counter()   # before any import: the command's wall time includes them

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TIMED = defaultdict(float)
COUNT = defaultdict(int)
_depth = threading.local()

# (module, attribute, bucket): model work is counted once even when calls nest.
PROBES = [
    ("pipeline.train", "fit", "model: train"),
    ("pipeline.train", "score_loader", "model: predict"),
    ("pipeline.train", "score_loader_with_usage", "model: predict"),
    ("pipeline.cell", "evaluate", "model: metrics+backtest"),
    # MIGA's expert usage by stock set: a forward pass of the model over the test days of
    # the other stock sets (the paper's usage analysis); inference, so model evaluation
    ("pipeline.train", "expert_usage", "model: expert usage"),
    ("pipeline.data.ingest", "ingest", "ingest+validate"),
    ("pipeline.data.validate", "validate_warehouse", "validate (full GX)"),
    ("pipeline.features.build", "build_features", "features+labels"),
    ("pipeline.store.build", "build_store", "tensor store"),
    ("pipeline.report", "build_report", "report"),
    ("pipeline.champion", "challenge", "champion/challenger"),
    ("pipeline.next_day", "predict_next_day", "next-day predictions"),
    ("pipeline.cell", "run_cell", "grid cells (all)"),
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


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Wrap the probed functions as their modules are first imported, so that the run imports
    everything when `miga demo` would (some imports overlap the Prefect server's start-up)."""

    def __init__(self):
        self.pending = defaultdict(list)
        for mod, attr, bucket in PROBES:
            self.pending[mod].append((attr, bucket))

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        run_module, probes = spec.loader.exec_module, self.pending.pop(name)

        def exec_module(module):
            run_module(module)
            for attr, bucket in probes:
                _wrap(module, attr, bucket)

        spec.loader.exec_module = exec_module
        return spec


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
    finder = _PatchOnImport()
    sys.meta_path.insert(0, finder)

    from flows.miga import run_demo

    t0 = time.perf_counter()
    run_demo(data=args.data, config=args.config, home=str(home), epochs=args.epochs)
    flow_wall = time.perf_counter() - t0
    wall = time.perf_counter() - T_PROCESS      # as `miga demo` is waited for: imports included

    unprobed = [m for m in finder.pending if m in sys.modules]
    if unprobed:
        raise SystemExit(f"bench_pipeline: imported before the probes were in place: {unprobed}")
    model = sum(v for k, v in TIMED.items() if k.startswith("model:"))
    print("\n=== bench_pipeline: the quick synthetic run ===")
    print(f"config {args.config}, home {home}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'step':<28}{'calls':>6}{'seconds':>10}{'share':>8}")
    for bucket in dict.fromkeys(b for _, _, b in PROBES):
        if bucket in TIMED:
            print(f"{bucket:<28}{COUNT[bucket]:>6}{TIMED[bucket]:>10.1f}{TIMED[bucket] / wall:>8.1%}")
    print(f"{'imports before the run':<28}{'':>6}{t0 - T_PROCESS:>10.1f}{(t0 - T_PROCESS) / wall:>8.1%}")
    print(f"{'run_demo (flow + server)':<28}{'':>6}{flow_wall:>10.1f}")
    print(f"{'wall time (whole command)':<28}{'':>6}{wall:>10.1f}")
    print(f"model training + evaluation: {model:.1f} s ({model / wall:.1%})")
    print(f"outside it (Prefect, MLflow, I/O, data steps): {wall - model:.1f} s "
          f"({(wall - model) / wall:.1%}; target < 25%)")


if __name__ == "__main__":
    main()
