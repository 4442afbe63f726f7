"""Days for a stack of K cells, gathered on the device by index arithmetic: no host sync.

Each cell trains on its own stock set. A stock set's members on day d are compacted once into a
table row padded to a static width (the most members it has on any day), so a step's tensors
have one shape for the whole run: `(K, B, N, T, D)`, N the widest stock set in the stack. A day
index of -1 is "no day" (a cell whose epoch has fewer days than the stack's): all its slots are
padding. The same gather runs on the GPU (the store moved there when it fits,
`pipeline.loader.fits_on_device`) and on the CPU (a torch view of the memory-mapped file: only the
rows gathered are read, and the pages read are released every `store.arrays.MAPPED_BYTES`, so
the process's memory stays bounded however big the store; a CUDA run whose store does not fit
gathers so on the host and copies each batch to the GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.store.arrays import TensorStore


@dataclass
class StackBatch:
    x: torch.Tensor        # (K, B, N, T, D) float32, zero where the stock did not trade
    y: torch.Tensor        # (K, B, N) float32, NaN where no label or padding
    mask: torch.Tensor     # (K, B, N) bool: member of the cell's stock set that day
    market: torch.Tensor   # (K, B, T, M) float32
    inst: torch.Tensor     # (K, B, N) int64 into store.instruments, -1 for padding


def member_table(members: np.ndarray, width: int | None = None) -> np.ndarray:
    """(Days, N_all) bool -> (Days, width) int64: each day's members in order, -1 padded.
    width: at least the most members of any day (default: exactly that)."""
    counts = members.sum(1)
    width = int(counts.max(initial=0)) if width is None else width
    table = np.full((members.shape[0], max(width, 1)), -1, dtype=np.int64)
    day, inst = np.nonzero(members)
    slot = np.arange(len(day)) - np.repeat(np.cumsum(counts) - counts, counts)
    table[day, slot] = inst
    return table


def stockset_width(store: TensorStore, stockset: str) -> int:
    """The static member count of a stock set: its most members on any day of the store."""
    return max(int(store.members[stockset].sum(1).max(initial=0)), 1)


def _store_tensors(store: TensorStore, device: torch.device) -> dict:
    """The store's arrays as torch tensors: on the GPU when they fit (cached on the store), else
    CPU views of the files (a CUDA run then gathers on the host and copies each batch)."""
    from pipeline.loader import device_arrays

    if device.type == "cuda":
        dev = device_arrays(store, device)
        if dev is not None:
            days, n, d = dev["features"].shape
            return {"features": dev["features"].reshape(days * n, d), "cap": n,
                    "traded": dev["traded"].reshape(-1), "labels": dev["labels"].reshape(-1),
                    "market": dev["market"], "on_device": True}
    import warnings

    with warnings.catch_warnings():        # the memmap is read-only; the engine never writes it
        warnings.simplefilter("ignore", UserWarning)
        feats = torch.from_numpy(store.flat_features())
    return {"features": feats, "cap": store.capacity,
            "traded": torch.from_numpy(np.ascontiguousarray(store.traded).reshape(-1)),
            "labels": torch.from_numpy(np.ascontiguousarray(store.labels).reshape(-1)),
            "market": torch.from_numpy(np.ascontiguousarray(store.market)),
            "on_device": device.type == "cpu"}


class StackDays:
    """The gather for a stack: `gather(days (K, B) int64)` -> StackBatch on `device`."""

    def __init__(self, store: TensorStore, stocksets: list[str], device: torch.device):
        for s in stocksets:
            if s not in store.members:
                raise KeyError(f"stock set {s!r} not in the store; have {sorted(store.members)}")
        self.store, self.device, self.window = store, torch.device(device), store.window
        self.width = max(stockset_width(store, s) for s in stocksets)
        t = _store_tensors(store, self.device)
        self.on_device = t["on_device"]
        home = self.device if self.on_device else torch.device("cpu")
        self._feats, self._traded, self._labels = t["features"], t["traded"], t["labels"]
        self._market, self._cap = t["market"], t["cap"]
        self._mapped = self._feats.device.type == "cpu"     # a view of the memory-mapped file
        self._n_all = store.features.shape[1]
        tables = {s: torch.from_numpy(member_table(store.members[s], self.width)) for s in set(stocksets)}
        self._table = torch.stack([tables[s] for s in stocksets]).to(home)   # (K, Days, N)
        self._k = torch.arange(len(stocksets), device=home)[:, None]         # (K, 1)
        self._t = torch.arange(self.window, device=home)                      # (T,)

    def gather(self, days: torch.Tensor) -> StackBatch:
        """days (K, B) int64 store day indices (-1 = none) -> the K cells' batches."""
        T = self.window
        days = days.to(self._table.device)
        d = days.clamp(min=T - 1)                                           # (K, B)
        inst = self._table[self._k, d]                                       # (K, B, N)
        mask = (inst >= 0) & (days >= 0)[..., None]
        inst = torch.where(mask, inst, torch.full_like(inst, -1))
        ic = inst.clamp(min=0)
        win = d[..., None] - (T - 1) + self._t                              # (K, B, T)
        rows = win[:, :, None, :] * self._cap + ic[..., None]               # (K, B, N, T)
        x = self._feats[rows]                                                # (K, B, N, T, D)
        if self._mapped:
            self.store.count_read(rows.numel())
        traded = self._traded[win[:, :, None, :] * self._n_all + ic[..., None]] & mask[..., None]
        x = x * traded[..., None]
        y = self._labels[d[..., None] * self._n_all + ic]                   # (K, B, N)
        y = torch.where(mask, y, torch.full_like(y, float("nan")))
        market = self._market[win]                                           # (K, B, T, M)
        out = StackBatch(x, y, mask, market, inst)
        if out.x.device != self.device:
            out = StackBatch(*(v.to(self.device, non_blocking=True) for v in
                               (out.x, out.y, out.mask, out.market, out.inst)))
        return out

    def member_days(self, k: int, days: np.ndarray) -> np.ndarray:
        """The days of `days` on which cell k's stock set has at least one member."""
        table = self._table[k].cpu().numpy()
        days = np.asarray(days, dtype=np.int64)
        return days[(table[days] >= 0).any(1)] if len(days) else days
