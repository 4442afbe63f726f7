"""MLflow logging of one experiment: tags, params, curves, metrics that can be recomputed from
`predictions.parquet`, artifacts, the registered model, and resume after a kill."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.config import load_config
from pipeline.tracking import metric_key, metric_name
from tests.synthetic_store import make_store

TINY_MIGA = {"hidden": 8, "num_layers": 2, "kernel_size": 3, "groups": 2, "experts": 3,
             "top_k": 2, "d_expert": 4, "attn_heads": 2, "dropout": 0.1}
TINY_TCN = {"hidden": 8, "num_layers": 2, "kernel_size": 3}
FINAL = ("test_ic", "test_icir", "test_rank_ic", "test_rank_icir", "long_only_ar", "long_only_ir",
         "long_short_ar", "long_short_ir", "long_only_mdd", "turnover", "long_only_ar_net",
         "valid_ic", "valid_icir", "valid_rank_ic", "valid_rank_icir",
         # the TopkDropout account (pipeline/evaluation/topk.py), net of costs and before
         "topk_ar_net", "topk_excess_ar_net", "topk_ir_net", "topk_mdd_net", "topk_turnover",
         "topk_cost_drag", "topk_cash", "topk_ar_gross", "topk_excess_ar_gross", "topk_ir_gross",
         "topk_mdd_gross")


def _config(epochs=2):
    return load_config(overrides={"train": {"max_epochs": epochs, "batch_days": 4, "device": "cpu",
                                            "lr": 2e-3},
                                  "models": {"miga-conv": TINY_MIGA, "tcn": TINY_TCN}})


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One finished MIGA run in a fresh home folder."""
    from pipeline.cell import run_cell
    from pipeline.grid import Cell
    from pipeline.settings import Settings

    home = tmp_path_factory.mktemp("mlhome") / "home"
    settings = Settings.from_env(home).ensure()
    store = make_store(home / "synthetic_store")
    res = run_cell(settings, _config(), Cell("miga-conv", "all", 0), store=store, progress=False)
    return settings, store, res


def _download(settings, run_id, path):
    import mlflow

    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                               tracking_uri=settings.mlflow_uri)


