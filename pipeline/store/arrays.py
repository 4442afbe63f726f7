"""The tensor store's arrays: `TensorStore` reads a built store, `StoreWriter` writes one.

Layout of `MIGA_HOME/store/<fingerprint>/`:
    features.f32        (Days, C, D) float32 np.memmap, normalised, 0 where not traded; C >= N_all
                        stock slots, the spare ones for stocks that list later (`features` is the
                        (Days, N_all, D) view). Stocks are in order of their first trading day, so
                        a store extended after new listings keeps its file (see pipeline/store/build.py)
    labels.npy          (Days, N_all) float32, NaN = no label
    traded.npy          (Days, N_all) bool
    members_<set>.npy   (Days, N_all) bool, point in time and traded ("all" = traded)
    market.npy          (Days, M) float32, normalised with train statistics
    exec_ret.npy        (Days, N_all) float32: what a position formed on day t earns when bought
                        on t+1 (the label, or valued at the last traded price when t+2 has no
                        trade); NaN = no trade on t+1 (sql/store/day_facts.sql, build.py `execution_arrays`)
    buy_ok.npy          (Days, N_all) bool: can be bought on t+1 (trades, not opening limit up)
    short_ok.npy        (Days, N_all) bool: can be sold short on t+1 (not opening limit down)
    hold_ret.npy        (Days, N_all) float32: what a holding earns from t+1 to t+2 at the
                        average price, a day without a trade valued at the last traded one
                        (p*(t+2) / p*(t+1) - 1, p* carried over suspensions); NaN before the
                        stock's first trade and for the last two days (a multi-day account,
                        pipeline/evaluation/topk.py; build.py `execution_arrays`)
    sell_ok.npy         (Days, N_all) bool: can be sold on t+1 (trades, not opening limit down),
                        whether or not it traded on t
    at_limit.npy        (Days, N_all) bool: trades on t+1 and opens at the limit up or down
    norm_stats.json     the fitted normalisation (inference applies the same)
    meta.json           dates, instruments, names, segments, window, fingerprint (and, from a
                        warehouse build, what `pipeline.store.build` records to extend it)

The fingerprint hashes the warehouse inputs, the segments and the data config, so a store is
reused while they are unchanged and a new one is built beside it when they change. Stores are
written to a temporary folder and renamed into place, so a crashed build leaves nothing that
looks complete. Building from the warehouse (fingerprint, extension, pruning) is
`pipeline.store.build`; this module knows nothing of DuckDB.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.config import EMBARGOED, SEGMENT_NAMES, Segments
from pipeline.normalize import apply_robust, fit_robust


EXECUTION_ARRAYS = ("exec_ret", "buy_ok", "short_ok", "hold_ret", "sell_ok", "at_limit")
EXECUTION_DTYPES = (np.float32, bool, bool, np.float32, bool, bool)
# Resident memory of a reader or writer of features.f32: the pages of the file a process has read
# or written through its map count in its RSS until unmapped, so a pass over a store bigger than
# RAM would grow to the store's size (reclaimable page cache, but RSS all the same). Every
# MAPPED_BYTES of rows gathered (`TensorStore.count_read`) or written (`StoreWriter.count_written`)
# the map's pages are dropped from the process (madvise MADV_DONTNEED; a written page's dirty
# state passes to the page cache): they stay in the page cache, so a later read maps them again
# without I/O. Figures in benchmarks/bench_panel_store.py.
MAPPED_BYTES = 256 << 20
_PAGE = mmap.PAGESIZE


class _PageBudget:
    """The pages of a features.f32 map touched since the last release: past MAPPED_BYTES they are
    unmapped from this process (the mapping itself stays valid). One for a reader, one for a
    writer."""

    def __init__(self, file: np.memmap):
        self.file, self.touched = file, 0
        self.row_bytes = 4 * file.shape[2] + _PAGE      # a row of D float32 may straddle a page

    def add(self, rows: int) -> None:
        self.touched += int(rows) * self.row_bytes
        if self.touched > MAPPED_BYTES:
            self.release()

    def release(self) -> None:
        mm = getattr(self.file, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)
        self.touched = 0


def as_segments(segments: Segments | Mapping) -> Segments:
    """A `Segments`, from itself or from its JSON shape ({"train": (d0, d1), ..., "embargo_days": k})."""
    return segments if isinstance(segments, Segments) else Segments.from_json(segments)


def train_day_mask(dates: np.ndarray, segments: Segments) -> np.ndarray:
    """(Days,) bool: the days inside the train segment (normalisation is fitted on them)."""
    a, b = segments.train
    return (dates >= np.datetime64(a, "D")) & (dates <= np.datetime64(b, "D"))


def norm_stats(feature_names, med, scale, clip, mmed, mscale) -> dict:
    """The fitted normalisation as saved in norm_stats.json (inference applies the same)."""
    return {"feature_names": list(feature_names), "median": [float(v) for v in med],
            "scale": [float(v) for v in scale], "clip": float(clip),
            "market_median": [float(v) for v in mmed], "market_scale": [float(v) for v in mscale],
            "method": "robust z: (x - median) / (1.4826 MAD), clip, NaN -> 0; fitted on train"}


class TensorStore:
    """Read-only view of a built store (see module docstring for the arrays)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no tensor store at {self.root} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.dates = np.array(meta["dates"], dtype="datetime64[D]")
        self.instruments = np.array(meta["instruments"], dtype=str)
        self.feature_names: list[str] = list(meta["feature_names"])
        self.market_names: list[str] = list(meta["market_names"])
        self.window: int = int(meta["window"])
        self.segments: Segments = Segments.from_json(meta["segments"])
        days, n, d = len(self.dates), len(self.instruments), len(self.feature_names)
        self.capacity: int = int(meta.get("capacity", n))   # stock slots in features.f32
        self._file = np.memmap(self.root / "features.f32", dtype=np.float32, mode="r",
                               shape=(days, self.capacity, d))
        self.features = self._file[:, :n]      # a view (itself a memmap) of the used slots
        self._pages = _PageBudget(self._file)  # pages read since the last release
        self.labels: np.ndarray = np.load(self.root / "labels.npy")
        self.traded: np.ndarray = np.load(self.root / "traded.npy")
        self.market: np.ndarray = np.load(self.root / "market.npy")
        self.members: dict[str, np.ndarray] = {
            s: np.load(self.root / f"members_{s}.npy") for s in meta["stocksets"]}
        self.norm_stats: dict = json.loads((self.root / "norm_stats.json").read_text())

    @property
    def execution(self) -> dict[str, np.ndarray]:
        """exec_ret, buy_ok, short_ok, hold_ret, sell_ok, at_limit (module docstring): read
        when first asked for (only the backtests need them), memory-mapped."""
        if "_execution" not in self.__dict__:
            self._execution = {k: np.load(self.root / f"{k}.npy", mmap_mode="r")
                               for k in EXECUTION_ARRAYS}
        return self._execution

    # ---------------------------------------------------------------- queries
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.features.shape)

    def count_read(self, rows: int) -> None:
        """A reader gathered `rows` feature rows through the map: past MAPPED_BYTES of pages,
        they are released (`release_pages`), so a pass over the store keeps its RSS bounded."""
        self._pages.add(rows)

    def release_pages(self) -> None:
        """Drop the pages of features.f32 this process has mapped (they stay in the page cache;
        views and tensors of the map stay valid and read them again on their next access)."""
        self._pages.release()

    def flat_features(self) -> np.ndarray:
        """The features file as a (Days * capacity, D) view: row d * capacity + j is stock j on
        day d (the loader's index arithmetic; no copy, unlike reshaping `features`)."""
        days, cap, d = self._file.shape
        return self._file.reshape(days * cap, d)

    def segment_days(self, segment: str) -> np.ndarray:
        """Day indices (int64) of `segment`: embargo applied, >= window-1 days of history.

        The label of day t uses prices of t+1 and t+2, so the last `embargo_days` market days
        of train and valid are dropped: their labels would use the next segment's prices.
        """
        a, b = self.segments.get(segment)
        d = self.dates
        idx = np.flatnonzero((d >= np.datetime64(a, "D")) & (d <= np.datetime64(b, "D")))
        emb = self.segments.embargo_days
        if segment in EMBARGOED and emb > 0:
            idx = idx[:-emb] if len(idx) > emb else idx[:0]
        return idx[idx >= self.window - 1].astype(np.int64)

    def day_index(self, day) -> int:
        i = int(np.searchsorted(self.dates, np.datetime64(day, "D")))
        if i >= len(self.dates) or self.dates[i] != np.datetime64(day, "D"):
            raise KeyError(f"{day} is not a market trading day of this store")
        return i

    def describe(self) -> str:
        days, n, d = self.shape
        # (features.f32 may be a hard link that a newer store has grown: count our own days)
        size = self._file.nbytes + sum(p.stat().st_size for p in self.root.iterdir()
                                       if p.is_file() and p.name != "features.f32")
        lines = [
            f"tensor store {self.fingerprint} at {self.root}",
            f"  {days} days {self.dates[0]}..{self.dates[-1]}, {n} instruments, {d} features, "
            f"{len(self.market_names)} market features, window {self.window}",
            f"  size on disk {size / 2**30:.2f} GiB (features {self._file.nbytes / 2**30:.2f} GiB, "
            f"{self.capacity - n} spare stock slots)",
            f"  labelled stock-days {int(np.isfinite(self.labels).sum()):,} of "
            f"{int(self.traded.sum()):,} traded",
        ]
        for s in SEGMENT_NAMES:
            idx = self.segment_days(s)
            a, b = self.segments.get(s)
            lines.append(f"  {s:<5} {a}..{b}: {len(idx)} days (embargo {self.segments.embargo_days})")
        for s, m in self.members.items():
            per_day = m.sum(1)
            lines.append(f"  stockset {s:<8} mean {per_day.mean():7.1f} / max {per_day.max()} members a day")
        if "build_seconds" in self.meta:
            how = f", extending {self.meta['extended_from']}" if self.meta.get("extended_from") else ""
            lines.append(f"  built in {self.meta['build_seconds']:.1f} s{how}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- building
    @classmethod
    def from_arrays(cls, root, dates, instruments, feature_names, features, traded, labels,
                    members, market=None, market_names=None, segments=None, *, window: int,
                    clip: float = 3.0, normalize: bool = True,
                    fingerprint: str | None = None, execution: dict | None = None) -> "TensorStore":
        """Write a store from in-memory arrays (tests, tiny stores) and open it.

        features (Days, N, D) are RAW: they are normalised with statistics fitted on the train
        segment's traded stock-days (pass normalize=False for already normalised values), and
        zeroed where not traded. members: {set: (Days, N) bool}; "all" is added as `traded`.
        segments: a `pipeline.config.Segments` or {"train": (d0, d1), ..., "embargo_days": k};
        None puts every day in train. execution: {exec_ret, buy_ok, short_ok} (Days, N) and
        optionally {hold_ret, sell_ok, at_limit}; what is missing is derived from the labels (no
        price limits: labelled = tradable, exec_ret = hold_ret = label, 0 where no label).
        """
        dates = np.asarray(dates, dtype="datetime64[D]")
        traded = np.asarray(traded, dtype=bool)
        feats = np.asarray(features, dtype=np.float32)
        days, n = traded.shape
        if feats.shape[:2] != (days, n) or len(dates) != days or len(instruments) != n:
            raise ValueError(f"shape mismatch: dates {len(dates)}, instruments {len(instruments)}, "
                             f"features {feats.shape}, traded {traded.shape}")
        if market is None:
            market = np.zeros((days, 0), np.float32)
        market = np.asarray(market, dtype=np.float32).reshape(days, -1)
        market_names = list(market_names or [f"m{i}" for i in range(market.shape[1])])
        if segments is None:
            segments = {"train": (dates[0], dates[-1]), "valid": (dates[-1], dates[-1]),
                        "test": (dates[-1], dates[-1]), "embargo_days": 0}
        seg = as_segments(segments)
        tr = train_day_mask(dates, seg)
        if normalize:
            med, scale = fit_robust(feats[tr][traded[tr]])
            mmed, mscale = fit_robust(market[tr])
        else:
            med, scale = np.zeros(feats.shape[2]), np.ones(feats.shape[2])
            mmed, mscale = np.zeros(market.shape[1]), np.ones(market.shape[1])
        stats = norm_stats(feature_names, med, scale, clip, mmed, mscale)
        if fingerprint is None:
            h = hashlib.sha256()
            for a in (dates, feats, traded, np.asarray(labels, np.float32), market):
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(json.dumps([list(map(str, instruments)), list(feature_names),
                                 sorted(members), seg.to_json(), window, clip, normalize]).encode())
            fingerprint = h.hexdigest()[:16]
        w = StoreWriter(root, fingerprint, dates, instruments, feature_names, market_names,
                        seg, window)
        x = apply_robust(feats, med, scale, clip) if normalize else np.nan_to_num(feats)
        x[~traded] = 0.0
        w.features[:] = x
        lab = np.asarray(labels, np.float32)
        execution = {"exec_ret": lab, "buy_ok": np.isfinite(lab), "short_ok": np.isfinite(lab),
                     "hold_ret": np.nan_to_num(lab), "sell_ok": np.isfinite(lab),
                     "at_limit": np.zeros(lab.shape, bool), **(execution or {})}
        w.finish(labels=labels, traded=traded, members=members, stats=stats,
                 market=apply_robust(market, mmed, mscale, clip) if normalize else market,
                 execution=execution)
        return cls(root)


class StoreWriter:
    """Writes a store into `<root>.tmp` and renames it to `root` on `finish()`."""

    def __init__(self, root, fingerprint, dates, instruments, feature_names, market_names,
                 segments: Segments, window: int, prefix_features: Path | None = None,
                 prefix_days: int = 0, prefix_chunks=None, capacity: int | None = None):
        """prefix_features: a features.f32 of the same C and D whose first `prefix_days` days
        are this store's first days (a store being extended). The new file is a hard link to
        it, grown for the new days: the old store reads only its own days (its memmap has its
        own shape), which are never written again, so both stay valid without copying
        gigabytes. A file already grown by another store (longer than prefix_days), or one that
        cannot be linked, is copied instead, cut to its prefix days: no two stores share days
        that either of them writes.
        prefix_chunks: else, an iterable of (k, C, D) float32 arrays, this store's first days,
        written sequentially before the file is mapped (faster than page faults through the map;
        figures in benchmarks/bench_store_extend.py).
        capacity: stock slots C >= N in the file (default N); `features` is the (Days, N, D) view."""
        self.root = Path(root)
        self.tmp = self.root.with_name(self.root.name + ".tmp")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.t0 = time.perf_counter()
        self.meta = {
            "fingerprint": fingerprint,
            "dates": [str(d) for d in np.asarray(dates, dtype="datetime64[D]")],
            "instruments": [str(s) for s in instruments],
            "feature_names": list(feature_names), "market_names": list(market_names),
            "segments": as_segments(segments).to_json(), "window": int(window),
        }
        n = len(instruments)
        cap = n if capacity is None else int(capacity)
        if cap < n:
            raise ValueError(f"capacity {cap} < {n} instruments")
        self.meta["capacity"] = cap
        shape = (len(dates), cap, len(feature_names))
        path = self.tmp / "features.f32"
        size = int(np.prod(shape)) * 4
        if prefix_features is None and prefix_chunks is None:
            # A fresh memmap is a sparse zero-filled file: stock-days never written stay 0.
            self._map(np.memmap(path, dtype=np.float32, mode="w+", shape=shape), n)
            return
        if prefix_features is not None:
            prefix = int(prefix_days) * int(np.prod(shape[1:])) * 4
            if prefix > size or Path(prefix_features).stat().st_size < prefix:
                raise ValueError(f"{prefix_features}: {prefix_days} days do not fit {shape}")
            linked = False
            if Path(prefix_features).stat().st_size == prefix:
                try:
                    os.link(prefix_features, path)
                    linked = True
                except OSError:
                    pass
            if not linked:
                shutil.copyfile(prefix_features, path)
                os.truncate(path, prefix)           # drop days another store appended
        else:
            with open(path, "wb") as f:
                for chunk in prefix_chunks:
                    if chunk.shape[1:] != shape[1:]:
                        raise ValueError(f"prefix chunk of shape {chunk.shape}, store {shape}")
                    f.write(np.ascontiguousarray(chunk, dtype=np.float32).data)
            if path.stat().st_size > size:
                raise ValueError("the prefix chunks hold more days than the store")
        os.truncate(path, size)                     # the new days: zeros until written
        self._map(np.memmap(path, dtype=np.float32, mode="r+", shape=shape), n)

    def _map(self, file: np.memmap, n: int) -> None:
        self._file = file
        self.features = file[:, :n]
        self._pages = _PageBudget(file)

    def count_written(self, rows: int) -> None:
        """`rows` feature rows were written through the map: past MAPPED_BYTES of pages they are
        dropped from the process (bounded RSS however big the store). On a shared file map
        the kernel moves a dropped page's dirty bit to the page cache, which writes it back:
        nothing written is lost, and `finish` flushes the file."""
        self._pages.add(rows)

    def finish(self, *, labels, traded, members: dict, stats: dict, market,
               execution: dict, extra_meta: dict | None = None) -> Path:
        traded = np.asarray(traded, dtype=bool)
        self._file.flush()
        del self.features, self._file
        np.save(self.tmp / "labels.npy", np.asarray(labels, dtype=np.float32))
        np.save(self.tmp / "traded.npy", traded)
        np.save(self.tmp / "market.npy", np.asarray(market, dtype=np.float32))
        if set(execution) != set(EXECUTION_ARRAYS):
            raise ValueError(f"execution arrays {sorted(execution)}, expected {EXECUTION_ARRAYS}")
        for k, dtype in zip(EXECUTION_ARRAYS, EXECUTION_DTYPES):
            a = np.asarray(execution[k], dtype=dtype)
            if a.shape != traded.shape:
                raise ValueError(f"execution array {k} of shape {a.shape}, traded {traded.shape}")
            np.save(self.tmp / f"{k}.npy", a)
        sets = dict(members)
        sets.setdefault("all", traded)
        for s, m in sets.items():
            if not s.replace("_", "").isalnum():
                raise ValueError(f"stock set name {s!r} must be alphanumeric")
            np.save(self.tmp / f"members_{s}.npy", np.asarray(m, dtype=bool) & traded)
        (self.tmp / "norm_stats.json").write_text(json.dumps(stats, indent=1))
        meta = dict(self.meta, stocksets=list(sets),
                    build_seconds=round(time.perf_counter() - self.t0, 2), **(extra_meta or {}))
        (self.tmp / "meta.json").write_text(json.dumps(meta))
        if self.root.exists():
            shutil.rmtree(self.root)
        self.tmp.rename(self.root)
        return self.root

