"""Fitting the two anchors (`lgbm`, `linear`): what `pipeline.train.fit_stack` is to the neural
models, for models that need no gradient loop.

Both read the same inputs as the neural models' last day: the store's normalised features of
each member of the stock set on day t (x[:, :, -1, :] of a `pipeline.loader.Batch`), gathered
straight from the memory-mapped file by index arithmetic (row t * capacity + j), a block of
days at a time. Labels as Qlib's Alpha158 workflow prepares them for learning: stocks without a
label dropped (DropnaLabel), then z-scored within each day (CSZScoreNorm: mean and std with
ddof=1 over the day's labelled members; a day with fewer than two, or all equal, is dropped).

    linear  ridge in closed form from sufficient statistics accumulated in float64 (memory
            O(D^2) whatever the segment length); one fit per penalty in `alphas`, the one with
            the best mean daily IC on the validation segment is kept
    lgbm    lightgbm.train with the validation segment (its labels z-scored the same way) as the
            early-stopping set, as Qlib's LGBModel does; the booster is cut at its best iteration.
            The training rows reach LightGBM as a `lightgbm.Sequence` over the memory-mapped
            file (read a batch at a time while it bins them), never as one float matrix: at
            D = 626 the shared data's train segment of `all` is ~12 GB of float32, its binned
            Dataset a quarter of that. The validation segment (a year) is gathered in memory.

Each returns a `pipeline.train.FitResult` with one history record (epoch 1), so the cell's
evaluation, logging and report treat an anchor as a one-epoch model. Deterministic for a
given seed (and, for lgbm, a given thread count).
"""
from __future__ import annotations

import os
import time
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from pipeline.evaluation.ic import ic_metrics
from pipeline.models.lgbm import LGBM
from pipeline.models.linear import Linear
from pipeline.train import FitResult

BLOCK_DAYS = 64          # days gathered per read from the features file (bounded memory)
SCORE_ROWS = 1 << 16     # rows per forward when an anchor scores gathered rows


def is_anchor(model) -> bool:
    """True for a model fitted here rather than by the torch training loop."""
    return bool(getattr(model, "anchor", False))


def _blocks(store, stockset: str, days) -> Iterator[tuple[np.ndarray, ...]]:
    """Blocks of member rows on `days`: x (n, D) float32 (the loader's last-day features), raw
    label y (n,) float32 (NaN = none) and the row's day index (n,)."""
    flat = store.flat_features()
    days = np.asarray(days, dtype=np.int64)
    for a in range(0, len(days), BLOCK_DAYS):
        rows, traded, y, day = _row_index(store, stockset, days[a:a + BLOCK_DAYS])
        yield _gather(store, flat, rows, traded), y, day


def _gather(store, flat, rows: np.ndarray, traded: np.ndarray) -> np.ndarray:
    """Features of file rows `rows` (n, D) float32, zero where not traded (as the loader); the
    pages read count towards the store's release (bounded RSS, store.arrays)."""
    x = np.asarray(flat[rows], dtype=np.float32)
    store.count_read(len(x))
    x *= traded[:, None]
    return x