def test_run_has_tags_params_and_curves(logged):
    from mlflow import MlflowClient

    settings, store, res = logged
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(res.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "miga"
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith(
        settings.mlflow_artifacts.as_uri())
    t = run.data.tags
    assert (t["model"], t["stockset"], t["seed"]) == ("miga-conv", "all", "0")
    assert t["store_fingerprint"] == store.fingerprint and t["git_commit"]
    p = run.data.params
    assert p["train.lr"] == "0.002" and p["train.max_epochs"] == "2" and p["backtest.days_per_year"] == "238"
    assert p["models.miga-conv.groups"] == "2"
    for key in ("train/loss", "train/ic", "time/epoch_seconds", "train/expert_entropy",
                "valid/ic", "valid/rank_ic"):
        hist = client.get_metric_history(res.run_id, key)
        assert sorted(m.step for m in hist) == [1, 2], key
    # The final valid IC (the restored best epoch, scored by the evaluation's loader) is one value
    # of its own, not a phantom third point on the curve. Same weights as the best epoch's curve
    # point, another float order (the engine's padded, vmapped batch): within 1e-6.
    for key, curve in (("valid_ic", "valid/ic"), ("valid_rank_ic", "valid/rank_ic")):
        hist = sorted(client.get_metric_history(res.run_id, curve), key=lambda m: m.step)
        assert abs(hist[0].value - hist[1].value) > 1e-4     # the epochs do differ
        (final,) = client.get_metric_history(res.run_id, metric_name(key))
        assert final.value == pytest.approx(hist[res.best_epoch - 1].value, abs=1e-6)
        assert "train_loss" not in run.data.metrics
    ent = client.get_metric_history(res.run_id, "train/expert_entropy")
    assert all(0 < m.value <= np.log(6) + 1e-6 for m in ent)
    for key in FINAL:       # in sections: test/ic, valid/best_ic, backtest/long_only_ar, ...
        assert metric_name(key) in run.data.metrics, key
    assert run.data.metrics["test/ic"] == res.metrics["test_ic"]
    assert run.info.status == "FINISHED"


def test_run_says_what_it_is(logged):
    """The run table opens on runs (not GenAI traces); a run has its description, its dataset
    (the tensor store, by fingerprint), MLflow's git source tags, stock set and seed as params;
    its registered version carries the cell, run and test metrics."""
    from mlflow import MlflowClient

    settings, store, res = logged
    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(res.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    t, p = run.data.tags, run.data.params
    assert t["mlflow.note.content"] == f"```\n{res.summary()}\n```"
    assert f"MLflow run {res.run_id}" in t["mlflow.note.content"]
    assert t["mlflow.source.git.commit"] == t["git_commit"].removesuffix("-dirty")
    assert (p["stockset"], p["seed"]) == ("all", "0")
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == store.fingerprint and store.fingerprint in inp.dataset.name
    assert [(x.key, x.value) for x in inp.tags] == [("mlflow.data.context", "training")]
    found = client.search_runs([exp.experiment_id], f"dataset.digest = '{store.fingerprint}'")
    assert [r.info.run_id for r in found] == [res.run_id]
    (mv,) = client.search_model_versions("name='miga-conv'")
    assert mv.run_id == res.run_id and mv.description == res.summary()
    assert mv.tags["stockset"] == "all" and mv.tags["seed"] == "0" and mv.tags["run_id"] == res.run_id
    assert float(mv.tags["test_ic"]) == pytest.approx(res.metrics["test_ic"], abs=1e-4)
    (lm,) = client.search_logged_models([exp.experiment_id])
    assert lm.name == "miga-conv-all-seed0"


def test_logged_metrics_equal_those_recomputed_from_predictions(logged):
    from mlflow import MlflowClient

    from pipeline.evaluation import evaluate

    settings, _, res = logged
    logged_m = {metric_key(k): v for k, v in
                MlflowClient(settings.mlflow_uri).get_run(res.run_id).data.metrics.items()}
    pred = pd.read_parquet(_download(settings, res.run_id, "predictions.parquet"))
    assert list(pred.columns) == ["date", "instrument", "score", "label", "segment", "exec_ret",
                                  "buy_ok", "short_ok", "hold_ret", "sell_ok", "at_limit"]
    assert set(pred["segment"]) == {"valid", "test"}
    account = pred                  # rows without a score: what a multi-day account may hold
    pred = pred[pred.score.notna()]
    # independently of pipeline.evaluation: scipy, one day at a time
    for seg in ("valid", "test"):
        part = pred[(pred.segment == seg) & pred.label.notna()].astype({"score": float, "label": float})
        ic = np.array([stats.pearsonr(g.score, g.label)[0] for _, g in part.groupby("date")])
        ric = np.array([stats.spearmanr(g.score, g.label)[0] for _, g in part.groupby("date")])
        assert logged_m[f"{seg}_ic"] == pytest.approx(ic.mean(), abs=1e-9)
        assert logged_m[f"{seg}_icir"] == pytest.approx(ic.mean() / ic.std(ddof=1), abs=1e-9)
        assert logged_m[f"{seg}_rank_ic"] == pytest.approx(ric.mean(), abs=1e-9)
        assert logged_m[f"{seg}_rank_icir"] == pytest.approx(ric.mean() / ric.std(ddof=1), abs=1e-9)
    # portfolio metrics: the long-only excess by hand (every scored member ranked, a pick that
    # cannot be bought held as cash), the rest through the same evaluate()
    assert _config().backtest.untradable == "cash"
    test = pred[pred.segment == "test"].astype({"score": float, "exec_ret": float})
    ex = []
    for _, g in test.groupby("date"):
        if g.exec_ret.isna().all():      # the last two days: no outcome yet, not backtested
            continue
        k = max(1, int(len(g) * 0.05))
        top = g.sort_values(["score", "instrument"], ascending=[False, True]).head(k)
        ex.append(top.exec_ret.where(top.buy_ok, 0.0).sum() / k
                  - g.exec_ret.where(g.buy_ok, 0.0).sum() / len(g))
    assert logged_m["long_only_ar"] == pytest.approx(np.mean(ex) * 238, abs=1e-9)
    recomputed, _, _ = evaluate(account, _config().backtest)
    for key in FINAL:
        assert logged_m[key] == pytest.approx(recomputed[key], abs=1e-12), key
    assert logged_m["test_ic"] > 0.3                      # the planted signal was learned
    # the account's costs are real: net below gross by the cost drag
    assert logged_m["topk_cost_drag"] > 0
    assert logged_m["topk_ar_gross"] - logged_m["topk_ar_net"] == pytest.approx(
        logged_m["topk_cost_drag"], rel=1e-9)


def test_artifacts_and_registered_model(logged):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.champion import load_run_model
    from pipeline.tracking import pack_input

    settings, store, res = logged
    client = MlflowClient(settings.mlflow_uri)
    names = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"predictions.parquet", "portfolio_returns.parquet", "daily_ic.parquet", "plots",
            "config", "normalisation", "model_state"} <= names
    assert {a.path for a in client.list_artifacts(res.run_id, "plots")} == {
        f"plots/{n}.png" for n in ("cumulative_returns", "daily_ic", "training_curves", "expert_usage")}
    rets = pd.read_parquet(_download(settings, res.run_id, "portfolio_returns.parquet"))
    assert {"long", "short", "long_short", "bench", "excess", "turnover", "excess_net"} <= set(rets.columns)
    usage = np.load(_download(settings, res.run_id, "expert_usage.npz"))
    assert set(usage.files) == set(store.members) and usage["all"].shape == (2, 3)

    versions = client.search_model_versions("name='miga-conv'")
    assert [v.run_id for v in versions] == [res.run_id]

    # the state_dict artifact rebuilds the model: same test scores as logged
    from pipeline.loader import DayLoader
    from pipeline.train import score_loader

    model = load_run_model(settings, res.run_id)
    again = score_loader(model, DayLoader(store, "test", "all", batch_days=8), store=store)
    pred = pd.read_parquet(_download(settings, res.run_id, "predictions.parquet"))
    pred = pred[pred.score.notna()]
    np.testing.assert_allclose(again["score"].to_numpy(),
                               pred.loc[pred.segment == "test", "score"].to_numpy(), rtol=1e-5, atol=1e-6)
    # every set's usage (the run's own one comes from its test-prediction pass) is the model's
    from pipeline.train import expert_usage

    for s in store.members:
        fresh = expert_usage(model, DayLoader(store, "test", s, batch_days=8))
        np.testing.assert_allclose(usage[s], fresh, rtol=1e-5, atol=1e-7, err_msg=s)

    # the MLflow model serves packed (B, N, T, D+M) arrays
    pyfunc = mlflow.pyfunc.load_model(f"models:/miga-conv/{versions[0].version}")
    b = next(iter(DayLoader(store, "test", "all", batch_days=1)))
    out = pyfunc.predict(pack_input(b.x.numpy(), b.market.numpy()))
    assert out.shape == tuple(b.mask.shape)


def test_find_cell_run(logged):
    from pipeline.tracking import find_cell_run

    settings, store, res = logged
    found = find_cell_run(settings, "miga-conv", "all", 0, store.fingerprint)
    assert found["run_id"] == res.run_id and found["metrics"]["test_ic"] == res.metrics["test_ic"]
    with pytest.raises(LookupError):
        find_cell_run(settings, "miga-conv", "all", 1)


class Killed(RuntimeError):
    pass


def test_experiment_resumes_after_kill_with_the_same_run_and_metrics(settings, monkeypatch):
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.cell import run_cell
    from pipeline.grid import Cell

    store = make_store(settings.home / "synthetic_store")
    cfg = _config(epochs=3)
    real = tracking.log_epoch

    def dies_after_first_epoch(settings, run_id, rec):
        real(settings, run_id, rec)
        if rec["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(tracking, "log_epoch", dies_after_first_epoch)
    with pytest.raises(Killed):
        run_cell(settings, cfg, Cell("tcn", "all", 1), store=store, register=False, progress=False)
    monkeypatch.setattr(tracking, "log_epoch", real)
    client = MlflowClient(settings.mlflow_uri)
    killed = client.search_runs([client.get_experiment_by_name("miga").experiment_id])
    assert len(killed) == 1 and killed[0].info.status == "FAILED"

    resumed = run_cell(settings, cfg, Cell("tcn", "all", 1), store=store, register=False, progress=False)
    assert resumed.run_id == killed[0].info.run_id          # the same MLflow run, continued
    assert sorted(m.step for m in client.get_metric_history(resumed.run_id, "train/ic")) == [1, 2, 3]
    fresh = run_cell(settings, cfg, Cell("tcn", "all", 1), store=store, register=False, progress=False)
    assert fresh.run_id != resumed.run_id
    for k in ("test_ic", "test_rank_icir", "long_only_ar", "long_short_ir", "valid_ic", "best_epoch"):
        assert resumed.metrics[k] == fresh.metrics[k], k


def test_sectioned_metric_names_read_back_as_the_flat_keys():
    """Runs log sectioned names; readers (`finished_runs`, `find_cell_run`: `miga report`, the
    champion step) get the flat keys back, and runs logged before the sections read unchanged."""
    keys = FINAL + ("best_epoch", "epochs_run", "n_params", "run_seconds", "long_only_index_ar")
    names = [metric_name(k) for k in keys]
    assert len(set(names)) == len(keys)
    assert {n.split("/")[0] for n in names} == {"test", "valid", "backtest", "run"}
    assert metric_name("long_only_ar") == "backtest/long_only_ar" and metric_name("valid_ic") == "valid/best_ic"
    assert [metric_key(n) for n in names] == list(keys)
    for flat_or_curve in ("test_ic", "long_only_ar", "train/loss", "valid/ic", "time/epoch_seconds"):
        assert metric_key(flat_or_curve) == flat_or_curve
