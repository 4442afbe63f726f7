"""Build the tensor store from the warehouse (`pipeline.store.build_store` delegates here).

Day and stock indices are assigned in SQL (temp tables `store_cal`, `store_inst`), so only
integers and floats cross into numpy. Features stream from DuckDB in Arrow record batches and
are scattered straight into the memory-mapped array: memory stays bounded whatever the width
(158 Alpha158 columns or a 626-column panel), and every row is normalised once, on the way
in, with statistics fitted beforehand on a hash sample of train-segment rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np

from pipeline.errors import MigaError
from pipeline.features.build import build_features, open_warehouse
from pipeline.normalize import apply_robust, fit_robust
from pipeline.store import FIT_SAMPLE_ROWS, StoreWriter, TensorStore, _seg_dict, _stats_dict
from pipeline.warehouse import SQL_DIR, run_sql, sql_text, table_exists, table_fingerprint

log = logging.getLogger(__name__)

STORE_VERSION = 1          # bump when the layout or the build's semantics change
BATCH_BYTES = 64 << 20     # Arrow batch size when streaming features (~64 MB of doubles)
FIT_BYTES = 256 << 20      # at most this much sample for the normalisation fit


def _data_fingerprint(con) -> str:
    try:
        from pipeline.data.ingest import data_fingerprint
        return data_fingerprint(con)
    except ImportError:  # pragma: no cover - the ingest module is part of the project
        known = ("prices", "membership", "index_prices", "feature_panel")
        return ";".join(table_fingerprint(con, t, known) for t in known)


def store_fingerprint(con, config) -> str:
    """Hash of the warehouse inputs, the feature source and SQL, the segments and data config."""
    sources = con.execute("SELECT name, source FROM feature_builds ORDER BY name").fetchall() \
        if table_exists(con, "feature_builds") else []
    sql_hash = hashlib.sha256(b"".join(
        p.read_bytes() for p in sorted((SQL_DIR / "features").glob("*.sql")))).hexdigest()[:16]
    blob = json.dumps({
        "data": _data_fingerprint(con), "sources": sources, "sql": sql_hash,
        "segments": config.fingerprint("segments"), "data_config": config.fingerprint("data"),
        "version": STORE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def open_store_for(settings, config) -> TensorStore:
    con = open_warehouse(settings)
    try:
        fp = store_fingerprint(con, config)
    finally:
        con.close()
    root = settings.store_dir / fp
    if not (root / "meta.json").is_file():
        raise MigaError(f"no tensor store for this warehouse and config (fingerprint {fp}): "
                        "run `miga store` first")
    return TensorStore(root)


def build_store_from_warehouse(settings, config, force: bool = False) -> TensorStore:
    build_features(settings, config)  # a no-op when the feature tables are current
    con = open_warehouse(settings)
    try:
        fp = store_fingerprint(con, config)
        root = settings.store_dir / fp
        if (root / "meta.json").is_file() and not force:
            log.info("tensor store %s is current", fp)
            return TensorStore(root)
        _write(con, root, fp, config)
    finally:
        con.close()
    return TensorStore(root)


def _rel(con, name: str, params: dict | None = None):
    """A relation on `sql/<name>.sql`: Arrow output without the DB-API result's extra copy."""
    return con.sql(sql_text(name), params=params or None)


def _pairs(con, name: str, params: dict | None = None):
    cols = run_sql(con, name, params).fetchnumpy()
    return [np.asarray(v) for v in cols.values()]


def _write(con, root, fp: str, config) -> None:
    t0 = time.perf_counter()
    run_sql(con, "features/store_calendar")
    run_sql(con, "features/store_instruments")
    dates = np.asarray(con.execute("SELECT date FROM store_cal ORDER BY di").fetchnumpy()["date"],
                       dtype="datetime64[D]")
    instruments = [r[0] for r in con.execute("SELECT instrument FROM store_inst ORDER BY ji").fetchall()]
    days, n = len(dates), len(instruments)
    seg = _seg_dict(config.segments)
    window = config.data.window

    traded = np.zeros((days, n), bool)
    di, ji = _pairs(con, "features/store_traded")
    traded[di, ji] = True
    labels = np.full((days, n), np.nan, np.float32)
    di, ji, y = _pairs(con, "features/store_labels")
    labels[di, ji] = y
    members = {}
    have = {r[0] for r in run_sql(con, "features/store_stocksets").fetchall()} \
        if table_exists(con, "membership") else set()
    for s in config.data.stocksets:
        m = np.zeros((days, n), bool)
        if s in have:
            di, ji = _pairs(con, "features/store_members", {"stockset": s})
            m[di, ji] = True
        else:
            log.warning("stock set %s has no membership rows: its mask is empty", s)
        members[s] = m

    train = (dates >= np.datetime64(seg["train"][0], "D")) & (dates <= np.datetime64(seg["train"][1], "D"))
    mk = _rel(con, "features/store_market").to_arrow_table()
    market_names = mk.column_names[1:]
    market = np.full((days, len(market_names)), np.nan, np.float32)
    if mk.num_rows:
        market[mk.column("di").to_numpy()] = np.column_stack(
            [mk.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in market_names])
    mmed, mscale = fit_robust(market[train])
    clip = config.data.clip
    market = apply_robust(market, mmed, mscale, clip)

    # Normalisation: fitted on train-segment rows only (hash sample, deterministic).
    a, b = seg["train"]
    n_train = run_sql(con, "features/store_count_between", {"start": a, "end": b}).fetchall()[0][0]
    width = len(_feature_columns(con))
    every = max(1, n_train // min(FIT_SAMPLE_ROWS, FIT_BYTES // (8 * width)))
    sample = _rel(con, "features/store_fit_sample", {"start": a, "end": b, "every": every}).to_arrow_table()
    feature_names = sample.column_names
    med, scale = fit_robust(_to_matrix(sample, feature_names))
    log.info("normalisation fitted on %d train rows (1 in %d)", sample.num_rows, every)

    writer = StoreWriter(root, fp, dates, instruments, feature_names, market_names, seg, window)
    reader = _rel(con, "features/store_features").to_arrow_reader(max(1024, BATCH_BYTES // (8 * width)))
    rows = 0
    for batch in reader:
        di = batch.column(0).to_numpy()
        ji = batch.column(1).to_numpy()
        x = apply_robust(_to_matrix(batch, feature_names, offset=2), med, scale, clip)
        keep = traded[di, ji]  # a panel row for a day the stock has no price is not a sample
        writer.features[di[keep], ji[keep]] = x[keep]
        rows += len(di)
    stats = _stats_dict(feature_names, med, scale, clip, mmed, mscale)
    writer.finish(labels=labels, traded=traded, members=members, stats=stats, market=market,
                  extra_meta={"feature_rows": rows, "fit_rows": sample.num_rows})
    log.info("tensor store %s: %d days x %d stocks x %d features in %.1f s", fp, days, n,
             len(feature_names), time.perf_counter() - t0)


def _feature_columns(con) -> list[str]:
    return [r[0] for r in con.execute("DESCRIBE features").fetchall()
            if r[0] not in ("date", "instrument")]


def _to_matrix(table, names, offset: int = 0) -> np.ndarray:
    """Arrow columns -> (rows, D) float32, NULL -> NaN."""
    out = np.empty((table.num_rows, len(names)), np.float32)
    for k in range(len(names)):
        out[:, k] = table.column(offset + k).to_numpy(zero_copy_only=False)
    return out
