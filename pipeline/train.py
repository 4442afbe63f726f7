"""One training loop for every model, and scoring with a trained model.

`fit_stack` trains K cells of one architecture at once (pipeline/engine: parameters on a
leading cell axis, one vmapped forward, per-cell Adam, clipping, early stopping and
checkpoints); `fit` is a stack of one. `score_loader` / `score_days` score a trained model.

The model contract (pipeline/models): `model(x (B,N,T,D), mask (B,N), market (B,T,M) | None)
-> (scores (B,N), aux scalar)`. Nothing here knows about MLflow: per-epoch records go to the
`on_epoch` callback.

A step: each cell takes its next B days (its own shuffled order: `(seed, epoch)`), padded to a
static member count; the loss is the sum of the cells' losses, so their gradients never mix.
Nothing in a step reads back to the host: losses, ICs and counts accumulate on the device and
are read once per epoch. On a GPU with the store on the device the step is captured in a CUDA
graph and replayed (`[engine] cuda_graph`).

Resume: after every epoch each cell's `last.pt` (in its `checkpoint_dir`) holds its parameters,
Adam moments and step count, the best state so far, the history, the early-stopping counter and
torch's CPU and CUDA RNG states, all as tensors and plain values (loaded with
`weights_only=True`). Dropout in the registered models is keyed on (seed, epoch, step) rather
than drawn from an RNG, and shuffling depends only on (seed, epoch), so a cell called again
continues after its last finished epoch and ends as an uninterrupted run would, alone or in
any stack, on CPU; on CUDA too with `[engine] deterministic` (deterministic kernels).
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.config import TrainConfig
from pipeline.engine import StackAdam, StackDays, StackedModel, clip_per_cell
from pipeline.evaluation.ic import ic_metrics
from pipeline.losses import cell_losses
from pipeline.models.layers import mix32

CHECKPOINT = "last.pt"
CHECKPOINT_FORMAT = 2          # 1 = the pickled single-model checkpoint of earlier versions
EVAL_BATCH_DAYS = 8            # days per cell per scoring step (no gradients: larger is free)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)   # one record per epoch (see `fit`)
    best_epoch: int = 0                                  # 1-based; 0 = none better than -inf
    best_valid_ic: float = float("-inf")
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int = 0                                # epochs already done at start
    train_stock_days: int = 0                            # stock-days seen in the epochs run here
    train_seconds: float = 0.0                           # training phase of its stack, this call
    train_cpu_seconds: float = 0.0                       # the same in process CPU time (all threads)
    stack_size: int = 1                                  # cells trained together with this one

    @property
    def throughput(self) -> float:
        """Training stock-days per second of this cell (gather + forward + backward + step; in a
        stack of K the stack's time is shared, so the stack's throughput is K times this)."""
        return self.train_stock_days / self.train_seconds if self.train_seconds else float("nan")


def seed_everything(seed: int) -> None:
    """Same seed -> same numbers on CPU (torch, numpy and Python RNGs)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" (a GPU when there is one), "cpu", "cuda" or "cuda:<i>"; a ConfigError for a name
    torch does not know or a GPU this machine does not have."""
    from pipeline.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:<index>") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:<index>")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} but CUDA is not available on this machine: "
                              "use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} but this machine has "
                              f"{torch.cuda.device_count()} GPU(s)")
    return device


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


@dataclass
class StackCell:
    """One cell of a stack, as the engine sees it. cfg: its training settings (cells of a stack
    share those in `_SHARED`: the loss, its label handling, the clip mode, `batch_days`,
    `device` and `bf16`; learning rate, alpha, beta, weight decay, clip bound, epochs and
    patience may differ). Days default to the store's train/valid segments."""
    stockset: str
    seed: int
    cfg: TrainConfig
    checkpoint_dir: str | Path | None = None
    train_days: np.ndarray | None = None
    valid_days: np.ndarray | None = None


@dataclass
class _CellState:
    """The host-side bookkeeping of one cell (what a checkpoint holds besides tensors)."""
    result: FitResult
    epoch: int = 0
    bad_epochs: int = 0
    has_best: bool = False

    def done(self, cfg: TrainConfig) -> bool:
        return self.result.stopped_early or self.epoch >= cfg.max_epochs


# What the cells of a stack must agree on: one step computes one loss for all of them. A
# stack is one model (pipeline.grid), whose cells share their recipe (`Config.train_for`).
_SHARED = ("loss", "label_transform", "drop_extreme", "clip_mode", "batch_days", "device", "bf16")


