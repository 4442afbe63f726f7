"""GPU figures: the loader with the tensor store moved to the GPU, and training epochs.

    python benchmarks/bench_gpu.py [--models miga-conv,tcn,...] [--days 480] [--stocks 4202]

Needs CUDA (run it on a GPU worker). The store is synthetic with the shared data's shapes:
2674 days x --stocks stocks x 158 features, 24 market features, csi300 = 300 members a day,
train = the first 1940 days (2010-2017 of the shared data). Prints:
  - the loader (`DayLoader(device="cuda")`): seconds to move the store to the GPU, then
    csi300 stock-days per second delivered for B = 1 and B = 16 (the CPU path beside it);
  - per model, one training epoch (`pipeline.train.fit`: loading, forward, loss, backward,
    Adam step) over --days training days at B = 1 and B = 16, float32 and bf16 autocast,
    scaled to a full csi300 epoch (1940 days x 300 stocks).
The first `fit` of each setting is a warm-up (CUDA context, kernels, allocator) and not timed.

Measured 2026-11-24 on the device tool's NVIDIA H100 80GB (torch 2.11.0+cu130, 16 CPU threads),
`python3 benchmarks/bench_gpu.py --days 320`, two runs (lstm..miga-attn B=1, then the rest):
  store (2674 x 4202 x 158, 6.61 GiB) moved to the GPU in 3.2-4.4 s;
  loader csi300: B=1 538k-551k stock-days/s with the store on the GPU (848k-921k on the CPU
  path of the same machine: per-batch launches dominate), B=16 7.9-8.1M/s (0.94-1.31M CPU path).
  s/epoch (1940 days x 300 stocks), B=1 / B=16, float32 (bf16 autocast in brackets):
    miga-conv 33.7 / 5.30 (39.6 / 7.11)    miga-rec 23.5 / 1.31 (29.2 / 1.74)
    miga-attn 27.4 / 1.90 (39.5 / 14.97)   tcn 24.3 / 1.61 (24.3 / 1.59)
    transformer 22.2 / 1.28 (24.9 / 1.55)  moderntcn 24.2 / 7.61 (25.5 / 6.01)
    lstm 8.2 / 0.75 (12.4 / 0.95)          mamba 25.4 / 1.93 (32.6 / 2.00)
    master 13.2 / 1.38 (48.0 / 3.02)
  At B=1 a step is ~15-20 ms whatever the model: the GPU waits on Python and kernel launches
  (300 stocks x 158 features is tiny work), so B=16 is 7-18x faster per stock-day. bf16
  autocast is slower for these small models (casts, no large matmuls).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import synthetic_store  # noqa: E402

DAYS, TRAIN_DAYS, MEMBERS, D, M = 2674, 1940, 300, 158, 24


def loader_rate(store, device: str, batch_days: int, days: np.ndarray) -> float:
    import torch

    from pipeline.loader import DayLoader

    loader = DayLoader(store, "train", "csi300", batch_days=batch_days, device=device, days=days)
    n = 0
    for i, batch in enumerate(loader):          # one pass to warm up
        if i == 8:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in loader:
        n += int(batch.mask.sum())
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def epoch_seconds(store, name: str, batch_days: int, bf16: bool, days: np.ndarray,
                  device: str = "cuda") -> tuple[float, float]:
    import torch

    from pipeline.config import load_config
    from pipeline.loader import DayLoader
    from pipeline.models import create_model
    from pipeline.train import fit

    cfg = load_config(None)
    torch.manual_seed(0)
    model = create_model(name, d_feat=D, d_market=M, **cfg.model_overrides(name))
    tc = cfg.train.__class__(**{**cfg.train.__dict__, "batch_days": batch_days, "max_epochs": 1,
                                "device": device, "bf16": bf16})

    def loaders(train_days):
        return (DayLoader(store, "train", "csi300", batch_days=batch_days, shuffle=True,
                          days=train_days, device=device),
                DayLoader(store, "valid", "csi300", batch_days=16, device=device,
                          days=store.segment_days("valid")[:16]))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fit(model, *loaders(days[:4 * batch_days]), tc, progress=False, device=device)   # warm-up
    sync()
    res = fit(model, *loaders(days), tc, progress=False, device=device)
    sync()
    per_sd = res.train_seconds / res.train_stock_days
    return res.throughput, per_sd * TRAIN_DAYS * MEMBERS


def main() -> None:
    import torch

    from pipeline.models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(sorted(MODELS)))
    ap.add_argument("--days", type=int, default=480, help="training days timed per epoch figure")
    ap.add_argument("--stocks", type=int, default=4202, help="stocks in the synthetic store")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs CUDA")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; "
          f"{torch.get_num_threads()} CPU threads")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = synthetic_store(Path(tmp) / "s", DAYS, n_all=args.stocks, members=MEMBERS, d=D, m=M,
                                start="2010-01-04", train_days=TRAIN_DAYS, redraw_members=120)
        print(f"synthetic store {store.shape} built in {time.perf_counter() - t0:.1f} s "
              f"({store.features.nbytes / 2**30:.2f} GiB of features)")
        days = store.segment_days("train")

        from pipeline.loader import device_arrays
        t0 = time.perf_counter()
        on_gpu = device_arrays(store, torch.device("cuda")) is not None
        torch.cuda.synchronize()
        print(f"store moved to the GPU: {on_gpu}, {time.perf_counter() - t0:.1f} s")
        print("\nloader, csi300, T=5 (stock-days per second, one pass over the train days):")
        for b in (1, 16):
            gpu, cpu = loader_rate(store, "cuda", b, days), loader_rate(store, "cpu", b, days)
            print(f"  B={b:<2}  GPU store {gpu:>12,.0f}   CPU path {cpu:>12,.0f}", flush=True)

        sub = days[:args.days]
        print(f"\ntraining epoch, csi300 ({args.days} days timed, scaled to {TRAIN_DAYS} days x "
              f"{MEMBERS} stocks = one epoch of the shared data's train segment)")
        head = f"{'model':<12}{'B':>3}{'bf16':>6}{'stock-days/s':>14}{'s/epoch':>9}"
        print(head + "\n" + "-" * len(head))
        for name in args.models.split(","):
            for b in (1, 16):
                for bf16 in (False, True):
                    rate, sec = epoch_seconds(store, name, b, bf16, sub)
                    print(f"{name:<12}{b:>3}{str(bf16):>6}{rate:>14,.0f}{sec:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
