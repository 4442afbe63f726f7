"""A store built from a feature panel (features.parquet: `features` is a view on `feature_panel`)
extends like an Alpha158 one when only new dates arrived, and the extended store equals a store
built from scratch on the same data; a panel value changed inside the old dates rebuilds.

The panel's prefix is compared with `pipeline.data.ingest.panel_prefix_key` (recorded in the
store's meta.json as `panel_prefix_fp`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data import ingest as ingest_module
from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.settings import Settings
from pipeline.store import TensorStore, build_store
from tests.store_equality import assert_same_store

pytestmark = pytest.mark.skipif(not hasattr(ingest_module, "panel_prefix_key"),
                                reason="pipeline.data.ingest.panel_prefix_key not there yet")

SPEC = SynthSpec(n_stocks=30, n_days=600, seed=11, n_features=12)   # train ends 2017-06-30
CUT = "2018-01-31"                                                   # after the train segment
FILES = ("daily", "index", "features")


def _cut(full, out, until: str, edit=None):
    """Data folder `out`: `full` up to `until` (membership whole); edit(features frame) in place."""
    out.mkdir()
    (out / "membership.parquet").write_bytes((full / "membership.parquet").read_bytes())
    for name in FILES:
        frame = pd.read_parquet(full / f"{name}.parquet")
        frame = frame[frame.date <= pd.Timestamp(until)].reset_index(drop=True)
        if name == "features" and edit is not None:
            edit(frame)
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def panel_dirs(tmp_path_factory):
    """cut/ (up to CUT), next/ (one more market day), changed/ (next/ with one old value edited)."""
    root = tmp_path_factory.mktemp("panel_extend")
    full = write_synthetic(root / "full", SPEC)
    dates = sorted(pd.read_parquet(full / "daily.parquet", columns=["date"]).date.unique())
    nxt = str(pd.Timestamp(dates[dates.index(pd.Timestamp(CUT)) + 1]).date())

    def revise(f):          # one value of the first day: a panel correction inside old dates
        f.loc[f.index[f.date == f.date.min()][0], "f0007"] += 0.5

    return {"cut": _cut(full, root / "cut", CUT), "next": _cut(full, root / "next", nxt),
            "changed": _cut(full, root / "changed", nxt, revise)}


def _fresh(tmp_path, name, folder) -> TensorStore:
    s = Settings.from_env(tmp_path / name).ensure()
    ingest(s, folder)
    return build_store(s, load_config("quick"))


def test_a_new_panel_day_extends_the_store(settings, panel_dirs, tmp_path):
    cfg = load_config("quick")
    ingest(settings, panel_dirs["cut"])
    first = build_store(settings, cfg)
    assert len(first.feature_names) == SPEC.n_features and first.meta["panel_prefix_fp"]
    ingest(settings, panel_dirs["next"])
    second = build_store(settings, cfg)
    assert second.meta["extended_from"] == first.fingerprint
    assert len(second.dates) == len(first.dates) + 1
    assert (second.root / "features.f32").stat().st_ino == (first.root / "features.f32").stat().st_ino
    assert np.abs(np.asarray(second.features[-1])).sum() > 0          # the new day was written
    fresh = _fresh(tmp_path, "fresh", panel_dirs["next"])
    assert_same_store(second, fresh)
    assert second.capacity == fresh.capacity


def test_a_panel_change_inside_old_dates_rebuilds(settings, panel_dirs, tmp_path):
    cfg = load_config("quick")
    ingest(settings, panel_dirs["cut"])
    first = build_store(settings, cfg)
    ingest(settings, panel_dirs["changed"])     # a new day, and one old day's value revised
    second = build_store(settings, cfg)
    assert second.meta["extended_from"] is None
    assert second.meta["panel_prefix_fp"] != first.meta["panel_prefix_fp"]
    fresh = _fresh(tmp_path, "fresh", panel_dirs["changed"])
    assert_same_store(second, fresh)
    # the edited value reached the store (an extension would have kept the stale one)
    assert not np.array_equal(np.asarray(second.features[: len(first.dates)]), np.asarray(first.features))
