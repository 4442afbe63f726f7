"""One training loop for every model: `fit` (early stopping, checkpoints, resume), and scoring
with a trained model: `score_loader` (a loader's days), `score_days` (any days of a store).

The model contract (pipeline/models): `model(x (B,N,T,D), mask (B,N), market (B,T,M) | None)
-> (scores (B,N), aux scalar)`. Loaders yield `pipeline.loader.Batch`. Nothing here knows about
MLflow: per-epoch records go to the `on_epoch` callback.

Resume: after every epoch `last.pt` in `checkpoint_dir` holds the model, optimizer, RNG states,
the best state so far, the history and the early-stopping counter. `fit` called again with the
same directory continues after the last finished epoch and ends exactly as an uninterrupted
run would (train shuffling depends only on (seed, epoch); the torch RNG is restored).
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from pipeline.config import TrainConfig
from pipeline.evaluation.ic import ic_metrics
from pipeline.losses import total_loss

CHECKPOINT = "last.pt"


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)   # one record per epoch (see `fit`)
    best_epoch: int = 0                                  # 1-based; 0 = none better than -inf
    best_valid_ic: float = float("-inf")
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int = 0                                # epochs already done at start
    train_stock_days: int = 0                            # stock-days seen in the epochs run here
    train_seconds: float = 0.0                           # training phase (loading + steps), this call
    train_cpu_seconds: float = 0.0                       # the same in process CPU time (all threads)

    @property
    def throughput(self) -> float:
        """Training stock-days per second (batch loading + forward + backward + step)."""
        return self.train_stock_days / self.train_seconds if self.train_seconds else float("nan")


def seed_everything(seed: int) -> None:
    """Same seed -> same numbers on CPU (torch, numpy and Python RNGs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def _forward(model, batch, device: torch.device, bf16: bool):
    """Model scores (B, N) in float32 and its auxiliary loss, under bf16 autocast on GPU."""
    market = batch.market.to(device) if getattr(model, "needs_market", False) else None
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                        enabled=bf16 and device.type == "cuda"):
        scores, aux = model(batch.x.to(device), batch.mask.to(device), market)
    if not torch.is_tensor(aux):
        aux = torch.zeros((), device=device)
    return scores.float(), aux.float()


@torch.no_grad()
def _evaluate(model, loader, device, bf16=False, store=None):
    """Scores for every member of every day of `loader`, and mean expert usage (G, E) if routed."""
    model.eval()
    parts, usage, usage_n = [], None, 0
    for batch in loader:
        scores, _ = _forward(model, batch, device, bf16)
        m = batch.mask.cpu()                                              # (B, N)
        routing = getattr(model, "last_routing", None)
        if routing is not None:
            r = routing.float().cpu()[m]                                  # (members, G, E)
            usage = r.sum(0) if usage is None else usage + r.sum(0)
            usage_n += r.shape[0]
        b_idx = batch.day_idx.cpu()[:, None].expand_as(m)[m]
        parts.append((b_idx.numpy(), batch.inst_idx.cpu()[m].numpy(),
                      scores.cpu()[m].numpy(), batch.y.cpu()[m].numpy()))
    if parts:
        day, inst, score, label = (np.concatenate(p) for p in zip(*parts))
    else:
        day = inst = np.zeros(0, np.int64)
        score = label = np.zeros(0, np.float32)
    df = pd.DataFrame({"day_idx": day, "inst_idx": inst, "score": score, "label": label})
    if store is not None:
        df.insert(0, "date", pd.to_datetime(store.dates[day]))
        df.insert(1, "instrument", store.instruments[inst])
    else:
        df["date"] = df["day_idx"]
    mean_usage = (usage / max(usage_n, 1)).numpy() if usage is not None else None
    return df, mean_usage


def score_loader(model, loader, device: str | torch.device = "cpu", bf16: bool = False,
                 store=None) -> pd.DataFrame:
    """The model's scores on every day of `loader`: one row per (day, member) with day_idx,
    inst_idx, score, label (NaN = no label). With `store`, also `date` and `instrument` (first
    columns).
    """
    return score_loader_with_usage(model, loader, device, bf16, store)[0]


