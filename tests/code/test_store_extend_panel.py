"""A store built from a feature panel (features.parquet: `features` is a view on `feature_panel`)
extends like an Alpha158 one when only new dates arrived, and the extended store equals a store
built from scratch on the same data; a panel value changed inside the old dates rebuilds.

The panel's prefix is compared with `pipeline.data.dated_files.prefix_key` (recorded in the
store's meta.json as `panel_prefix_fp`). The stock-day arrays (labels, execution) of the old
store's last days are recomputed with the new day, the days before copied."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.data.ingest import ingest
from pipeline.data.synth import SynthSpec, write_synthetic
from pipeline.settings import Settings
from pipeline.store import TensorStore, build_store
from tests.store_equality import assert_same_store

SPEC = SynthSpec(n_stocks=30, n_days=600, seed=11, n_features=12)   # train ends 2017-06-30
CUT = "2018-01-31"                                                   # after the train segment
FILES = ("daily", "index", "features")


def _cut(full, out, until: str, edits=None):
    """Data folder `out`: `full` up to `until` (membership whole); edits: {file name: function
    of its frame returning the frame to write}."""
    out.mkdir()
    (out / "membership.parquet").write_bytes((full / "membership.parquet").read_bytes())
    for name in FILES:
        frame = pd.read_parquet(full / f"{name}.parquet")
        frame = frame[frame.date <= pd.Timestamp(until)].reset_index(drop=True)
        if name in (edits or {}):
            frame = edits[name](frame)
        frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


SUSPENDED = "SH600003"   # trades every day around CUT in the synthetic data


@pytest.fixture(scope="module")
def panel_dirs(tmp_path_factory):
    """cut/ (up to CUT), next/ (one more market day), changed/ (next/ with one old value edited);
    suspended_cut/, suspended_next/: cut/ and next/ with SUSPENDED halted on CUT's last three
    days (more than RECOMPUTE_DAYS), then opening next/'s new day 20% above its last close."""
    root = tmp_path_factory.mktemp("panel_extend")
    full = write_synthetic(root / "full", SPEC)
    dates = sorted(pd.read_parquet(full / "daily.parquet", columns=["date"]).date.unique())
    c = dates.index(pd.Timestamp(CUT))
    nxt = str(pd.Timestamp(dates[c + 1]).date())

    def revise(f):          # one value of the first day: a panel correction inside old dates
        f.loc[f.index[f.date == f.date.min()][0], "f0007"] += 0.5
        return f

    def suspend(daily):
        mine = daily.instrument == SUSPENDED
        daily = daily[~(mine & daily.date.isin(dates[c - 2: c + 1]))].reset_index(drop=True)
        last = daily[(daily.instrument == SUSPENDED) & (daily.date == dates[c - 3])].iloc[0]
        new = daily.index[(daily.instrument == SUSPENDED) & (daily.date == dates[c + 1])]
        if len(new):        # at or above any daily limit (<= 20%) of the close before the halt
            price = round(last.close * last.factor / daily.loc[new[0], "factor"] * 1.2, 2) + 0.01
            daily.loc[new, ["open", "high", "low", "close"]] = price
            daily.loc[new, "amount"] = daily.loc[new, "volume"] * price
        return daily

    return {"cut": _cut(full, root / "cut", CUT), "next": _cut(full, root / "next", nxt),
            "changed": _cut(full, root / "changed", nxt, {"features": revise}),
            "suspended_cut": _cut(full, root / "suspended_cut", CUT, {"daily": suspend}),
            "suspended_next": _cut(full, root / "suspended_next", nxt, {"daily": suspend})}


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


def test_the_last_old_days_are_recomputed(settings, panel_dirs, tmp_path):
    """A new day changes the old store's last RECOMPUTE_DAYS days, which the extension
    recomputes: the old second-last day's labels and exec_ret become known (t+2 is the new
    day), and SUSPENDED, halted since before those days, resumes on the new day at the limit
    up of its last close (a previous row older than the recomputed days) and carries its last
    traded price over the halt into hold_ret. Too few days recomputed (or the stocks' rows
    before them not read) would keep the old store's values or miss the limit: not the rebuild."""
    cfg = load_config("quick")
    ingest(settings, panel_dirs["suspended_cut"])
    first = build_store(settings, cfg)
    ingest(settings, panel_dirs["suspended_next"])
    second = build_store(settings, cfg)
    assert second.meta["extended_from"] == first.fingerprint
    assert_same_store(second, _fresh(tmp_path, "fresh", panel_dirs["suspended_next"]))

    c = len(first.dates) - 1                                # the old last day; c + 1 is new
    assert np.isnan(first.labels[c - 1]).all()             # the old store's last two days:
    assert np.isnan(first.execution["exec_ret"][c - 1]).all()      # not known yet
    assert np.isnan(first.execution["hold_ret"][c - 1]).all()
    assert np.isfinite(second.labels[c - 1]).sum() > len(second.instruments) // 2
    assert np.isfinite(second.execution["exec_ret"][c - 1]).sum() > len(second.instruments) // 2
    assert np.isnan(second.labels[c]).all()                 # t + 2 not in the data yet

    j = list(second.instruments).index(SUSPENDED)
    assert not second.traded[c - 2:c + 1, j].any() and second.traded[c + 1, j]
    ex = second.execution
    assert ex["at_limit"][c, j] and ex["sell_ok"][c, j] and not ex["buy_ok"][c, j]
    daily = pd.read_parquet(panel_dirs["suspended_next"] / "daily.parquet")
    mine = daily[daily.instrument == SUSPENDED].set_index("date")
    p = mine.amount / mine.volume * mine.factor             # the average price p of each day
    halted_at, back = p[second.dates[c - 3]], p[second.dates[c + 1]]
    assert ex["hold_ret"][c - 1, j] == pytest.approx(back / halted_at - 1, rel=1e-6)
