"""`miga ingest` of new days makes the tensor store extend, not rebuild, and the extended store
equals a store built from scratch on the same data (every array, bit for bit)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.settings import Settings
from pipeline.store import build as store_build
from pipeline.store import TensorStore, build_store
from tests.store_equality import assert_same_store

SPEC = SynthSpec(n_stocks=40, n_days=650, seed=5)   # train ends 2017-06-30 (day ~390)
CUT1, CUT2 = "2018-01-31", "2018-04-30"             # both after the train segment


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """full/ and its prefixes cut1/, cut2/. One stock (LATE) lists only after CUT2: its rows
    before are dropped from every folder, so the stock axis grows at the last step."""
    root = tmp_path_factory.mktemp("extend_data")
    full = write_synthetic(root / "full", SPEC)
    daily = pd.read_parquet(full / "daily.parquet")
    late = sorted(daily.instrument.unique())[len(daily.instrument.unique()) // 2]
    daily = daily[(daily.instrument != late) | (daily.date > pd.Timestamp(CUT2))]
    daily.to_parquet(full / "daily.parquet", index=False)
    out = {"full": full, "late": late}
    for name, cut in (("cut1", CUT1), ("cut2", CUT2)):
        d = root / name
        d.mkdir()
        daily[daily.date <= pd.Timestamp(cut)].to_parquet(d / "daily.parquet", index=False)
        idx = pd.read_parquet(full / "index.parquet")
        idx[idx.date <= pd.Timestamp(cut)].to_parquet(d / "index.parquet", index=False)
        (d / "membership.parquet").write_bytes((full / "membership.parquet").read_bytes())
        out[name] = d
    return out


def _config():
    return load_config("quick")


def _fresh(tmp_path, name, folder) -> TensorStore:
    s = Settings.from_env(tmp_path / name).ensure()
    ingest(s, folder)
    return build_store(s, _config())


def _edited_copy(src, dst, name: str, edit):
    """A copy of data folder `src` in which `edit(frame)` changed <name>.parquet in place."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    frame = pd.read_parquet(dst / f"{name}.parquet")
    edit(frame)
    frame.to_parquet(dst / f"{name}.parquet", index=False)
    return dst


@pytest.mark.parametrize("spare", ["spare slots", "no spare slots"])
def test_new_days_extend_the_store(settings, data_dirs, tmp_path, monkeypatch, spare):
    if spare == "no spare slots":   # the stock axis is full: a new listing rewrites the old days
        monkeypatch.setattr(store_build, "MIN_SPARE", 0)
        monkeypatch.setattr(store_build, "SPARE_SLOTS", 0)
    cfg = _config()
    ingest(settings, data_dirs["cut1"])
    first = build_store(settings, cfg)
    assert first.meta["extended_from"] is None
    first_features = np.array(first.features)

    # new days, same stocks: the old features file is copied and only the new days are read
    ingest(settings, data_dirs["cut2"])
    second = build_store(settings, cfg)
    assert second.meta["extended_from"] == first.fingerprint
    assert f"extending {first.fingerprint}" in second.describe()
    assert len(second.dates) > len(first.dates) and list(second.instruments) == list(first.instruments)
    assert_same_store(second, _fresh(tmp_path, "fresh2", data_dirs["cut2"]))
    # the first store (its file now shares its days with the second's) still reads the same
    ino = [(st.root / "features.f32").stat().st_ino for st in (first, second)]
    assert ino[0] == ino[1]                                  # a hard link, not a copy
    assert np.array_equal(np.asarray(TensorStore(first.root).features), first_features)

    # new days and a newly listed stock: it comes last on the stock axis (order of first
    # trading day) and takes a spare slot of the same file; with none left, the old days are
    # rewritten into a file with new spare slots
    ingest(settings, data_dirs["full"])
    third = build_store(settings, cfg)
    assert third.meta["extended_from"] == second.fingerprint
    assert list(third.instruments) == list(second.instruments) + [data_dirs["late"]]
    linked = (third.root / "features.f32").stat().st_ino == (second.root / "features.f32").stat().st_ino
    if spare == "spare slots":
        assert second.capacity > len(second.instruments) and third.capacity == second.capacity
        assert linked
    else:
        assert second.capacity == len(second.instruments) and not linked
        assert third.capacity == len(third.instruments)
    fresh = _fresh(tmp_path, "fresh3", data_dirs["full"])
    assert_same_store(third, fresh)
    # stores are caches: the current one and the previous one are kept, older ones deleted
    assert not first.root.exists() and second.root.exists() and third.root.exists()
    # the last old days' labels became known with the new prices, as in the full build
    k = len(second.dates) - 1
    assert np.isnan(second.labels[k]).all() and not np.isnan(third.labels[k]).all()


