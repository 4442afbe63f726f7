"""The training engine: seconds per cell-epoch when K cells train as one stack, and the grid.

    .venv/bin/python benchmarks/bench_stack.py [--home DIR] [--models a,b] [--ks 1,3,9,27]
        [--days 16] [--separate 3] [--device auto] [--threads N]
    .venv/bin/python benchmarks/bench_stack.py --pairs 3 [--separate 3] [--days 16] [--models ...]
    .venv/bin/python benchmarks/bench_stack.py --grid [--epochs 60] [--patience 10] [--days 0]

Store: the shared data's tensor store (default config) when it is built in the home folder
(`miga ingest --data ../shared/data && miga features && miga store`), else a synthetic store of
the same csi300 shape (300 members a day, 158 features, 24 market features, T = 5), and says so.

Per model, K cells on csi300 (seeds 0..K-1) at B = 1 day per cell per step, the paper's
protocol: one `fit_stack` of 2 epochs over the first --days training days (4 validation days);
the second epoch's training pass (`train_seconds`: gather, forward, backward, clip, Adam; the
first epoch holds the warm-up and, on a GPU, the graph capture) divided by K and scaled to the
full training segment = seconds per cell-epoch. On a GPU each K is measured eager and
graph-captured, float32 and bf16 autocast; on a CPU (no graphs, no bf16 autocast) eager float32,
and beside it --separate cells trained one after another as K separate runs (same days), so the
ratio stacked / separate is taken side by side in one run. Prints figures; asserts nothing.

--grid: the paper's grid (every model x csi300/csi500/csi1000 x 3 seeds) packed into stacks by
`pipeline.grid.pack_stacks` ([engine] stack_size), each trained with `fit_stack` to --epochs
with early stopping (--patience) on the validation IC, stacks one after another; prints the
wall time and, on a GPU, the mean and quartiles of the GPU's utilisation sampled by nvidia-smi
every 0.5 s. --days 0 = the whole train segment (the real grid); evaluation and MLflow logging
are not included (they run once per cell, not per epoch).

Measured 2026-12-04 on the 2-core CPU machine (no GPU in that session; every GPU figure is
still to be measured: `bash benchmarks/gpu_checks.sh`), the shared-data store (csi300, 158
Alpha158 features, 63 market features), default model sizes, `--ks 1,3,9 --days 8`, nothing
else running. Seconds per cell-epoch (1938 training days), eager float32:

    model        K=1     K=3     K=9   separate x3   stack/sep wall (cpu)
    lstm        129.2    89.3    62.1       90.6      0.98 (0.96)
    mamba       307.3   324.8   347.6      427.3      0.76 (0.75)
    master      751.7   781.7   526.9      517.5      1.51 (1.46)
    miga-attn   313.1   387.7   345.8      339.8      1.14 (1.04)
    miga-conv   159.8   161.9   127.7      162.7      0.99 (0.96)
    miga-rec    130.9   121.1   104.1      132.8      0.91 (0.89)
    moderntcn  1046.5  1232.2  1528.4     1023.3      1.20 (1.20)
    tcn         104.4   100.7    92.5      124.5      0.81 (0.79)
    transformer 306.1   343.7   327.8      275.6      1.25 (1.13)

K=1 and "separate" are the same computation (a stack of one runs its module without vmap),
so their gap is this machine's noise at 8 days a measurement: 2-45%. The alternated pairs
(`--pairs 3 --separate 3 --days 12`) below are the steadier reading of stack / separate.

    model       median   the three pairs, wall (process CPU)
    miga-conv    1.07    1.54 (1.31), 1.07 (1.05), 0.74 (0.73)
    tcn          0.94    0.94 (0.93), 0.81 (0.78), 1.00 (0.97)
    master       1.13    1.13 (1.09), 1.04 (0.99), 1.20 (1.15)
    moderntcn    1.25    1.48 (1.46), 1.23 (1.21), 1.25 (1.23)
    miga-attn    0.99    0.94 (0.86), 0.99 (0.93), 1.11 (1.03)

So on a CPU a stack costs about what separate runs cost (0.94-1.13 median, within this
machine's pair-to-pair spread), except ModernTCN (1.25: its activations outgrow the caches).
The CPU target (a stack no dearer per cell than separate runs) is met within noise for most
models and not for moderntcn (nor master at 1.13): on a CPU, `[engine] stack_size = 1` is the
setting for those two.

Where the time goes on a CPU (torch.profiler, one K = 3 step, 300 stocks): the models' own
matmuls and convolutions; a stack does the same arithmetic, so it can only gain the per-op
overhead (launch-bound models: lstm, miga-rec, tcn, mamba at K = 9 are 0.5-0.9x of K = 1),
and it loses where a cell's activations already exceed the caches (moderntcn: K x 300 x 1024
x 5 floats per layer; K = 9 is 1.5x K = 1 per cell). Fixed on the way: vmap expanded
MASTER's pooling weight once per stock (a 236 MB copy per step at K = 3) and ModernTCN's
step was mostly dropout hashing (now one mix per element, the position part cached).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import SHARED_TRAIN_DAYS, synthetic_store  # noqa: E402

D, M = 158, 24


def _store(args, cfg):
    from pipeline.settings import Settings

    try:
        from pipeline.store import current_store

        store = current_store(Settings.from_env(args.home), cfg)
        if "csi300" not in store.members:
            raise LookupError("no csi300 in the store")
        return store, f"shared data store {store.fingerprint} ({store.root})", None
    except Exception as e:  # not built here: same shapes, synthetic values
        tmp = tempfile.TemporaryDirectory()
        train_days = SHARED_TRAIN_DAYS if args.grid else args.days + 8   # + window and embargo
        store = synthetic_store(Path(tmp.name) / "s", days=train_days + 260, train_days=train_days)
        return store, (f"SYNTHETIC store of csi300 shape (300 members/day, {D} features, T=5): the "
                       f"shared-data store is not built ({type(e).__name__}: {e})"), tmp


def _models(name, K, store, cfg, seed0=0):
    import torch

    from pipeline.models import create_model

    out = []
    for k in range(K):
        torch.manual_seed(seed0 + k)
        out.append(create_model(name, d_feat=len(store.feature_names), d_market=len(store.market_names),
                                **cfg.model_overrides(name)))
    return out


def stack_seconds(store, name, K, days, valid, cfg, device, graph, bf16, stocksets=("csi300",),
                  seed0=0):
    """(train seconds of the second epoch, its process CPU seconds) of a stack of K cells,
    seeds seed0..seed0+K-1."""
    from pipeline.train import StackCell, fit_stack

    tc = replace(cfg.train, batch_days=1, max_epochs=2, patience=10, device=str(device), bf16=bf16)
    cells = [StackCell(stocksets[k % len(stocksets)], seed0 + k, tc, None, train_days=days,
                       valid_days=valid) for k in range(K)]
    c0 = time.process_time()
    res = fit_stack(_models(name, K, store, cfg, seed0), cells, store, progress=False, device=device,
                    graph=graph, deterministic=False)
    cpu = time.process_time() - c0
    h = res[0].history
    # CPU seconds of the second epoch's training: the whole call's CPU time in the ratio of the
    # two epochs' wall times (process_time has no per-epoch split)
    share = h[1]["train_seconds"] / max(sum(r["epoch_seconds"] for r in h), 1e-9)
    return h[1]["train_seconds"], cpu * share


def separate_seconds(store, name, K, days, valid, cfg, device):
    """The same K cells as K separate runs, one after another: summed second-epoch seconds."""
    wall = cpu = 0.0
    for k in range(K):
        w, c = stack_seconds(store, name, 1, days, valid, cfg, device, False, False, seed0=k)
        wall, cpu = wall + w, cpu + c
    return wall, cpu


class GpuSampler:
    """nvidia-smi utilisation.gpu every 0.5 s in a thread (None values when it is absent)."""

    def __init__(self):
        self.values: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5).stdout.split()
                if out:
                    self.values.append(float(out[0]))
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=10)


def bench_stacks(args, store, cfg, device, full_days):
    train = store.segment_days("train")
    members = store.members["csi300"]
    train = train[members[train].any(1)]
    days = train[: args.days]
    valid = store.segment_days("valid")[:4]
    scale = full_days / len(days)
    ks = [int(k) for k in args.ks.split(",")]
    modes = ([(False, False), (True, False), (False, True), (True, True)] if device.type == "cuda"
             else [(False, False)])
    print(f"{len(days)} training days per measurement, scaled x{scale:.1f} to a full epoch "
          f"({full_days} days); B = 1 per cell; s/cell-epoch = stack epoch / K\n")
    cols = [f"K={k} " + ("graph" if g else "eager") + (" bf16" if b else " fp32")
            for g, b in modes for k in ks]
    print(f"{'model':<12}" + "".join(f"{c:>18}" for c in cols)
          + ("" if device.type == "cuda" else f"{'separate x' + str(args.separate):>16}{'stack/sep (cpu)':>17}"))
    for name in args.models.split(","):
        t0 = time.perf_counter()
        stack_seconds(store, name, 1, days[:2], valid[:1], cfg, device, False, False)  # warm-up
        row, cpu_k = [], {}
        for graph, bf16 in modes:
            for K in ks:
                try:
                    w, c = stack_seconds(store, name, K, days, valid, cfg, device, graph, bf16)
                    row.append(f"{w / K * scale:>18.3f}")
                    cpu_k[K] = (w, c)
                except Exception as e:  # e.g. out of memory at a large K: say so, go on
                    row.append(f"{type(e).__name__:>18}")
                    if device.type == "cuda":
                        import torch

                        torch.cuda.empty_cache()
        tail = ""
        if device.type != "cuda" and args.separate in cpu_k:
            w_s, c_s = separate_seconds(store, name, args.separate, days, valid, cfg, device)
            w_k, c_k = cpu_k[args.separate]
            tail = f"{w_s / args.separate * scale:>16.3f}{w_k / w_s:>9.2f} ({c_k / c_s:.2f})"
        print(f"{name:<12}" + "".join(row) + tail + f"   [{time.perf_counter() - t0:.0f} s]", flush=True)
    print("\nfigures: seconds per cell-epoch (wall); separate x K: the same K cells as K runs one "
          "after another;\nstack/sep: wall ratio of the stack to the separate runs (process CPU "
          "time ratio in brackets);\n< 1 = the stack is cheaper per cell.")


def bench_pairs(args, store, cfg, device):
    """CPU: a stack of --separate cells against the same cells as separate runs, measured in
    alternation --pairs times (the machine's drift hits both sides alike)."""
    train = store.segment_days("train")
    train = train[store.members["csi300"][train].any(1)]
    days, valid, K = train[: args.days], store.segment_days("valid")[:4], args.separate
    print(f"{len(days)} training days; a stack of {K} vs {K} separate runs, alternated "
          f"{args.pairs} times; wall ratio stack / separate per pair (process CPU ratio)")
    for name in args.models.split(","):
        stack_seconds(store, name, 1, days[:2], valid[:1], cfg, device, False, False)  # warm-up
        pairs = []
        for _ in range(args.pairs):
            w_k, c_k = stack_seconds(store, name, K, days, valid, cfg, device, False, False)
            w_s, c_s = separate_seconds(store, name, K, days, valid, cfg, device)
            pairs.append((w_k / w_s, c_k / c_s))
        walls = sorted(p[0] for p in pairs)
        print(f"{name:<12} median {statistics.median(walls):.2f}  pairs "
              + ", ".join(f"{w:.2f} ({c:.2f})" for w, c in pairs), flush=True)


def bench_grid(args, store, cfg, device):
    from pipeline.grid import grid_cells, plan_stacks
    from pipeline.train import StackCell, fit_stack

    sets = [s for s in ("csi300", "csi500", "csi1000") if s in store.members] or ["csi300"]
    cells = grid_cells(cfg, args.models.split(","), sets, [0, 1, 2])
    stacks = plan_stacks(cfg, cells, store)
    tc = replace(cfg.train, batch_days=1, max_epochs=args.epochs, patience=args.patience,
                 device=str(device))
    train = store.segment_days("train")
    days = train if args.days == 0 else train[: args.days]
    print(f"grid: {len(cells)} cells in {len(stacks)} stacks (stack_size {cfg.engine.stack_size}); "
          f"{len(days)} training days, up to {args.epochs} epochs, patience {args.patience}")
    t0 = time.perf_counter()
    epochs = 0
    with GpuSampler() as gpu:
        for stack in stacks:
            t = time.perf_counter()
            cs = [StackCell(c.stockset, c.seed, tc, None, train_days=days) for c in stack]
            models = []
            for c in stack:
                models += _models(c.model, 1, store, cfg, c.seed)
            res = fit_stack(models, cs, store, progress=False, device=device,
                            graph=cfg.engine.cuda_graph, deterministic=cfg.engine.deterministic)
            epochs += sum(r.epochs_run for r in res)
            print(f"  {stack[0].model:<12} x{len(stack)}  {time.perf_counter() - t:8.1f} s  "
                  f"epochs {[r.epochs_run for r in res]}", flush=True)
    wall = time.perf_counter() - t0
    print(f"grid wall time: {wall:.1f} s ({wall / 60:.1f} min), {epochs} cell-epochs")
    if gpu.values:
        q = statistics.quantiles(gpu.values, n=4)
        print(f"GPU utilisation: mean {statistics.mean(gpu.values):.0f}%, quartiles "
              f"{q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}% over {len(gpu.values)} samples")
    else:
        print("GPU utilisation: not sampled (no nvidia-smi)")


def main() -> None:
    import torch

    from pipeline.config import load_config
    from pipeline.models import MODELS
    from pipeline.train import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home")
    ap.add_argument("--config")
    ap.add_argument("--models", default=",".join(sorted(MODELS)))
    ap.add_argument("--ks", default="1,3,9,27", help="cells per stack to measure")
    ap.add_argument("--days", type=int, default=16, help="training days per measurement (--grid: 0 = all)")
    ap.add_argument("--separate", type=int, default=3,
                    help="on a CPU: also train this many cells as separate runs (0 = skip)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--grid", action="store_true", help="time the whole paper grid instead")
    ap.add_argument("--pairs", type=int, default=0,
                    help="CPU: only the stack / separate ratio, measured in N alternating pairs")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    device = resolve_device(args.device)
    store, source, tmp = _store(args, cfg)
    print(f"store: {source}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} torch threads)"
    print(f"device: {name}; torch {torch.__version__}")
    train = store.segment_days("train")
    full = SHARED_TRAIN_DAYS if tmp is not None else int(store.members["csi300"][train].any(1).sum())
    if args.grid:
        bench_grid(args, store, cfg, device)
    elif args.pairs:
        bench_pairs(args, store, cfg, device)
    else:
        bench_stacks(args, store, cfg, device, full)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
