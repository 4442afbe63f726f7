"""DayLoader: windows line up with the right dates, padding, masks, shuffling."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.loader import DayLoader
from pipeline.store import TensorStore
from tests.code.test_store import tiny_arrays


def make_store(tmp_path):
    a = tiny_arrays()
    # feature value encodes (day, stock, feature) so every gathered cell can be checked
    days, n, d = a["features"].shape
    a["features"] = (np.arange(days)[:, None, None] * 1000 + np.arange(n)[None, :, None] * 10
                     + np.arange(d)[None, None, :]).astype(np.float32)
    return a, TensorStore.from_arrays(tmp_path / "s", **a, normalize=False)


def test_batch_windows_line_up(tmp_path):
    a, st = make_store(tmp_path)
    loader = DayLoader(st, "train", "csi300", batch_days=3)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    seen = torch.cat([b.day_idx for b in batches]).tolist()
    assert seen == st.segment_days("train").tolist()
    for b in batches:
        B, N, T, D = b.x.shape
        assert (T, D) == (5, 3) and b.y.shape == (B, N) and b.market.shape == (B, 5, 2)
        for i, day in enumerate(b.day_idx.tolist()):
            members = np.flatnonzero(a["members"]["csi300"][day] & a["traded"][day])
            assert b.mask[i].sum() == len(members)
            assert b.inst_idx[i, :len(members)].tolist() == members.tolist()
            assert (b.inst_idx[i, len(members):] == -1).all()
            for k, s in enumerate(members):
                for tt in range(5):
                    src = day - 4 + tt  # t-4..t
                    traded = a["traded"][src, s]
                    assert bool(b.tmask[i, k, tt]) == traded
                    exp = a["features"][src, s] if traded else np.zeros(3)
                    np.testing.assert_array_equal(b.x[i, k, tt].numpy(), exp)
                np.testing.assert_array_equal(b.y[i, k].numpy(), a["labels"][day, s])
            np.testing.assert_array_equal(b.market[i].numpy(), st.market[day - 4:day + 1])
            assert torch.isnan(b.y[i, len(members):]).all()
            assert (b.x[i, len(members):] == 0).all() and not b.tmask[i, len(members):].any()


def test_shuffle_is_deterministic_per_epoch(tmp_path):
    _, st = make_store(tmp_path)
    ld = DayLoader(st, "test", "all", batch_days=2, shuffle=True, seed=3)
    order = lambda: torch.cat([b.day_idx for b in ld]).tolist()  # noqa: E731
    ld.set_epoch(0)
    e0 = order()
    assert order() == e0
    ld.set_epoch(1)
    e1 = order()
    assert sorted(e0) == sorted(e1) == st.segment_days("test").tolist() and e0 != e1


def test_explicit_days_and_empty_days_skipped(tmp_path):
    a, st = make_store(tmp_path)
    ld = DayLoader(st, "train", "csi300", days=[5, 6])
    assert [int(b.day_idx[0]) for b in ld] == [5, 6]
    m = a["members"]["csi300"].copy()
    m[20:] = False
    a["members"] = {"csi300": m}
    st2 = TensorStore.from_arrays(tmp_path / "t", **a, normalize=False)
    assert len(DayLoader(st2, "test", "csi300")) == 0


def test_device_resident_gather_matches_numpy_path(tmp_path):
    """The torch gather used when the store sits on the GPU, exercised on CPU tensors."""
    _, st = make_store(tmp_path)
    ref = list(DayLoader(st, "train", "csi300", batch_days=4))
    ld = DayLoader(st, "train", "csi300", batch_days=4)
    ld._dev = {k: torch.from_numpy(np.array(getattr(st, k)))
               for k in ("features", "labels", "traded", "market")}
    got = list(ld)
    for a, b in zip(ref, got):
        for f in ("x", "mask", "market", "day_idx", "inst_idx", "tmask"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert torch.equal(torch.isnan(a.y), torch.isnan(b.y))
        assert torch.equal(a.y.nan_to_num(), b.y.nan_to_num())