def test_membership_change_alone_reuses_the_features(settings, data_dirs, tmp_path):
    """No new day, but a revised membership interval: the features are reused (no day added)
    and the stock sets recomputed, as a rebuild would."""
    cfg = _config()
    ingest(settings, data_dirs["cut2"])
    first = build_store(settings, cfg)
    def revise(m):
        i = m.index[m.index_name == "csi300"][0]
        m.loc[i, "end_date"] = m.loc[i, "start_date"] + pd.Timedelta(days=30)

    revised = _edited_copy(data_dirs["cut2"], tmp_path / "revised", "membership", revise)
    ingest(settings, revised)
    second = build_store(settings, cfg)
    assert second.fingerprint != first.fingerprint
    assert second.meta["extended_from"] == first.fingerprint
    assert not np.array_equal(second.members["csi300"], first.members["csi300"])
    assert_same_store(second, _fresh(tmp_path, "fresh", revised))


def test_rewritten_history_rebuilds(settings, data_dirs, tmp_path):
    cfg = _config()
    ingest(settings, data_dirs["cut1"])
    first = build_store(settings, cfg)
    # the new folder also revises an old price: the old features are stale, so no extension
    def revise(daily):
        i = daily.index[daily.date == daily.date.min()][0]
        daily.loc[i, ["open", "high", "low", "close"]] *= 1.01

    changed = _edited_copy(data_dirs["cut2"], tmp_path / "changed", "daily", revise)
    ingest(settings, changed)
    second = build_store(settings, cfg)
    assert second.fingerprint != first.fingerprint and second.meta["extended_from"] is None
    assert_same_store(second, _fresh(tmp_path, "fresh", changed))
    assert json.loads((second.root / "meta.json").read_text())["last_date"] == str(second.dates[-1])


def test_a_grown_file_is_never_shared_twice(tmp_path):
    """Two stores extending the same base: the first links the base's file and grows it, the
    second must copy (cut to the base's days), or it would write into the first one's days."""
    from pipeline.store.arrays import StoreWriter, as_segments

    days, n, d = 5, 3, 2
    base = np.memmap(tmp_path / "base.f32", dtype=np.float32, mode="w+", shape=(days, n, d))
    base[:] = 1.0
    base.flush()
    dates = np.arange("2020-01-01", "2020-01-08", dtype="datetime64[D]")
    seg = as_segments({"train": ("2020-01-01", "2020-01-02"), "valid": ("2020-01-03", "2020-01-04"),
                     "test": ("2020-01-05", "2020-01-07"), "embargo_days": 0})

    def extend(name: str, value: float) -> StoreWriter:
        w = StoreWriter(tmp_path / name, name, dates, list("abc"), ["f0", "f1"], [], seg, 5,
                        prefix_features=tmp_path / "base.f32", prefix_days=days)
        w.features[days:] = value
        w.features.flush()
        return w

    a = extend("a", 2.0)
    assert (a.tmp / "features.f32").stat().st_ino == (tmp_path / "base.f32").stat().st_ino
    b = extend("b", 3.0)
    assert (b.tmp / "features.f32").stat().st_ino != (tmp_path / "base.f32").stat().st_ino
    assert np.all(np.asarray(a.features[days:]) == 2.0) and np.all(np.asarray(a.features[:days]) == 1.0)
    assert np.all(np.asarray(b.features[days:]) == 3.0) and np.all(np.asarray(b.features[:days]) == 1.0)
    reread = np.memmap(tmp_path / "base.f32", dtype=np.float32, mode="r", shape=(days, n, d))
    assert np.all(reread == 1.0)                       # the base's own days are untouched


def test_stores_no_build_can_use_are_pruned(settings, data_dirs, monkeypatch):
    """A new store deletes those no build can read again: an older STORE_VERSION's, and this
    config's under an older feature SQL. Another config's store stays (it is still current)."""
    from dataclasses import replace
    cfg = _config()
    other = replace(cfg, segments=replace(cfg.segments, embargo_days=cfg.segments.embargo_days + 1))
    ingest(settings, data_dirs["cut1"])
    first = build_store(settings, cfg)
    mine = build_store(settings, other)                 # another config: another static key
    assert mine.fingerprint != first.fingerprint and first.root.exists()
    # a store written by an older miga: no version (or an older one) in its meta.json
    old = settings.store_dir / "0ld0ld0ld0ld0ld0"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"static_key": "an older layout", "last_date": "2020-01-01"}))
    (old / "features.f32").write_bytes(b"\0" * 1024)
    # the feature SQL changes: the same config now builds under a new static key
    real = store_build.sql_hash
    monkeypatch.setattr(store_build, "sql_hash", lambda: real() + "-edited")
    second = build_store(settings, cfg)
    assert second.meta["static_key"] != first.meta["static_key"]
    assert second.meta["version"] == store_build.STORE_VERSION
    assert second.meta["config_key"] == first.meta["config_key"] != mine.meta["config_key"]
    assert not first.root.exists() and not old.exists()
    assert mine.root.exists() and second.root.exists()
