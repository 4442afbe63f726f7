"""Build the tensor store from the warehouse: in full, by extending the previous store, and prune.

Day and stock indices are assigned in SQL (temp tables `store_cal`, `store_inst`, from
`sql/store/`), so only integers and floats cross into numpy. Features stream from DuckDB in
Arrow record batches and are scattered straight into the memory-mapped array: memory stays
bounded whatever the width (158 Alpha158 columns or a 626-column panel), and every row is
normalised once, on the way in, with statistics fitted beforehand on a hash sample of
train-segment rows.

The store's fingerprint hashes the warehouse inputs (`pipeline.data.ingest.data_fingerprint`),
the feature sources and SQL, the segments and the data config. A caller that knows the
fingerprint (the flow's tensor-store step returns it) opens the store with `open_store`;
`current_store` derives it from the warehouse (the CLI, which knows nothing yet).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np

from pipeline.data.dated_files import prefix_key
from pipeline.data.ingest import data_fingerprint
from pipeline.errors import MigaError
from pipeline.features.build import build_features
from pipeline.normalize import apply_robust, fit_robust
from pipeline.store.arrays import StoreWriter, TensorStore, norm_stats, train_day_mask
from pipeline.warehouse import (SQL_DIR, columns, first_row, open_warehouse, query_sql, run_sql,
                                table_exists, table_fingerprint, warehouse)

log = logging.getLogger(__name__)

STORE_VERSION = 5          # bump when the layout or the build's semantics change (3: meta.json
                           # records version and config_key, which _prune reads; 4: execution
                           # arrays for the backtest's tradable rule; 5: hold_ret, sell_ok,
                           # at_limit for the TopkDropout account)
FIT_SAMPLE_ROWS = 400_000  # stock-days used to fit the robust statistics
BATCH_BYTES = 64 << 20     # Arrow batch size when streaming features (64 MiB of doubles)
FIT_BYTES = 256 << 20      # at most this much sample for the normalisation fit
KEEP_STORES = 2            # per config: the current store and the previous one (see _prune)
SPARE_SLOTS = 1 / 16       # spare stock slots in a new features file (at least MIN_SPARE): the
MIN_SPARE = 16             # stocks that list later fill them without rewriting the old days
SQL_FOLDERS = ("features", "store")   # the definitions a store is built from
RECOMPUTE_DAYS = 2         # an extension's stock-day arrays: the old store's last days recomputed
                           # (the furthest a day's label or execution fact looks ahead; see above
                           # _config_key)


def stock_slots(n: int) -> int:
    """Stock slots of a new features file for n stocks (n + n/16: on the shared data about a
    year of listings)."""
    return n + max(MIN_SPARE, int(n * SPARE_SLOTS))


def sql_hash() -> str:
    """Hash of every sql/features and sql/store file: a changed definition makes a new store."""
    files = sorted(p for d in SQL_FOLDERS for p in (SQL_DIR / d).glob("*.sql"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]


def _feature_sources(con) -> list[tuple[str, str]]:
    """(table, source) of every feature table `miga features` built (part of the fingerprint)."""
    return run_sql(con, "store/feature_sources").fetchall() if table_exists(con, "feature_builds") else []


def _features_source(con) -> list[tuple[str, str]]:
    """The `features` table's entry alone (the static key: not labels or market features)."""
    return [r for r in _feature_sources(con) if r[0] == "features"]


def store_fingerprint(con, config, data_fp: str | None = None) -> str:
    """Hash of the warehouse inputs, the feature source and SQL, the segments and data config.
    data_fp: the warehouse's `data_fingerprint`, when the caller has it already."""
    return _digest(data=data_fp or data_fingerprint(con), sources=_feature_sources(con),
                   sql=sql_hash(), config=_config_key(config))


