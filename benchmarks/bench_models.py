"""Forward + backward time per batch for every registered model (printed figures, no asserts).

Full grid (paper sizes; a GPU or an idle many-core CPU):
    python benchmarks/bench_models.py --n 300 1000 --d 158 626 --b 1 16 --device auto
Reduced grid (busy 2-core machine):
    python benchmarks/bench_models.py --n 300 --d 158 --b 1 --steps 3
Prints one row per (model, B, N, D): parameters, median ms per step, and MIGA-Conv's cost
relative to the `tcn` baseline at the same size (the budget is < 3x).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def step_time(model, x, mask, market, steps: int, warmup: int, sync) -> float:
    """Median seconds of one train-mode forward + backward."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        scores, aux = model(x, mask, market)
        loss = scores[mask].pow(2).mean() + 2e-3 * aux
        model.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    print(f"{'model':<12}{'params':>11}{'B':>4}{'N':>6}{'D':>5}{'ms/step':>10}{'vs tcn':>8}")

    for d in args.d:
        params = {name: sum(p.numel() for p in create_model(name, d, args.m).parameters())
                  for name in args.models}
        for b in args.b:
            for n in args.n:
                g = torch.Generator().manual_seed(0)
                x = torch.randn(b, n, args.t, d, generator=g).to(device)
                mask = torch.ones(b, n, dtype=torch.bool)
                mask[:, int(n * 0.95):] = False           # ~5% padding, as on real days
                mask = mask.to(device)
                market = torch.randn(b, args.t, args.m, generator=g).to(device)
                times = {}
                for name in args.models:
                    torch.manual_seed(0)
                    model = create_model(name, d, args.m).to(device).train()
                    times[name] = step_time(model, x, mask, market, args.steps, args.warmup, sync)
                    rel = f"{times[name] / times['tcn']:.2f}x" if "tcn" in times else ""
                    print(f"{name:<12}{params[name]:>11,}{b:>4}{n:>6}{d:>5}{times[name] * 1e3:>10.1f}{rel:>8}",
                          flush=True)
                    del model


if __name__ == "__main__":
    main()