def _set_determinism(dev: torch.device, deterministic: bool) -> None:
    if dev.type == "cuda" and deterministic:
        # cuBLAS needs this before its first use to pick deterministic reductions.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def _step_keys(seeds: torch.Tensor, epochs: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """(K,) int64 dropout keys: a hash of each cell's (seed, epoch, step), never of the stack."""
    m = 0xFFFFFFFF
    return mix32((mix32((seeds * 0x9E3779B1 + epochs) & m) ^ (step * 0x85EBCA77 & m)) & m)


class _Engine:
    """The state of a training stack on the device and its two passes (train step, scoring)."""

    def __init__(self, models, cells: Sequence[StackCell], store, dev: torch.device,
                 graph: bool, eval_batch_days: int):
        K, c0 = len(cells), cells[0].cfg
        for c in cells[1:]:
            differ = [f for f in _SHARED if getattr(c.cfg, f) != getattr(c0, f)]
            if differ:
                raise ValueError(f"cells of one stack must share {', '.join(differ)}")
        self.K, self.dev, self.cfg0, self.store = K, dev, c0, store
        self.B, self.Be = c0.batch_days, max(c0.batch_days, eval_batch_days)
        self.days = StackDays(store, [c.stockset for c in cells], dev)
        self.stack = StackedModel(models, dev)
        f = lambda name, dtype=torch.float32: torch.tensor(  # noqa: E731
            [float(getattr(c.cfg, name)) for c in cells], dtype=dtype, device=dev)
        self.alpha, self.beta, self.clip = f("alpha"), f("beta"), f("grad_clip")
        self.opt = StackAdam(self.stack.flat, f("lr"), f("weight_decay"))
        self.seeds = torch.tensor([int(c.seed) & 0xFFFFFFFF for c in cells], device=dev)
        self.best_flat = self.stack.flat.detach().clone()
        self.best_buffers = {n: b.clone() for n, b in self.stack.buffers.items()}
        # Static inputs of the step (a captured graph reads them in place). `order` holds an
        # epoch's days per cell, as wide as the longest epoch of any cell.
        self.order = torch.full((K, self.B), -1, dtype=torch.int64, device=dev)
        self.step_idx = torch.zeros((), dtype=torch.int64, device=dev)
        self.epochs = torch.zeros(K, dtype=torch.int64, device=dev)
        self.running = torch.zeros(K, dtype=torch.bool, device=dev)
        self._arange_b = torch.arange(self.B, device=dev)
        # Per-epoch sums on the device: loss, IC, steps, stock-days (float64: exact counts).
        self.acc = torch.zeros(4, K, dtype=torch.float64, device=dev)
        self.graph_wanted = graph and dev.type == "cuda" and self.days.on_device
        self._graph = None

    # ------------------------------------------------------------ training
    def _step(self) -> None:
        idx = self.step_idx * self.B + self._arange_b
        days = self.order.index_select(1, idx)                              # (K, B)
        b = self.days.gather(days)
        act = self.running & (days >= 0).any(1)                             # (K,)
        keys = _step_keys(self.seeds, self.epochs, self.step_idx)
        with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16,
                            enabled=self.cfg0.bf16 and self.dev.type == "cuda"):
            scores, aux, _ = self.stack(b.x, b.mask, b.market, keys)
        c0 = self.cfg0
        loss, ic = cell_losses(c0.loss, scores, b.y, b.mask, aux, self.alpha, self.beta,
                               c0.label_transform, c0.drop_extreme)
        zero = torch.zeros_like(loss)
        total = torch.where(act, loss, zero).sum()
        (grad,) = torch.autograd.grad(total, self.stack.flat)
        self.opt.step(clip_per_cell(grad, self.clip, c0.clip_mode), act)
        a = act.to(torch.float64)
        self.acc += torch.stack([torch.where(act, loss.detach(), zero).double(),
                                 torch.where(act, ic, zero).double(), a,
                                 (b.mask.sum((1, 2)) * act).double()])
        self.step_idx += 1

    def _snapshot(self):
        return ([self.stack.flat.detach().clone(), self.opt.m.clone(), self.opt.v.clone(),
                 self.opt.step_count.clone(), self.acc.clone(), self.step_idx.clone()],
                {n: b.clone() for n, b in self.stack.buffers.items()})

    def _restore(self, snap) -> None:
        tensors, buffers = snap
        with torch.no_grad():
            for dst, src in zip([self.stack.flat, self.opt.m, self.opt.v, self.opt.step_count,
                                 self.acc, self.step_idx], tensors):
                dst.copy_(src)
            for n, b in buffers.items():
                self.stack.buffers[n].copy_(b)

    def _capture(self) -> None:
        """Record `_step` in a CUDA graph. The warm-up steps it needs are undone, so a captured
        run takes exactly the steps an eager one does."""
        snap = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self._restore(snap)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self._restore(snap)
        self._graph = graph

    def train_epoch(self, orders: list[np.ndarray | None], dry: bool = False) -> np.ndarray | None:
        """One epoch: cell k takes the days `orders[k]` (None = not running). Returns the
        per-cell sums (4, K): loss, IC, steps, stock-days (one read from the device)."""
        steps = max([-(-len(o) // self.B) for o in orders if o is not None] or [0])
        if self.order.shape[1] < steps * self.B:
            self.order = torch.empty((self.K, steps * self.B), dtype=torch.int64, device=self.dev)
            self._graph = None                        # a graph reads the tensor it was captured on
        full = np.full(tuple(self.order.shape), -1, dtype=np.int64)
        for k, o in enumerate(orders):
            if o is not None:
                full[k, :len(o)] = o
        self.order.copy_(torch.from_numpy(full))
        if dry:
            return None
        self.running.copy_(torch.tensor([o is not None for o in orders]))
        self.acc.zero_()
        self.step_idx.zero_()
        self.stack.train(True)
        if self.graph_wanted and self._graph is None and steps:
            self._capture()
        for _ in range(steps):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()
        return self.acc.cpu().numpy()

    # ------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(self, days: list[np.ndarray]) -> list[tuple[pd.DataFrame, np.ndarray | None]]:
        """Each cell's scores on its `days[k]`: a frame (day_idx, inst_idx, score, label) and
        its mean routing weights (G, E) or None. One read from the device at the end."""
        Be = self.Be
        steps = max(-(-len(d) // Be) for d in days)
        order = np.full((self.K, steps * Be), -1, dtype=np.int64)
        for k, d in enumerate(days):
            order[k, :len(d)] = d
        order_t = torch.from_numpy(order).to(self.dev)
        keys = torch.zeros(self.K, dtype=torch.int64, device=self.dev)
        self.stack.train(False)
        outs, usage, usage_n = [], None, None
        for s in range(steps):
            b = self.days.gather(order_t[:, s * Be:(s + 1) * Be])
            with torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16,
                                enabled=self.cfg0.bf16 and self.dev.type == "cuda"):
                scores, _, routing = self.stack(b.x, b.mask, b.market, keys)
            outs.append((scores.float(), b.y, b.inst))
            if routing is not None:
                u = routing.float().sum((1, 2))                              # (K, G, E)
                n = b.mask.sum((1, 2))
                usage, usage_n = (u, n) if usage is None else (usage + u, usage_n + n)
        score, label, inst = (torch.cat(z, dim=1).cpu().numpy() for z in zip(*outs))  # (K, S*Be, N)
        usage = None if usage is None else (usage / usage_n.clamp(min=1)[:, None, None]).cpu().numpy()
        out = []
        for k in range(self.K):
            ok = inst[k] >= 0                                                # (S*Be, N)
            day = np.broadcast_to(order[k][:, None], ok.shape)[ok]
            df = pd.DataFrame({"day_idx": day, "inst_idx": inst[k][ok], "score": score[k][ok],
                               "label": label[k][ok]})
            df["date"] = df["day_idx"]
            out.append((df, None if usage is None else usage[k]))
        return out

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, k: int, st: _CellState) -> dict:
        r = st.result
        state = {"format": CHECKPOINT_FORMAT, "layout": self.stack.layout,
                 "params": self.stack.flat[k].detach().cpu().clone(),
                 "buffers": {n: b[k].cpu().clone() for n, b in self.stack.buffers.items()},
                 "best_params": self.best_flat[k].cpu().clone(),
                 "best_buffers": {n: b[k].cpu().clone() for n, b in self.best_buffers.items()},
                 **self.opt.cell_state(k),
                 "torch_rng": torch.get_rng_state(),
                 "epoch": st.epoch, "bad_epochs": st.bad_epochs, "has_best": st.has_best,
                 "best_epoch": r.best_epoch, "best_valid_ic": r.best_valid_ic,
                 "stopped_early": r.stopped_early, "history": r.history}
        if self.dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.dev)
        return state

    def restore(self, k: int, ck: dict, st: _CellState) -> None:
        if ck.get("layout") != self.stack.layout:
            raise ValueError("the checkpoint is of another architecture")
        self.stack.load_cell(k, ck["params"], ck["buffers"])
        self.opt.load_cell(k, ck)
        with torch.no_grad():
            self.best_flat[k].copy_(ck["best_params"].to(self.dev))
            for n, b in ck["best_buffers"].items():
                self.best_buffers[n][k].copy_(b.to(self.dev))
        r = st.result
        st.epoch, st.bad_epochs, st.has_best = ck["epoch"], ck["bad_epochs"], ck["has_best"]
        r.best_epoch, r.best_valid_ic = ck["best_epoch"], ck["best_valid_ic"]
        r.stopped_early, r.history, r.resumed_from = ck["stopped_early"], list(ck["history"]), ck["epoch"]

    def keep_best(self, k: int) -> None:
        with torch.no_grad():
            self.best_flat[k].copy_(self.stack.flat[k])
            for n, b in self.stack.buffers.items():
                self.best_buffers[n][k].copy_(b[k])


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)      # atomic: a kill mid-write leaves the previous checkpoint


def load_checkpoint(path: Path, device) -> dict | None:
    """A cell's checkpoint, loaded without unpickling code (weights_only=True: tensors and plain
    data only, so a swapped file cannot run code). None, with one line on stderr saying why, when
    it cannot be used: an earlier format (format 1 pickled numpy's RNG state), a file holding
    anything else, or not a checkpoint. The cell then starts over (and overwrites it)."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # UnpicklingError (a disallowed global), RuntimeError (not a torch file)
        from pipeline.tracking import weights_only_reason     # (no MLflow import: torch's message)

        reason = weights_only_reason(e)
    else:
        if isinstance(ck, dict) and ck.get("format") == CHECKPOINT_FORMAT:
            return ck
        reason = (f"format {ck.get('format')!r}, not {CHECKPOINT_FORMAT}" if isinstance(ck, dict)
                  else f"a {type(ck).__name__}, not a checkpoint")
    print(" ".join(f"warning: checkpoint {path} cannot be used ({reason[:200]}); it is not "
                   "unpickled, the cell starts over".split()), file=sys.stderr)
    return None


def _cell_days(engine: _Engine, k: int, cell: StackCell, store) -> tuple[np.ndarray, np.ndarray]:
    train = store.segment_days("train") if cell.train_days is None else cell.train_days
    valid = store.segment_days("valid") if cell.valid_days is None else cell.valid_days
    window = store.window
    for d in (train, valid):
        if len(d) and np.min(d) < window - 1:
            raise ValueError(f"day {np.min(d)} has fewer than window-1={window - 1} days of history")
    return engine.days.member_days(k, train), engine.days.member_days(k, valid)


def fit_stack(models: Sequence[torch.nn.Module], cells: Sequence[StackCell], store, *,
              on_epoch: Callable[[int, dict], None] | None = None, progress: bool = True,
              device: str | torch.device | None = None, graph: bool = True,
              deterministic: bool = True, eval_batch_days: int = EVAL_BATCH_DAYS) -> list[FitResult]:
    """Train `models[k]` on `cells[k]` together; each ends with its best epoch's weights.

    models: one architecture (same class and parameter shapes), each initialised as it would be
    alone (seed it before building it). Per-epoch record of a cell: epoch (1-based),
    train_loss, train_ic, valid_ic, valid_rank_ic, epoch_seconds and train_seconds (of the
    stack: the whole epoch, and its training pass without the validation scoring), and
    expert_entropy for routed (MIGA) models; `on_epoch(k, record)` is called after cell k's
    checkpoint is written. A cell stops on its own (patience, max_epochs): it is then frozen
    and the others go on.
    """
    from tqdm.auto import tqdm

    if len(models) != len(cells):
        raise ValueError(f"{len(models)} models for {len(cells)} cells")
    dev = torch.device(device) if device is not None else resolve_device(cells[0].cfg.device)
    _set_determinism(dev, deterministic)
    engine = _Engine(list(models), cells, store, dev, graph, eval_batch_days)
    K = len(cells)
    states = [_CellState(FitResult(stack_size=K)) for _ in cells]
    days = [_cell_days(engine, k, c, store) for k, c in enumerate(cells)]
    engine.train_epoch([np.zeros(len(d[0]), np.int64) - 1 for d in days], dry=True)  # sizes `order`
    ckpts = [Path(c.checkpoint_dir) / CHECKPOINT if c.checkpoint_dir else None for c in cells]
    rng_restored = False
    for k, path in enumerate(ckpts):
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        ck = load_checkpoint(path, "cpu") if path.exists() else None
        if ck is not None:
            engine.restore(k, ck, states[k])
            if not rng_restored:      # torch's RNG is the process's: the first resumed cell's
                torch.set_rng_state(ck["torch_rng"])
                if dev.type == "cuda" and "cuda_rng" in ck:
                    torch.cuda.set_rng_state(ck["cuda_rng"], dev)
                rng_restored = True

    total = sum(c.cfg.max_epochs for c in cells)
    bar = tqdm(total=total, initial=sum(min(s.epoch, c.cfg.max_epochs) for s, c in zip(states, cells)),
               desc="cell-epochs" if K > 1 else "epochs", disable=not progress, dynamic_ncols=True)
    try:  # the bar is closed (its line ended) before a Ctrl-C message is printed
        while True:
            running = [not s.done(c.cfg) for s, c in zip(states, cells)]
            if not any(running):
                break
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                engine.epochs.copy_(torch.tensor([s.epoch for s in states]))
            orders = [np.random.default_rng((int(c.seed), s.epoch)).permutation(days[k][0]) if run else None
                      for k, (c, s, run) in enumerate(zip(cells, states, running))]
            sums = engine.train_epoch(orders)                                   # (4, K)
            t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
            scored = engine.score([days[k][1] for k in range(K)])
            seconds = time.perf_counter() - t0
            for k, (cell, st) in enumerate(zip(cells, states)):
                if not running[k]:
                    continue
                r = st.result
                r.train_seconds += t_train
                r.train_cpu_seconds += c_train
                r.train_stock_days += int(sums[3, k])
                pred, usage = scored[k]
                vm = ic_metrics(pred)
                st.epoch += 1
                n = sums[2, k]
                rec = {"epoch": st.epoch, "train_loss": float(sums[0, k] / n) if n else float("nan"),
                       "train_ic": float(sums[1, k] / n) if n else float("nan"),
                       "valid_ic": vm["ic"], "valid_rank_ic": vm["rank_ic"], "epoch_seconds": seconds,
                       "train_seconds": t_train}
                if usage is not None:
                    rec["expert_entropy"] = usage_entropy(usage)
                r.history.append(rec)
                score = vm["ic"] if math.isfinite(vm["ic"]) else float("-inf")
                if not st.has_best or score > r.best_valid_ic:
                    r.best_valid_ic, r.best_epoch, st.bad_epochs, st.has_best = score, st.epoch, 0, True
                    engine.keep_best(k)
                else:
                    st.bad_epochs += 1
                    r.stopped_early = st.bad_epochs >= cell.cfg.patience
                if ckpts[k] is not None:
                    _save(ckpts[k], engine.checkpoint(k, st))
                bar.update(1)
                if K == 1:
                    bar.set_postfix(loss=f"{rec['train_loss']:.4f}", valid_ic=f"{rec['valid_ic']:.4f}")
                if on_epoch is not None:
                    on_epoch(k, rec)
    finally:
        bar.close()
    results = []
    for k, (model, st) in enumerate(zip(models, states)):
        flat, buffers = ((engine.best_flat, engine.best_buffers) if st.has_best
                         else (engine.stack.flat, engine.stack.buffers))
        state = engine.stack.cell_state(k, flat, buffers)
        model.load_state_dict({n: state[n] for n in model.state_dict()})
        model.to(dev).eval()
        st.result.epochs_run = st.epoch
        results.append(st.result)
    return results


def fit(model: torch.nn.Module, train_loader, valid_loader, cfg: TrainConfig, *, seed: int = 0,
        checkpoint_dir: str | Path | None = None, on_epoch: Callable[[dict], None] | None = None,
        progress: bool = True, device: str | torch.device | None = None,
        graph: bool = True) -> FitResult:
    """Train `model` in place on the loaders' store, stock set and days: a stack of one.

    The train loader gives the days and B (`batch_days`); its shuffle order is (seed, epoch)
    with `seed` as here. The best epoch's weights (by validation IC) are restored."""
    cfg = replace(cfg, batch_days=train_loader.batch_days)
    cell = StackCell(train_loader.stockset, seed, cfg, checkpoint_dir,
                     train_days=train_loader.days, valid_days=valid_loader.days)
    callback = None if on_epoch is None else (lambda k, rec: on_epoch(rec))
    seed_everything(seed)
    return fit_stack([model], [cell], train_loader.store, on_epoch=callback, progress=progress,
                     device=device, graph=graph, eval_batch_days=valid_loader.batch_days)[0]