def _digest(**parts) -> str:
    """Short hash of the parts and STORE_VERSION (the store fingerprint and its static key)."""
    blob = json.dumps({**parts, "version": STORE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def open_store(settings, fingerprint: str) -> TensorStore:
    """The built store with this fingerprint (MigaError if there is none)."""
    root = settings.store_dir / fingerprint
    if not (root / "meta.json").is_file():
        raise MigaError(f"no tensor store {fingerprint} in {settings.store_dir}: run `miga store` first")
    return TensorStore(root)


def current_store(settings, config) -> TensorStore:
    """The built store of the current warehouse and `config` (MigaError if not built yet)."""
    with warehouse(settings, read_only=True) as con:
        fp = store_fingerprint(con, config)
    if not (settings.store_dir / fp / "meta.json").is_file():
        raise MigaError(f"no tensor store for this warehouse and config (fingerprint {fp}): "
                        "run `miga store` first")
    return TensorStore(settings.store_dir / fp)


def built_stores(settings, configs: dict) -> dict[str, Path]:
    """name -> the root of the built store of each of `configs` (name -> Config) on the current
    warehouse, for those that have one (the warehouse opened and fingerprinted once)."""
    with warehouse(settings, read_only=True) as con:
        data_fp = data_fingerprint(con)
        roots = {n: settings.store_dir / store_fingerprint(con, cfg, data_fp) for n, cfg in configs.items()}
    return {n: root for n, root in roots.items() if (root / "meta.json").is_file()}


def build_store(settings, config, force: bool = False) -> TensorStore:
    """Build (or reuse) the tensor store for `config` from the warehouse's feature tables."""
    build_features(settings, config)  # a no-op when the feature tables are current
    con = open_warehouse(settings)
    try:
        data_fp = data_fingerprint(con)
        fp = store_fingerprint(con, config, data_fp)
        root = settings.store_dir / fp
        if (root / "meta.json").is_file() and not force:
            log.info("tensor store %s is current", fp)
            return TensorStore(root)
        key = _static_key(con, config)
        base = None if force else _extendable(con, settings, config, key)
        _write(con, root, fp, data_fp, config, key, base)
        _prune(settings, root, key, _config_key(config))
    finally:
        con.close()
    return TensorStore(root)


def _prune(settings, current: Path, key: str, config_key: str) -> None:
    """Stores are caches (several GB each on real data) and a daily run makes a new one: of the
    stores with this config's static key, keep the newest KEEP_STORES (the current one and the
    one it extends), delete the others. Also delete the stores no build can use again: those
    of an older STORE_VERSION (its fingerprints never match), and those of this same config
    (segments, data config) under another static key (an older feature SQL or source: a build
    of this config now makes the current key). Stores of other configs stay."""
    stores = _stores(settings)
    same = sorted(((root == current, meta.get("last_date") or "", (root / "meta.json").stat().st_mtime,
                    root) for root, meta in stores if meta.get("static_key") == key), reverse=True)
    stale = [root for *_, root in same[KEEP_STORES:]]
    stale += [root for root, meta in stores if root != current and meta.get("static_key") != key
              and (meta.get("version", 0) < STORE_VERSION or meta.get("config_key") == config_key)]
    for root in stale:
        # a features file hard-linked by a newer store is not freed: count unshared files only
        freed = sum(st.st_size for f in root.iterdir() if f.is_file() and (st := f.stat()).st_nlink == 1)
        shutil.rmtree(root, ignore_errors=True)
        log.info("removed the old tensor store %s (%.1f GB freed)", root.name, freed / 2**30)


def _pairs(con, name: str, params: dict | None = None):
    cols = run_sql(con, name, params).fetchnumpy()
    return [np.asarray(v) for v in cols.values()]


# ------------------------------------------------------------------ extending a store
# After `miga ingest` of new days, `miga features` extends the feature table (old rows are
# unchanged: a feature of day t reads prices up to t only). The store then extends the
# previous store instead of re-reading every row from DuckDB: the old days' normalised
# features are reused (a hard link to the old file, grown for the new days; see StoreWriter), only
# the new days are read and normalised with the same statistics, and the (Days, N) arrays of
# stock-days (traded, labels, the execution arrays, stock sets) are read from the warehouse
# for the last days only (see below); the market features, tiny, in full. The result is exactly
# what a rebuild makes. It applies when nothing but new days came (or no new day, but other
# stock-set memberships or index levels):
#   - same static key (feature source and SQL, segments, data config, store version),
#   - the prices up to the old store's last day hash the same (history not rewritten),
#   - the old calendar is a prefix of the new one, the old stocks are among the new ones,
#   - the train segment ends within the old days (so the fitted statistics are the same),
#   - for a feature panel (`features` a view on `feature_panel`): its rows up to the old store's
#     last day are unchanged (`pipeline.data.dated_files.prefix_key`, recorded in meta.json as
#     `panel_prefix_fp`). A panel can change any row: a change inside the old days rebuilds.
# Stocks that list in the new days: the stock axis is in order of first trading day
# (sql/features/store_instruments.sql), so they come after the old stocks and take spare slots
# of the old file (stock_slots); their old days stay zeros (not traded). Only when the spare
# slots run out are the old days rewritten, sequentially, into a file with new spare slots.
# The stock-day arrays: of the old store's days, those from lo = old days - RECOMPUTE_DAYS on
# are recomputed with the new days; the days before lo are copied from the old store (onto the
# new stock axis; a new stock's old days: not traded, no label). K = RECOMPUTE_DAYS = 2 is the
# furthest any of them looks ahead: the label, exec_ret and hold_ret of day t read days t+1 and
# t+2, buy_ok, short_ok, sell_ok and at_limit day t+1, traded and the stock sets day t itself.
# A day t < lo (t + 2 <= the old last day) thus reads old days only, which the prices prefix
# check found unchanged, and its value in the old store is final; the old store's last two
# days were not known yet (no label, NaN, False) and become known with the new days. Looking
# back is unbounded (a day's limit price reads the stock's previous row, hold_ret the last
# traded price, however long ago): sql/store/day_facts.sql gives each stock's last row before
# lo with the rows of days >= lo. A day's stock sets also read the membership table, which an
# ingest re-delivers and may revise anywhere in the past: they are copied only when it hashes
# as it did for the old store (`membership_fp` in meta.json), else recomputed in full.

def _config_key(config) -> str:
    """What of the config a store depends on (segments, data config): in the fingerprint and the
    static key, and recorded in meta.json as `config_key`, which _prune compares."""
    return config.fingerprint("segments", "data")


def _static_key(con, config) -> str:
    return _digest(sources=_features_source(con), sql=sql_hash(), config=_config_key(config))


def _stores(settings) -> list[tuple[Path, dict]]:
    """(folder, meta) of the complete stores in the home folder (a build in progress has no
    meta.json yet)."""
    out = []
    for meta_path in settings.store_dir.glob("*/meta.json"):
        try:
            out.append((meta_path.parent, json.loads(meta_path.read_text())))
        except (OSError, ValueError):
            continue
    return out


def _stores_with_key(settings, key: str) -> list[tuple[Path, dict]]:
    """(folder, meta) of the complete stores in the home folder with this static key."""
    return [(root, meta) for root, meta in _stores(settings) if meta.get("static_key") == key]


def _is_panel(con) -> bool:
    """The `features` table is the view on an ingested feature panel (not Alpha158)."""
    src = _features_source(con)
    return bool(src) and str(src[0][1]) == "feature_panel"


def _extendable(con, settings, config, key: str) -> TensorStore | None:
    """The newest store this one can extend (see above), or None: build in full."""
    src = _features_source(con)
    panel = _is_panel(con)
    if not src or not (panel or str(src[0][1]).startswith("alpha158")):
        return None
    last = first_row(con, "features/prices_last_date")[0]
    train_end = np.datetime64(config.segments.train[1], "D")
    candidates = []
    for root, meta in _stores_with_key(settings, key):
        old_last = meta.get("last_date")
        if not old_last or old_last > str(last) or np.datetime64(old_last, "D") < train_end:
            continue
        candidates.append((old_last, root, meta))
    for old_last, root, meta in sorted(candidates, key=lambda c: c[0], reverse=True):
        through = date.fromisoformat(old_last)
        if prefix_key(con, "prices", through) != meta.get("prices_prefix_fp"):
            continue
        if panel and (meta.get("panel_prefix_fp") is None
                      or prefix_key(con, "feature_panel", through) != meta["panel_prefix_fp"]):
            continue
        return TensorStore(root)
    return None


def _write(con, root, fp: str, data_fp: str, config, key: str,
           base: TensorStore | None = None) -> None:
    """Write the store for the warehouse's current data: in full, or by extending `base`."""
    t0 = time.perf_counter()
    run_sql(con, "store/calendar")
    run_sql(con, "store/instruments")
    dates = np.asarray(run_sql(con, "store/calendar_dates").fetchnumpy()["date"], dtype="datetime64[D]")
    instruments = [r[0] for r in run_sql(con, "store/instrument_names").fetchall()]
    if base is not None:
        old_days = len(base.dates)
        if (old_days > len(dates) or not np.array_equal(base.dates, dates[:old_days])
                or not set(base.instruments) <= set(instruments)
                or base.feature_names != _feature_columns(con)):
            log.info("tensor store %s cannot be extended (calendar, stocks or features differ): "
                     "building in full", base.fingerprint)
            base = None
    days, n = len(dates), len(instruments)
    seg = config.segments
    window = config.data.window
    clip = config.data.clip
    membership_fp = table_fingerprint(con, "membership", ("membership",))
    traded, labels, members, execution = _stock_days(con, config, instruments, days, membership_fp, base)
    market, market_names, mmed, mscale = _market(con, config, dates, seg)

    if base is None:
        # Normalisation: fitted on train-segment rows only (hash sample, deterministic).
        a, b = seg.train
        n_train = first_row(con, "store/count_between", {"start": a, "end": b})[0]
        width = len(_feature_columns(con))
        every = max(1, n_train // min(FIT_SAMPLE_ROWS, FIT_BYTES // (8 * width)))
        sample = query_sql(con, "store/fit_sample", {"start": a, "end": b, "every": every}).to_arrow_table()
        feature_names = sample.column_names
        med, scale = fit_robust(_to_matrix(sample, feature_names))
        fit_rows, first_new = sample.num_rows, 0
        log.info("normalisation fitted on %d train rows (1 in %d)", sample.num_rows, every)
        writer = StoreWriter(root, fp, dates, instruments, feature_names, market_names, seg, window,
                             capacity=stock_slots(n))
    else:
        feature_names = base.feature_names
        med = np.asarray(base.norm_stats["median"])
        scale = np.asarray(base.norm_stats["scale"])
        fit_rows, first_new = base.meta.get("fit_rows"), len(base.dates)
        old_n = len(base.instruments)
        fits = list(base.instruments) == instruments[:old_n] and n <= base.capacity
        cap = base.capacity if fits else stock_slots(n)
        writer = StoreWriter(root, fp, dates, instruments, feature_names, market_names, seg, window,
                             prefix_features=base.root / "features.f32" if fits else None,
                             prefix_days=first_new, capacity=cap,
                             prefix_chunks=None if fits else _moved(base, instruments, cap))
        log.info("extending tensor store %s: %d old days (%s), %d new days, %d new stocks",
                 base.fingerprint, first_new, "file linked" if fits else "rewritten, spare slots used up",
                 days - first_new, n - old_n)

    width = len(feature_names)
    reader = query_sql(con, "store/features", {"from_day": first_new}).to_arrow_reader(
        max(1024, BATCH_BYTES // (8 * width)))
    rows = 0
    for batch in reader:
        di = batch.column(0).to_numpy()
        ji = batch.column(1).to_numpy()
        x = apply_robust(_to_matrix(batch, feature_names, offset=2), med, scale, clip)
        keep = traded[di, ji]  # a panel row for a day the stock has no price is not a sample
        writer.features[di[keep], ji[keep]] = x[keep]
        writer.count_written(int(keep.sum()))
        rows += len(di)
    stats = norm_stats(feature_names, med, scale, clip, mmed, mscale)
    last = str(dates[-1]) if days else None
    extra = {"feature_rows": rows + (base.meta.get("feature_rows", 0) if base is not None else 0),
             "fit_rows": fit_rows, "static_key": key, "last_date": last, "data_fingerprint": data_fp,
             "version": STORE_VERSION, "config_key": _config_key(config), "membership_fp": membership_fp,
             "prices_prefix_fp": prefix_key(con, "prices", date.fromisoformat(last)) if last else None,
             "panel_prefix_fp": prefix_key(con, "feature_panel", date.fromisoformat(last))
             if last and _is_panel(con) else None,
             "extended_from": base.fingerprint if base is not None else None}
    writer.finish(labels=labels, traded=traded, members=members, stats=stats, market=market,
                  execution=execution, extra_meta=extra)
    log.info("tensor store %s: %d days x %d stocks x %d features in %.1f s%s", fp, days, n,
             len(feature_names), time.perf_counter() - t0,
             f" (extended {base.fingerprint})" if base is not None else "")


def _moved(base: TensorStore, instruments: list[str], capacity: int, days: int = 64):
    """The old store's days on the new stock axis of `capacity` slots (new stocks: zeros), in chunks."""
    runs = _runs(list(base.instruments), instruments)
    buf = np.zeros((days, capacity, len(base.feature_names)), np.float32)
    for a in range(0, len(base.dates), days):
        b = min(a + days, len(base.dates))
        chunk = buf[: b - a]
        chunk[:] = 0
        for old0, old1, new0 in runs:
            chunk[:, new0:new0 + old1 - old0] = base.features[a:b, old0:old1]
        base.count_read((b - a) * base.capacity)
        yield chunk


def _runs(old: list[str], new: list[str]) -> list[tuple[int, int, int]]:
    """(old start, old end, new start) of the runs of consecutive old stocks that stay
    consecutive on the new axis: a few slice copies instead of a gather per stock."""
    where = {s: j for j, s in enumerate(new)}
    out = []
    for i, s in enumerate(old):
        j = where[s]
        if out and out[-1][1] == i and out[-1][2] + (i - out[-1][0]) == j:
            out[-1] = (out[-1][0], i + 1, out[-1][2])
        else:
            out.append((i, i + 1, j))
    return out


def _stock_days(con, config, instruments: list[str], days: int, membership_fp: str,
                base: TensorStore | None):
    """traded, labels, stock-set members and the execution arrays, (Days, N) each: in full, or,
    extending `base`, its days before lo copied and the days from lo on read (see above
    _config_key; the stock sets in full when the membership table changed)."""
    n = len(instruments)
    lo = 0 if base is None else max(0, len(base.dates) - RECOMPUTE_DAYS)
    sets_lo = lo if base is not None and base.meta.get("membership_fp") == membership_fp else 0
    traded = _mask(con, "store/traded", days, n, lo)
    labels = np.full((days - lo, n), np.nan, np.float32)
    di, ji, y = _pairs(con, "store/labels", {"from_day": lo})
    labels[di - lo, ji] = y
    members = {}
    have = {r[0] for r in run_sql(con, "store/stocksets").fetchall()} \
        if table_exists(con, "membership") else set()
    for s in config.data.stocksets:
        if s in have:
            members[s] = _mask(con, "store/members", days, n, sets_lo, stockset=s)
        else:
            log.warning("stock set %s has no membership rows: its mask is empty", s)
            members[s] = np.zeros((days - sets_lo, n), bool)
    execution = execution_arrays(days, n, *_pairs(con, "store/day_facts", {"from_day": lo}), start=lo)
    if base is not None:
        runs = _runs(list(base.instruments), instruments)
        traded = _after_old_days(traded, base.traded, lo, runs)
        labels = _after_old_days(labels, base.labels, lo, runs)
        members = {s: _after_old_days(m, base.members[s], sets_lo, runs) for s, m in members.items()}
        execution = {k: _after_old_days(a, base.execution[k], lo, runs) for k, a in execution.items()}
    return traded, labels, members, execution


def _mask(con, name: str, days: int, n: int, lo: int, **params) -> np.ndarray:
    """(days - lo, N) bool: the (day, stock) index pairs of days >= lo that sql `name` returns."""
    m = np.zeros((days - lo, n), bool)
    di, ji = _pairs(con, name, {"from_day": lo, **params})
    m[di - lo, ji] = True
    return m


def _after_old_days(recent: np.ndarray, old: np.ndarray, lo: int, runs) -> np.ndarray:
    """(Days, N): the old store's array `old` for the days before lo, on the new stock axis
    (`_runs`; a new stock has no price row on those days: NaN / False, as in a rebuild), then
    `recent`, the days from lo on."""
    if lo == 0:
        return recent
    out = np.empty((lo + len(recent), recent.shape[1]), recent.dtype)
    out[:lo] = np.nan if recent.dtype.kind == "f" else 0
    for old0, old1, new0 in runs:
        out[:lo, new0:new0 + old1 - old0] = old[:lo, old0:old1]
    out[lo:] = recent
    return out


def _market(con, config, dates, seg):
    """The market features (Days, M), normalised with statistics fitted on the train days, in
    full (one row a day), their names and the statistics."""
    days = len(dates)
    train = train_day_mask(dates, seg)
    mk = query_sql(con, "store/market").to_arrow_table()
    market_names = mk.column_names[1:]
    market = np.full((days, len(market_names)), np.nan, np.float32)
    if mk.num_rows:
        market[mk.column("di").to_numpy()] = np.column_stack(
            [mk.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in market_names])
    mmed, mscale = fit_robust(market[train])
    market = apply_robust(market, mmed, mscale, config.data.clip)
    return market, market_names, mmed, mscale


def execution_arrays(days: int, n: int, di, ji, p, close_adj, open_up, open_down,
                     start: int = 0) -> dict[str, np.ndarray]:
    """The store's execution arrays (Days, N) of signal day t (pipeline/store/arrays.py) from the
    traded stock-days' (day index, stock index, average price, adjusted close, opens limit up,
    opens limit down) of sql/store/day_facts.sql. Market day t+1 is day index t + 1.

    The paper's portfolios (a position opened on t+1 and closed on t+2): on a day t the stock
    traded, and when t+1 traded and t+2 is in the data,
      buy_ok / short_ok  t+1 does not open at the limit up / down
      exec_ret           p(t+2) / p(t+1) - 1 (the label), or, with no trade on t+2 (cannot be
                         sold), close(t+1) / p(t+1) - 1: valued at its last traded price;
    NaN / False otherwise (the last two days: not known yet).
    The TopkDropout account (positions held for many days):
      hold_ret   p*(t+2) / p*(t+1) - 1, p* the last traded price at or before a day (a suspended
                 day holds its value); NaN for the last two days
      sell_ok    t+1 trades and does not open at the limit down
      at_limit   t+1 trades and opens at either limit.
    start: the arrays of days start..days-1 only ((days - start, N), day index t - start), from
    the rows of those days and each stock's last row before them (sql/store/day_facts.sql with
    from_day = start), whose price is the last traded price carried into day start (every price
    row has a price: expectations/prices.json). A value of day t reads days t, t+1, t+2 and the
    last traded price, so it is the same as in the arrays of every day."""
    rows = [np.asarray(a) for a in (di, ji, p, close_adj, open_up, open_down)]
    before = rows[0] < start
    carry = np.full(n, np.nan)                             # (N,) the last traded price before start
    carry[rows[1][before]] = rows[2][before]
    di, ji, p, close_adj, open_up, open_down = (a[~before] for a in rows)
    di, days = di - start, days - start
    px = np.full((days, n), np.nan)                         # (Days, N) average price, NaN = no trade
    px[di, ji] = p
    close = np.full((days, n), np.nan)
    close[di, ji] = close_adj
    traded = np.isfinite(px)
    up, down = np.zeros((days, n), bool), np.zeros((days, n), bool)
    up[di, ji], down[di, ji] = open_up, open_down

    exec_ret = np.full((days, n), np.nan, np.float32)
    buy_ok, short_ok = np.zeros((days, n), bool), np.zeros((days, n), bool)
    if days > 2:
        opened = traded[:-2] & traded[1:-1]                 # traded on t and on t+1
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = np.where(traded[2:], px[2:], close[1:-1]) / px[1:-1] - 1
        exec_ret[:-2] = np.where(opened, ret, np.nan)
        buy_ok[:-2] = opened & ~up[1:-1]
        short_ok[:-2] = opened & ~down[1:-1]

    # p* = the last traded price at or before each day (a suspended day holds its value): before
    # the first trade of these days the carried price (NaN: none, before the stock's first trade)
    last = np.where(traded, np.arange(days)[:, None], -1)
    np.maximum.accumulate(last, axis=0, out=last)
    pf = np.where(last >= 0, px[last, np.arange(n)[None, :]], carry)
    hold = np.full((days, n), np.nan, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        hold[:-2] = pf[2:] / pf[1:-1] - 1
    sell_ok, at_limit = np.zeros((days, n), bool), np.zeros((days, n), bool)
    sell_ok[:-1] = traded[1:] & ~down[1:]                  # facts of t+1, on the row of t
    at_limit[:-1] = traded[1:] & (up[1:] | down[1:])
    return {"exec_ret": exec_ret, "buy_ok": buy_ok, "short_ok": short_ok,
            "hold_ret": hold, "sell_ok": sell_ok, "at_limit": at_limit}


def _feature_columns(con) -> list[str]:
    return [c for c in columns(con, "features", ("features",)) if c not in ("date", "instrument")]


def _to_matrix(table, names, offset: int = 0) -> np.ndarray:
    """Arrow columns -> (rows, D) float32, NULL -> NaN."""
    out = np.empty((table.num_rows, len(names)), np.float32)
    for k in range(len(names)):
        out[:, k] = table.column(offset + k).to_numpy(zero_copy_only=False)
    return out
