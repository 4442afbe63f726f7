"""Batches of whole trading days from the tensor store, by index arithmetic.

A batch holds B days. For each day t the members of the stock set are compacted into the
first n_t rows and padded to N = max_t n_t; a stock's sample is its features over the market
days t-T+1..t, zero (with tmask False) on days it did not trade. All gathering is one fancy
index on the arrays (numpy on the memory-mapped store, or torch when the store was moved to
the GPU): no pandas, no per-stock Python loop.

Memory. On the CPU the features are never read whole: each batch gathers its rows from the
memory-mapped file, and the pages read are released every `store.arrays.MAPPED_BYTES` (256 MiB),
so a process's RSS stays bounded whatever the store's size (a 24 GB machine trains on a store
bigger than its RAM). On a GPU the store is moved to the device when it fits
(`fits_on_device`: its arrays take at most GPU_FRACTION of the GPU's free memory, the rest left
for the models, batches and activations); otherwise it stays memory-mapped on the host, batches
are gathered there and each is copied to the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pipeline.store.arrays import TensorStore

GPU_FRACTION = 0.6        # move the store to the GPU only when it takes at most this share of free memory
GPU_COPY_BYTES = 256 << 20  # the store is copied to the GPU in slabs of days of about this size


@dataclass
class Batch:
    x: "torch.Tensor"        # (B, N, T, D) float32; zeros where the stock did not trade
    y: "torch.Tensor"        # (B, N) float32, NaN where no label
    mask: "torch.Tensor"     # (B, N) bool: member of the stock set that day (padding = False)
    market: "torch.Tensor"   # (B, T, M) float32
    day_idx: "torch.Tensor"  # (B,) int64 into store.dates
    inst_idx: "torch.Tensor" # (B, N) int64 into store.instruments, -1 for padding
    tmask: "torch.Tensor"    # (B, N, T) bool: stock traded on that day of the window

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f).to(device, non_blocking=True) for f in self.__dataclass_fields__))


def device_bytes(store: TensorStore) -> int:
    """GPU memory the store's arrays take once moved (features of the N_all used slots, labels,
    traded, market)."""
    return store.features.nbytes + store.labels.nbytes + store.market.nbytes + store.traded.nbytes


def fits_on_device(store: TensorStore, free_bytes: int) -> bool:
    """The rule for moving the store to a GPU: its arrays take at most GPU_FRACTION (60%) of the
    GPU's free memory when training starts, which leaves 40% (55 GB on an H200's ~139 GB) for
    the stack's parameters, Adam moments, gathered batches and activations. The shared data
    (2674 days x 4202 stocks) takes 7.1 GB at D = 158 and 28 GB at D = 626: on the device on an
    H200 or H100 (80 GB: 48 GB allowed); a GPU of 24 GB holds the D = 158 store only."""
    return device_bytes(store) <= GPU_FRACTION * free_bytes


def device_arrays(store: TensorStore, device) -> dict | None:
    """The store's arrays as torch tensors on `device`, cached on the store; None when they do
    not fit (`fits_on_device`): the caller then gathers on the host and copies each batch."""
    import torch

    cache = store.__dict__.setdefault("_device_cache", {})
    key = str(device)
    if key not in cache:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if not fits_on_device(store, free):
            cache[key] = None
        else:
            # Copied in slabs of days: the memmap is never read whole into host RAM.
            days, n, d = store.features.shape
            feats = torch.empty((days, n, d), dtype=torch.float32, device=device)
            step = max(1, GPU_COPY_BYTES // max(1, n * d * 4))
            for a in range(0, days, step):
                feats[a:a + step] = torch.from_numpy(np.array(store.features[a:a + step])).to(device)
                store.release_pages()              # the slab's pages: host RSS stays one slab
            cache[key] = {
                "features": feats,
                "labels": torch.from_numpy(np.array(store.labels)).to(device),
                "traded": torch.from_numpy(np.array(store.traded)).to(device),
                "market": torch.from_numpy(np.array(store.market)).to(device),
            }
    return cache[key]


class DayLoader:
    """Yields `Batch`es of `batch_days` days of `segment` for `stockset`.

    The window T is the store's (`store.window`, from the config it was built with): the
    store's segments already require T-1 days of history, so no other source may differ.
    days: explicit day indices (overrides the segment); days where the stock set has no
    member are skipped (e.g. csi1000 before it existed).
    """

    def __init__(self, store: TensorStore, segment: str, stockset: str, batch_days: int = 1,
                 shuffle: bool = False, seed: int = 0, device="cpu", days=None):
        import torch

        if stockset not in store.members:
            raise KeyError(f"stock set {stockset!r} not in the store; have {sorted(store.members)}")
        window = store.window
        if batch_days < 1:
            raise ValueError("batch_days must be >= 1")
        self.store, self.segment, self.stockset = store, segment, stockset
        self.batch_days, self.window, self.shuffle, self.seed = batch_days, window, shuffle, seed
        self.device = torch.device(device)
        self.epoch = 0
        members = store.members[stockset]                       # (Days, N_all) bool
        days = store.segment_days(segment) if days is None else np.asarray(days, dtype=np.int64)
        if len(days) and days.min() < window - 1:
            raise ValueError(f"day {days.min()} has fewer than window-1={window - 1} days of history")
        counts = members[days].sum(1) if len(days) else np.zeros(0, int)
        self.days = days[counts > 0]
        # Per-day member lists, compacted once: (n_t,) int64 into store.instruments.
        self._members = {int(d): np.flatnonzero(members[d]) for d in self.days}
        self._dev = device_arrays(store, self.device) if self.device.type == "cuda" else None
        self._n_all = store.features.shape[1]
        self._cap = store.capacity                       # stock slots per day in the file
        self._flat = store.flat_features()              # (Days * capacity, D) view of the file
        self._traded_flat = store.traded.reshape(-1)
        self._labels_flat = store.labels.reshape(-1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-len(self.days) // self.batch_days)

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return self.days
        return np.random.default_rng((self.seed, self.epoch)).permutation(self.days)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        for i in range(0, len(order), self.batch_days):
            yield self._batch(order[i:i + self.batch_days])

    def _batch(self, days: np.ndarray) -> Batch:
        import torch

        b, t = len(days), self.window
        lists = [self._members[int(d)] for d in days]
        n = max(len(m) for m in lists)
        inst = np.full((b, n), -1, dtype=np.int64)              # (B, N), -1 = padding
        for j, m in enumerate(lists):
            inst[j, :len(m)] = m
        mask = inst >= 0                                       # (B, N)
        gather_inst = np.where(mask, inst, 0)                  # padding reads stock 0, zeroed below
        win = days[:, None] - (t - 1) + np.arange(t)           # (B, T) market days t-T+1..t
        dsel = win[:, None, :]                                 # (B, 1, T)
        isel = gather_inst[:, :, None]                         # (B, N, 1)
        if self._dev is not None:
            dev = self._dev
            dsel_t = torch.from_numpy(dsel).to(self.device)
            isel_t = torch.from_numpy(isel).to(self.device)
            mask_t = torch.from_numpy(mask).to(self.device)
            tmask = dev["traded"][dsel_t, isel_t] & mask_t[:, :, None]           # (B, N, T)
            x = dev["features"][dsel_t, isel_t] * tmask[..., None]               # (B, N, T, D)
            y = dev["labels"][torch.from_numpy(days).to(self.device)[:, None], isel_t[..., 0]]
            y = torch.where(mask_t, y, torch.full_like(y, float("nan")))
            market = dev["market"][torch.from_numpy(win).to(self.device)]        # (B, T, M)
            return Batch(x, y, mask_t, market, torch.from_numpy(days).to(self.device),
                         torch.from_numpy(inst).to(self.device), tmask)
        # One np.take of B*N*T rows of D floats from the (Days*capacity, D) view of the memmap:
        # a single contiguous-row gather, cheaper than 2-array fancy indexing on the memmap
        # object (figures in benchmarks/bench_loader.py).
        rows = (win[:, None, :] * self._cap + isel).reshape(-1)            # (B*N*T,)
        x = np.take(self._flat, rows, axis=0).reshape(b, n, t, -1)         # (B, N, T, D)
        self.store.count_read(len(rows))                                   # bounded RSS
        rows_n = (win[:, None, :] * self._n_all + isel).reshape(-1)        # into (Days, N_all)
        tmask = self._traded_flat[rows_n].reshape(b, n, t) & mask[:, :, None]
        y = self._labels_flat[days[:, None] * self._n_all + gather_inst]   # (B, N)
        if not mask.all():
            x[~mask] = 0.0
            y[~mask] = np.nan
        market = self.store.market[win]                                    # (B, T, M)
        out = Batch(torch.from_numpy(np.asarray(x)), torch.from_numpy(y), torch.from_numpy(mask),
                    torch.from_numpy(market), torch.from_numpy(np.ascontiguousarray(days)),
                    torch.from_numpy(inst), torch.from_numpy(tmask))
        if self.device.type != "cpu":
            out = out.to(self.device)
        return out
