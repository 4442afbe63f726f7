"""IC metrics and the IC loss on hand-made examples with known answers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.evaluation.ic import daily_ic, ic_metrics


def _pred(rows):
    return pd.DataFrame(rows, columns=["date", "instrument", "score", "label"])


def test_daily_ic_known_answers():
    d1, d2, d3 = pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03"), pd.Timestamp("2020-01-06")
    pred = _pred([
        # day 1: scores perfectly ordered with labels but not linear -> rank IC 1, IC < 1
        (d1, "A", 1.0, 0.01), (d1, "B", 2.0, 0.02), (d1, "C", 3.0, 0.10),
        # day 2: reversed -> IC = RankIC = -1; the NaN label row is ignored
        (d2, "A", 1.0, 0.03), (d2, "B", 2.0, 0.02), (d2, "C", 3.0, 0.01), (d2, "D", 9.0, np.nan),
        # day 3: one labelled stock -> no IC that day
        (d3, "A", 1.0, 0.05), (d3, "B", 2.0, np.nan),
    ])
    daily = daily_ic(pred)
    ic1 = np.corrcoef([1, 2, 3], [0.01, 0.02, 0.10])[0, 1]
    assert daily.loc[d1, "ic"] == pytest.approx(ic1)
    assert daily.loc[d1, "rank_ic"] == pytest.approx(1.0)
    assert daily.loc[d2, "ic"] == pytest.approx(-1.0)
    assert daily.loc[d2, "rank_ic"] == pytest.approx(-1.0)
    assert math.isnan(daily.loc[d3, "ic"]) and daily.loc[d2, "n"] == 3

    m = ic_metrics(pred)
    vals = np.array([ic1, -1.0])
    assert m["ic"] == pytest.approx(vals.mean())
    assert m["icir"] == pytest.approx(vals.mean() / vals.std(ddof=1))
    assert m["rank_ic"] == pytest.approx(0.0)
    assert m["rank_icir"] == pytest.approx(0.0)


def test_daily_ic_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    rows = []
    for d in pd.bdate_range("2020-01-01", periods=20):
        n = rng.integers(5, 40)
        s = rng.integers(0, 5, n).astype(float)           # many ties in the scores
        y = rng.normal(size=n)
        rows += [(d, f"S{i}", s[i], y[i]) for i in range(n)]
    pred = _pred(rows)
    daily = daily_ic(pred)
    for d, g in pred.groupby("date"):
        assert daily.loc[d, "ic"] == pytest.approx(stats.pearsonr(g.score, g.label)[0])
        assert daily.loc[d, "rank_ic"] == pytest.approx(stats.spearmanr(g.score, g.label)[0])


def test_constant_scores_give_no_ic():
    d = pd.Timestamp("2020-01-02")
    pred = _pred([(d, "A", 1.0, 0.1), (d, "B", 1.0, 0.2), (d, "C", 1.0, 0.3)])
    assert math.isnan(daily_ic(pred).loc[d, "ic"])


def test_ic_loss_equals_mean_daily_pearson_with_masks():
    torch = pytest.importorskip("torch")
    from pipeline.losses import daily_ic as t_daily_ic, ic_loss, total_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 6, generator=g)
    y = torch.randn(3, 6, generator=g)
    y[0, 5] = float("nan")                                # no label
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False                                   # padding
    mask[2, 1:] = False                                   # a day with one stock: left out
    ic, ok = t_daily_ic(s, y, mask)
    want0 = np.corrcoef(s[0, :5].numpy(), y[0, :5].numpy())[0, 1]
    want1 = np.corrcoef(s[1, :4].numpy(), y[1, :4].numpy())[0, 1]
    assert ok.tolist() == [True, True, False]
    assert ic[0].item() == pytest.approx(want0, abs=1e-5)
    assert ic[1].item() == pytest.approx(want1, abs=1e-5)
    loss, mean_ic = ic_loss(s, y, mask)
    assert loss.item() == pytest.approx(-(want0 + want1) / 2, abs=1e-5)
    aux = torch.tensor(2.0)
    tot, _ = total_loss("ic", s, y, mask, aux, alpha=0.1, beta=0.5)
    assert tot.item() == pytest.approx(0.5 * loss.item() + 0.2, abs=1e-5)


def test_ic_loss_gradient_is_finite_with_padding():
    torch = pytest.importorskip("torch")
    from pipeline.losses import ic_loss

    s = torch.randn(2, 5, requires_grad=True)
    y = torch.tensor([[0.1, 0.2, float("nan"), 0.0, 0.3], [0.1, 0.1, 0.1, 0.1, 0.2]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    loss, _ = ic_loss(s, y, mask)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[0, 4] == 0 and s.grad[0, 2] == 0        # masked / unlabelled get no gradient