def _row_index(store, stockset: str, days) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The member rows of `days` as `_blocks` orders them, without their features: file row
    (day * capacity + stock), traded (n,) bool, raw label (n,) float32 and day index (n,)."""
    days = np.asarray(days, dtype=np.int64)
    pos, inst = np.nonzero(store.members[stockset][days])
    day = days[pos]
    return (day * store.capacity + inst, store.traded[day, inst],
            np.asarray(store.labels[day, inst], dtype=np.float32), day)


def _row_sequence(store, rows: np.ndarray, traded: np.ndarray):
    """A `lightgbm.Sequence` of the features of file rows `rows` (zero where not traded, as the
    loader), read from the memory map as LightGBM asks for them."""
    import numbers

    import lightgbm as lgb

    flat = store.flat_features()

    class Rows(lgb.Sequence):
        batch_size = 1 << 14

        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, idx):
            if isinstance(idx, numbers.Integral):     # the bin sample: LightGBM wants float64
                return np.asarray(flat[rows[idx]], dtype=np.float64) * traded[idx]
            sel = idx if isinstance(idx, slice) else np.asarray(idx, np.int64)
            return _gather(store, flat, rows[sel], traded[sel])

    return Rows()


def _rows(store, stockset: str, days) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = list(_blocks(store, stockset, days))
    if not parts:
        return np.zeros((0, len(store.feature_names)), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return tuple(np.concatenate(p) for p in zip(*parts))


def cs_zscore(y: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Qlib's DropnaLabel + CSZScoreNorm: (keep (n,) bool, z (keep.sum(),) float64), z-scored
    within each day over the labelled rows (std ddof=1); days where it is undefined are dropped."""
    has = np.isfinite(y)
    s = pd.Series(y[has].astype(np.float64))
    g = s.groupby(day[has])
    z = ((s - g.transform("mean")) / g.transform("std")).to_numpy()
    ok = np.isfinite(z)
    keep = has.copy()
    keep[has] = ok
    return keep, z[ok]


@torch.no_grad()
def _score_rows(model, x: np.ndarray) -> np.ndarray:
    """The model's own forward on gathered rows (one day of n 'stocks', a window of 1)."""
    out = []
    for a in range(0, len(x), SCORE_ROWS):
        xb = torch.from_numpy(x[a:a + SCORE_ROWS])[None, :, None, :]        # (1, n, 1, D)
        out.append(model(xb, torch.ones(xb.shape[:2], dtype=torch.bool))[0][0].numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _ic(score: np.ndarray, label: np.ndarray, day: np.ndarray) -> dict[str, float]:
    return ic_metrics(pd.DataFrame({"date": day, "score": score, "label": label}))


def _fit_linear(model: Linear, store, stockset: str, train_days, valid: tuple) -> dict:
    """Ridge on z-scored labels, alpha = a * n for each a in cfg.alphas; keeps the best valid IC."""
    d = len(store.feature_names)
    n, sx, sy, sxx, sxy, syy = 0, np.zeros(d), 0.0, np.zeros((d, d)), np.zeros(d), 0.0
    for x, y, day in _blocks(store, stockset, train_days):
        keep, z = cs_zscore(y, day)        # each block holds whole days: the z-score is per day
        xk = x[keep].astype(np.float64)
        n += len(z)
        sx += xk.sum(0)
        sy += z.sum()
        sxx += xk.T @ xk
        sxy += xk.T @ z
        syy += z @ z
    if n < 2:
        raise ValueError(f"linear anchor: {n} labelled training rows for {stockset!r}")
    mx, my = sx / n, sy / n
    cxx = sxx - n * np.outer(mx, mx)       # centred: the intercept is not penalised
    cxy = sxy - n * mx * my
    xv, yv, dv = valid
    best = None
    for a in model.cfg.alphas:
        w = np.linalg.lstsq(cxx + a * n * np.eye(d), cxy, rcond=None)[0]   # lstsq: OLS may be singular
        b = my - mx @ w
        model.set_weights(w, b)
        ic = _ic(_score_rows(model, xv), yv, dv)["ic"]
        score = ic if np.isfinite(ic) else -np.inf
        if best is None or score > best[0]:
            best = (score, a, w, b)
    _, a, w, b = best
    model.set_weights(w, b)
    # Mean squared error on the z-scored train labels, from the same sums.
    sse = syy - 2 * w @ sxy - 2 * b * sy + w @ sxx @ w + 2 * b * w @ sx + n * b * b
    return {"train_loss": float(sse / n), "ridge_alpha": float(a), "train_rows": n}


def _fit_lgbm(model: LGBM, store, stockset: str, train_days, valid: tuple, seed: int) -> dict:
    """lightgbm.train on z-scored train labels, early stopping on the z-scored valid labels."""
    import lightgbm as lgb

    cfg = model.cfg
    rows, traded, y, day = _row_index(store, stockset, train_days)
    keep, z = cs_zscore(y, day)
    xv, yv, dv = valid
    vkeep, zv = cs_zscore(yv, dv)
    if not len(z) or not len(zv):
        raise ValueError(f"lgbm anchor: {len(z)} train and {len(zv)} valid labelled rows for {stockset!r}")
    params = {"objective": cfg.loss, "verbosity": -1, "colsample_bytree": cfg.colsample_bytree,
              "learning_rate": cfg.learning_rate, "subsample": cfg.subsample,
              "lambda_l1": cfg.lambda_l1, "lambda_l2": cfg.lambda_l2, "max_depth": cfg.max_depth,
              "num_leaves": cfg.num_leaves, "num_threads": cfg.num_threads or os.cpu_count() or 1,
              "seed": int(seed), "deterministic": True, "force_row_wise": True}
    dtrain = lgb.Dataset(_row_sequence(store, rows[keep], traded[keep]), label=z, free_raw_data=True)
    dvalid = lgb.Dataset(xv[vkeep], label=zv, reference=dtrain, free_raw_data=True)
    evals: dict = {}
    booster = lgb.train(params, dtrain, num_boost_round=cfg.num_boost_round,
                        valid_sets=[dtrain, dvalid], valid_names=["train", "valid"],
                        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False),
                                   lgb.record_evaluation(evals)])
    best = booster.best_iteration or booster.current_iteration()
    model.set_booster(booster.model_to_string(num_iteration=best))
    metric = next(iter(evals["train"]))                     # "l2" for the mse objective
    return {"train_loss": float(evals["train"][metric][best - 1]),
            "valid_loss": float(evals["valid"][metric][best - 1]),
            "best_iteration": best, "train_rows": len(z)}