def score_loader_with_usage(model, loader, device: str | torch.device = "cpu", bf16: bool = False,
                            store=None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """`score_loader`, plus the mean routing weight per expert (G, E) over the same members (None
    if the model does not route): one pass gives a MIGA run its test scores and expert usage."""
    return _evaluate(model, loader, torch.device(device), bf16, store)


def score_days(model, store, stockset: str, days, device="cpu", batch_days: int = 16) -> pd.DataFrame:
    """Scores of `model` for the members of `stockset` on the given store day indices (the
    champion's comparison window, the next-day predictions).

    Returns date, instrument, score, label (NaN where the label is not known yet).
    """
    from pipeline.loader import DayLoader

    loader = DayLoader(store, "test", stockset, batch_days=batch_days, device=device,
                       days=np.asarray(days, dtype=np.int64))
    df = score_loader(model.to(device), loader, device, store=store)
    return df[["date", "instrument", "score", "label"]]


def expert_usage(model, loader, device: str | torch.device = "cpu") -> np.ndarray | None:
    """Mean routing weight per expert (G, E) over the loader's members; None if not routed."""
    return _evaluate(model, loader, torch.device(device))[1]


def usage_entropy(usage: np.ndarray) -> float:
    """Entropy (nats) of expert usage normalised to a distribution: log(G*E) = perfectly even."""
    p = np.asarray(usage, dtype=np.float64).ravel()
    p = p / p.sum() if p.sum() > 0 else p
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)      # atomic: a kill mid-write leaves the previous checkpoint


def fit(model: torch.nn.Module, train_loader, valid_loader, cfg: TrainConfig, *, seed: int = 0,
        checkpoint_dir: str | Path | None = None, on_epoch: Callable[[dict], None] | None = None,
        progress: bool = True, device: str | torch.device | None = None) -> FitResult:
    """Train `model` in place; the best epoch's weights (by validation IC) are restored.

    Per-epoch record: epoch (1-based), train_loss, train_ic, valid_ic, valid_rank_ic,
    epoch_seconds, and expert_entropy for routed (MIGA) models. `on_epoch(record)` is called
    after the epoch's checkpoint is written.
    """
    from tqdm.auto import tqdm

    dev = torch.device(device) if device is not None else resolve_device(cfg.device)
    seed_everything(seed)
    model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    res = FitResult()
    best_state, bad_epochs, start = None, 0, 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        st = torch.load(ckpt, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["torch_rng"].cpu())
        np.random.set_state(st["numpy_rng"])
        random.setstate(st["python_rng"])
        best_state, bad_epochs, start = st["best_state"], st["bad_epochs"], st["epoch"]
        res.history, res.best_epoch = st["history"], st["best_epoch"]
        res.best_valid_ic, res.stopped_early = st["best_valid_ic"], st["stopped_early"]
        res.resumed_from = start
    elif ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)

    bar = tqdm(total=cfg.max_epochs, initial=start, desc="epochs", disable=not progress,
               dynamic_ncols=True)
    epoch = start
    while epoch < cfg.max_epochs and not res.stopped_early:
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        train_loader.set_epoch(epoch)
        losses, ics = [], []
        for batch in train_loader:
            scores, aux = _forward(model, batch, dev, cfg.bf16)
            loss, ic = total_loss(cfg.loss, scores, batch.y.to(dev), batch.mask.to(dev), aux,
                                  cfg.alpha, cfg.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip and cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            ics.append(ic.item())
            res.train_stock_days += int(batch.mask.sum())
        res.train_seconds += time.perf_counter() - t0
        res.train_cpu_seconds += time.process_time() - c0
        pred, usage = _evaluate(model, valid_loader, dev, cfg.bf16)
        vm = ic_metrics(pred)
        epoch += 1
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "train_ic": float(np.mean(ics)) if ics else float("nan"),
               "valid_ic": vm["ic"], "valid_rank_ic": vm["rank_ic"],
               "epoch_seconds": time.perf_counter() - t0}
        if usage is not None:
            rec["expert_entropy"] = usage_entropy(usage)
        res.history.append(rec)
        score = vm["ic"] if math.isfinite(vm["ic"]) else float("-inf")
        if best_state is None or score > res.best_valid_ic:
            res.best_valid_ic, res.best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad_epochs += 1
            res.stopped_early = bad_epochs >= cfg.patience
        if ckpt is not None:
            _save(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                         "python_rng": random.getstate(), "epoch": epoch,
                         "best_state": best_state, "best_epoch": res.best_epoch,
                         "best_valid_ic": res.best_valid_ic, "bad_epochs": bad_epochs,
                         "stopped_early": res.stopped_early, "history": res.history})
        bar.update(1)
        bar.set_postfix(loss=f"{rec['train_loss']:.4f}", valid_ic=f"{rec['valid_ic']:.4f}")
        if on_epoch is not None:
            on_epoch(rec)
    bar.close()
    res.epochs_run = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return res
