"""The anchors (lgbm, linear) run as cells like the nine neural models: the same MLflow tags,
params, metric keys and artifacts as a neural cell, a registered model that
`pipeline.champion.load_run_model` rebuilds with the scores of predictions.parquet, and for
lgbm the early-stopping round on the run."""
from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import load_config
from tests.synthetic_store import make_store

SMALL_LGBM = dict(num_leaves=8, max_depth=3, lambda_l1=0.0, lambda_l2=1.0, num_boost_round=300,
                  early_stopping_rounds=10, num_threads=1)
ANCHOR_CURVES = {"train/best_iteration", "valid/loss", "train/ridge_alpha"}   # the anchors' own record
COMMON = {"model.name", "model.d_feat", "model.d_market"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tcn cell (the neural reference) and the two anchors, in one MLflow home."""
    from pipeline.cell import run_cell
    from pipeline.grid import Cell
    from pipeline.settings import Settings

    home = tmp_path_factory.mktemp("anchors") / "home"
    settings = Settings.from_env(home).ensure()
    store = make_store(home / "store", noise=2.0)
    cfg = load_config(overrides={"train": {"max_epochs": 2, "batch_days": 4, "device": "cpu"},
                                 "models": {"tcn": {"hidden": 8, "num_layers": 2, "kernel_size": 3},
                                            "lgbm": SMALL_LGBM}})
    res = {m: run_cell(settings, cfg, Cell(m, "all", 0), store=store, progress=False)
           for m in ("tcn", "lgbm", "linear")}
    return settings, store, res


def _download(settings, run_id, path):
    import mlflow

    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                               tracking_uri=settings.mlflow_uri)


@pytest.mark.parametrize("name", ["lgbm", "linear"])
def test_an_anchor_run_looks_like_a_neural_run(name, runs):
    from mlflow import MlflowClient

    settings, store, res = runs
    client = MlflowClient(settings.mlflow_uri)
    neural, anchor = client.get_run(res["tcn"].run_id), client.get_run(res[name].run_id)
    assert anchor.info.status == "FINISHED"
    user_tags = lambda r: {k for k in r.data.tags if not k.startswith("mlflow.")}  # noqa: E731
    assert user_tags(anchor) == user_tags(neural)
    assert (anchor.data.tags["model"], anchor.data.tags["stockset"]) == (name, "all")
    # the same params, but for `model.<key>`: each run's own hyper-parameter overrides
    own = lambda r: {k for k in r.data.params if k.startswith("model.")} - COMMON  # noqa: E731
    assert set(anchor.data.params) - own(anchor) == set(neural.data.params) - own(neural)
    assert anchor.data.params["model.name"] == name
    assert own(anchor) == {f"model.{k}" for k in (SMALL_LGBM if name == "lgbm" else {})}
    extra = set(anchor.data.metrics) - set(neural.data.metrics)
    assert set(neural.data.metrics) <= set(anchor.data.metrics) and extra <= ANCHOR_CURVES, extra
    assert anchor.data.metrics["run/epochs_run"] == anchor.data.metrics["run/best_epoch"] == 1
    arts = lambda r: {a.path for a in client.list_artifacts(r.info.run_id)}  # noqa: E731
    assert arts(anchor) == arts(neural)
    assert [v.run_id for v in client.search_model_versions(f"name='{name}'")] == [res[name].run_id]


@pytest.mark.parametrize("name", ["lgbm", "linear"])
def test_the_logged_anchor_scores_as_in_its_predictions(name, runs):
    import mlflow

    from pipeline.champion import load_run_model
    from pipeline.loader import DayLoader
    from pipeline.tracking import pack_input
    from pipeline.train import score_loader

    settings, store, res = runs
    pred = pd.read_parquet(_download(settings, res[name].run_id, "predictions.parquet"))
    model = load_run_model(settings, res[name].run_id)
    again = score_loader(model, DayLoader(store, "test", "all", batch_days=8), store=store)
    test = pred[(pred.segment == "test") & pred.score.notna()]   # rows without a score: held stocks
    assert list(again["instrument"]) == list(test["instrument"])
    pd.testing.assert_series_equal(again["score"].reset_index(drop=True),
                                   test["score"].reset_index(drop=True), rtol=1e-6, atol=1e-7)
    assert res[name].metrics["test_ic"] > 0.2                   # the planted signal
    # the registered MLflow model (pickled) serves packed (B, N, T, D+M) arrays too
    version = mlflow.MlflowClient(settings.mlflow_uri).search_model_versions(f"name='{name}'")[0]
    mlflow.set_tracking_uri(settings.mlflow_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    b = next(iter(DayLoader(store, "test", "all", batch_days=1)))
    out = pyfunc.predict(pack_input(b.x.numpy(), b.market.numpy()))
    first = test[test["date"] == test["date"].min()]["score"].to_numpy()
    assert out.shape == tuple(b.mask.shape)
    assert abs(out[0] - first).max() < 1e-5


def test_lgbm_run_logs_its_early_stopping_round(runs):
    from mlflow import MlflowClient

    settings, _, res = runs
    m = MlflowClient(settings.mlflow_uri).get_run(res["lgbm"].run_id).data.metrics
    assert 1 <= m["train/best_iteration"] < SMALL_LGBM["num_boost_round"]
    assert m["valid/loss"] > 0
