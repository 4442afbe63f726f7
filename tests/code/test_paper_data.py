"""The paper's published tables as data, and the Newey-West t of a daily difference."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.significance import default_lags, ic_difference, newey_west
from pipeline.paper import beside, published


def test_published_tables_hold_every_cell_of_tables_1_and_2():
    df = published()
    models = {"tcn", "lstm", "transformer", "mamba", "master", "moderntcn",
              "miga-conv", "miga-rec", "miga-attn"}
    assert set(df["model"]) == models
    assert set(df["stockset"]) == {"csi300", "csi500", "csi1000", "average"}
    # 9 models x 4 sets x 4 metrics, per table; every cell once
    assert df.groupby("table").size().to_dict() == {"table1": 144, "table2": 144}
    assert not df.duplicated(["stockset", "model", "metric"]).any()
    assert df["metric"].notna().all() and (df["std"] >= 0).all()
    cell = lambda s, m, k: df.query("stockset == @s and model == @m and metric == @k").iloc[0]  # noqa: E731
    # values as printed in the paper (the text's own words: MIGA-Conv AR 0.24, IR 1.80 on CSI300)
    assert (cell("csi300", "miga-conv", "long_only_ar")["mean"],
            cell("csi300", "miga-conv", "long_only_ir")["mean"]) == (0.24, 1.80)
    assert cell("average", "miga-conv", "test_ic")["mean"] == 0.046
    assert cell("csi300", "lstm", "long_only_ar")["mean"] == -0.03
    assert cell("csi1000", "miga-rec", "long_short_ir")["mean"] == 10.20


def test_ours_beside_the_papers():
    ours = pd.DataFrame({"stockset": ["csi300", "csi300"], "model": ["miga-conv", "linear"],
                         "metric": ["test_ic", "test_ic"], "mean": [0.060, 0.030]})
    out = beside(ours).set_index(["stockset", "model", "metric"])
    assert out.loc[("csi300", "miga-conv", "test_ic"), "diff"] == pytest.approx(0.060 - 0.052)
    assert math.isnan(out.loc[("csi300", "linear", "test_ic"), "paper_mean"])   # ours only
    assert math.isnan(out.loc[("csi500", "tcn", "test_ic"), "ours_mean"])       # theirs only


def test_newey_west_by_hand():
    x = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    e = x - x.mean()                                   # mean 2
    g0, g1 = e @ e / 5, (e[1:] @ e[:-1]) / 5
    r = newey_west(x, lags=1)
    assert r["se"] == pytest.approx(math.sqrt((g0 + 2 * 0.5 * g1) / 5))
    assert r["t"] == pytest.approx(2.0 / r["se"]) and r["lags"] == 1 and r["n"] == 5
    # no lags: the plain standard error with the population variance
    assert newey_west(x, lags=0)["se"] == pytest.approx(x.std(ddof=0) / math.sqrt(5))
    assert default_lags(500) == 5 and default_lags(100) == 4


def test_autocorrelation_widens_the_standard_error():
    rng = np.random.default_rng(0)
    n, e = 2000, rng.normal(size=2000)
    ar = np.empty(n)
    ar[0] = e[0]
    for i in range(1, n):                              # AR(1), phi = 0.8: persistent days
        ar[i] = 0.8 * ar[i - 1] + e[i]
    plain, hac = newey_west(ar, lags=0), newey_west(ar, lags=30)
    assert hac["se"] > 2 * plain["se"]                 # long-run sd is 5x for phi = 0.8
    iid = newey_west(e, lags=30)
    assert iid["se"] == pytest.approx(newey_west(e, lags=0)["se"], rel=0.2)


def test_ic_difference_aligns_days():
    days = pd.date_range("2020-01-01", periods=6)
    a = pd.Series([0.1, 0.2, 0.1, np.nan, 0.2, 0.1], index=days)
    b = pd.Series([0.0, 0.1, 0.0, 0.1], index=days[[0, 1, 2, 3]])
    r = ic_difference(a, b, lags=0)
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.1)
