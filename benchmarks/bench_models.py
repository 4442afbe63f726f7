"""Forward + backward time per batch for every registered model (printed figures, no asserts).

Full grid (paper sizes; a GPU or an idle many-core CPU):
    python benchmarks/bench_models.py --n 300 1000 --d 158 626 --b 1 16 --device auto
Reduced grids (busy 2-core machine; one thread so CPU time is a steady measure):
    python benchmarks/bench_models.py --n 300 1000 --d 158 --b 1 --steps 3 --threads 1
    python benchmarks/bench_models.py --models tcn miga-conv miga-rec miga-attn \
        --n 300 1000 --d 158 626 --b 16 --steps 3 --threads 1
Prints one row per (model, B, N, D): parameters, median wall and process-CPU ms per step, and
each model's cost relative to the `tcn` baseline at the same size (MIGA-Conv's budget: < 3x).

Figures behind design choices in the model code (measured in earlier sessions on the 2-core
CPU machine; moved here from code comments, which keep only the reasons):
- pipeline/models/miga.py, MoEConfig: at expert size 16 / 4 heads MIGA-Conv's step cost ~3.4x
  the TCN's on CPU (B=16, N=1000, D=158); at 8 / 2 heads (the default) ~2.1x (budget < 3x).
- pipeline/models/layers.py, the causal convolution that skips padding-only taps: the same
  output for ~20x less work than Qlib's pad-both-sides-and-chop at T = 5, dilation up to 16.
- pipeline/models/moderntcn.py: the depthwise conv as one banded-matrix einsum ~5x faster on
  CPU than nn.Conv1d(groups=K); the grouped linear pair as einsums ~2x faster than grouped
  1x1 convolutions over a length-5 axis.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_step(model, x, mask, market, sync) -> tuple[float, float]:
    """(wall s, process CPU s) of one train-mode forward + backward."""
    t0, c0 = time.perf_counter(), time.process_time()
    scores, aux = model(x, mask, market)
    loss = scores[mask].pow(2).mean() + 2e-3 * aux
    model.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    import torch

    from pipeline.models import MODELS, create_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--n", nargs="+", type=int, default=[300, 1000], help="stocks per day")
    ap.add_argument("--d", nargs="+", type=int, default=[158, 626], help="features")
    ap.add_argument("--b", nargs="+", type=int, default=[1, 16], help="days per batch")
    ap.add_argument("--t", type=int, default=5, help="window (days)")
    ap.add_argument("--m", type=int, default=21, help="market features (MASTER)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    print(f"# torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"T={args.t}, steps={args.steps} (median), warmup={args.warmup}")
    print(f"{'model':<12}{'params':>11}{'B':>4}{'N':>6}{'D':>5}{'wall ms':>10}{'cpu ms':>10}"
          f"{'wall/tcn':>10}{'cpu/tcn':>9}")
    # Models run interleaved, one step each per round, and we report medians of both wall and
    # process CPU time: on a shared machine CPU time is the steadier figure for the ratios.
    names = sorted(args.models, key=lambda n: n != "tcn")
    for d in args.d:
        for b in args.b:
            for n in args.n:
                g = torch.Generator().manual_seed(0)
                x = torch.randn(b, n, args.t, d, generator=g).to(device)
                mask = torch.ones(b, n, dtype=torch.bool)
                mask[:, int(n * 0.95):] = False           # ~5% padding, as on real days
                mask = mask.to(device)
                market = torch.randn(b, args.t, args.m, generator=g).to(device)
                models = {}
                for name in names:
                    torch.manual_seed(0)
                    models[name] = create_model(name, d, args.m).to(device).train()
                runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
                for r in range(args.warmup + args.steps):
                    for name in names:
                        t = one_step(models[name], x, mask, market, sync)
                        if r >= args.warmup:
                            runs[name].append(t)
                wall = {k: statistics.median(t[0] for t in v) for k, v in runs.items()}
                cpu = {k: statistics.median(t[1] for t in v) for k, v in runs.items()}
                for name in names:
                    params = sum(p.numel() for p in models[name].parameters())
                    rel = (f"{wall[name] / wall['tcn']:>9.2f}x{cpu[name] / cpu['tcn']:>8.2f}x"
                           if "tcn" in wall else "")
                    print(f"{name:<12}{params:>11,}{b:>4}{n:>6}{d:>5}{wall[name] * 1e3:>10.1f}"
                          f"{cpu[name] * 1e3:>10.1f}{rel}", flush=True)
                del models


if __name__ == "__main__":
    main()