def fit_anchor(model, cell, store, *, progress: bool = False) -> FitResult:
    """Fit anchor `model` in place on `cell` (a `pipeline.train.StackCell`: stockset, seed,
    train_days, valid_days) of `store`. Returns a FitResult with one history record: epoch 1,
    train_loss (MSE on the z-scored train labels), train_ic, valid_ic, valid_rank_ic,
    epoch_seconds, train_seconds, and best_iteration (lgbm) or ridge_alpha (linear)."""
    t0, c0 = time.perf_counter(), time.process_time()
    train_days = store.segment_days("train") if cell.train_days is None else cell.train_days
    valid_days = store.segment_days("valid") if cell.valid_days is None else cell.valid_days
    valid = _rows(store, cell.stockset, valid_days)
    model.cpu().eval()
    if isinstance(model, Linear):
        rec = _fit_linear(model, store, cell.stockset, train_days, valid)
    elif isinstance(model, LGBM):
        rec = _fit_lgbm(model, store, cell.stockset, train_days, valid, cell.seed)
    else:
        raise TypeError(f"{type(model).__name__} is not an anchor")
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
    vm = _ic(_score_rows(model, valid[0]), valid[1], valid[2])
    rows = rec.pop("train_rows")
    # train IC on the raw labels (per day the same as on the z-scored ones), a block at a time
    parts = [(_score_rows(model, x), y, day) for x, y, day in _blocks(store, cell.stockset, train_days)]
    train_ic = _ic(*(np.concatenate(p) for p in zip(*parts)))["ic"]
    record = {"epoch": 1, **rec, "train_ic": train_ic, "valid_ic": vm["ic"],
              "valid_rank_ic": vm["rank_ic"], "epoch_seconds": time.perf_counter() - t0,
              "train_seconds": t_train}
    if progress:
        print(f"{type(model).__name__.lower()} anchor on {cell.stockset}: valid IC {vm['ic']:.4f} "
              f"({t_train:.1f} s)")
    return FitResult(history=[record], best_epoch=1, best_valid_ic=vm["ic"], epochs_run=1,
                     train_stock_days=rows, train_seconds=t_train, train_cpu_seconds=c_train)
