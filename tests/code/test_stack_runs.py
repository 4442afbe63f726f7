"""The grid as stacks: cells packed by model, a stack trained together and logged as one MLflow
run per cell (the same tags, params and metrics as a cell trained alone), a failed stack that
fails each of its runs, and `miga train` over several seeds and stock sets."""
from __future__ import annotations

import pytest

from pipeline.grid import Cell, pack_stacks
from tests.code.test_tracking import _config
from tests.synthetic_store import make_store


def test_pack_stacks_by_model_size_and_width():
    cells = [Cell(m, s, k) for m in ("tcn", "lstm") for s in ("wide", "narrow") for k in (0, 1)]
    stacks = pack_stacks(cells, 3, widths={"wide": 1000, "narrow": 300})
    assert [[c.name for c in s] for s in stacks] == [
        ["tcn/narrow/seed0", "tcn/narrow/seed1", "tcn/wide/seed0"], ["tcn/wide/seed1"],
        ["lstm/narrow/seed0", "lstm/narrow/seed1", "lstm/wide/seed0"], ["lstm/wide/seed1"]]
    assert pack_stacks(cells, 1) == [[c] for c in cells]       # stack_size 1: a cell at a time
    assert len(pack_stacks(cells, 27)) == 2
    with pytest.raises(ValueError, match="stack_size"):
        pack_stacks(cells, 0)


def test_cells_whose_hyper_parameters_differ_by_stock_set_go_to_separate_stacks(tmp_path):
    """master-ref's beta is 10 on csi300 and 5 elsewhere: one module cannot run both, so
    plan_stacks splits them, and a stack of mixed configs is refused."""
    from pipeline.config import load_config
    from pipeline.engine import StackedModel
    from pipeline.grid import plan_stacks
    from pipeline.models import create_model

    store = make_store(tmp_path / "s", days=60, n=12)
    cfg = load_config(None, {"models": {"master-ref": {"stockset": {"small": {"beta": 7.0}}}}})
    cells = [Cell(m, s, 0) for m in ("master-ref", "master") for s in ("small", "large")]
    stacks = plan_stacks(cfg, cells, store)
    assert [[c.name for c in s] for s in stacks] == [
        ["master-ref/small/seed0"], ["master-ref/large/seed0"],
        ["master/small/seed0", "master/large/seed0"]]
    models = [create_model("master-ref", 6, 3, d_model=8, t_nhead=2, s_nhead=2,
                           **cfg.model_overrides("master-ref", s)) for s in ("small", "large")]
    with pytest.raises(ValueError, match="share their config"):
        StackedModel(models, "cpu")


def _runs(settings):
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_uri)
    exp = client.get_experiment_by_name("miga")
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def test_a_stack_logs_each_cell_as_a_cell_alone_would(tmp_path):
    from pipeline.cell import run_cell, run_stack
    from pipeline.settings import Settings

    cfg = _config(epochs=2)
    cells = [Cell("tcn", "small", 0), Cell("tcn", "large", 1)]
    store = make_store(tmp_path / "store")
    alone = Settings.from_env(tmp_path / "alone").ensure()
    together = Settings.from_env(tmp_path / "together").ensure()
    solo = [run_cell(alone, cfg, c, store=store, register=False, progress=False) for c in cells]
    stacked = run_stack(together, cfg, cells, store=store, register=False, progress=False)
    client_a, runs_a = _runs(alone)
    client_t, runs_t = _runs(together)
    assert len(runs_t) == 2 and all(r.info.status == "FINISHED" for r in runs_t)
    by_name = {r.info.run_name: r for r in runs_t}
    for a, t in zip(solo, stacked):
        assert not isinstance(t, BaseException), t
        ra, rt = client_a.get_run(a.run_id), by_name[t.model + "/" + t.stockset + "/seed" + str(t.seed)]
        assert rt.info.run_id == t.run_id
        tags_a = {k: v for k, v in ra.data.tags.items() if not k.startswith("mlflow.")}
        tags_t = {k: v for k, v in rt.data.tags.items() if not k.startswith("mlflow.")}
        assert tags_t.pop("stack") == "tcn/small/seed0,tcn/large/seed1"
        assert tags_a == tags_t                          # model, stockset, seed, fingerprints, run_key
        assert ra.data.params == rt.data.params
        assert set(ra.data.metrics) == set(rt.data.metrics)
        for k in ("test/ic", "valid/best_ic", "backtest/long_only_ar", "run/best_epoch"):
            assert rt.data.metrics[k] == pytest.approx(ra.data.metrics[k], rel=1e-4, abs=1e-5), k
        for key in ("train/loss", "valid/ic"):
            assert [m.step for m in client_t.get_metric_history(t.run_id, key)] == \
                   [m.step for m in client_a.get_metric_history(a.run_id, key)]
        arts = {f.path for f in client_t.list_artifacts(t.run_id)}
        arts |= {f.path for f in client_t.list_artifacts(t.run_id, "plots")}
        assert {"predictions.parquet", "history.json", "plots/training_curves.png"} <= arts
    assert stacked[0].metrics["test_ic"] != stacked[1].metrics["test_ic"]


def test_a_failed_stack_fails_each_of_its_runs(settings, monkeypatch):
    import pipeline.train
    from pipeline.cell import run_stack

    def boom(*a, **k):
        raise RuntimeError("out of memory on the device")

    monkeypatch.setattr(pipeline.train, "fit_stack", boom)
    store = make_store(settings.home / "store")
    cells = [Cell("tcn", "small", 0), Cell("tcn", "large", 0)]
    with pytest.raises(RuntimeError, match="out of memory"):
        run_stack(settings, _config(), cells, store=store, register=False, progress=False)
    _, runs = _runs(settings)
    assert sorted(r.info.run_name for r in runs) == ["tcn/large/seed0", "tcn/small/seed0"]
    assert all(r.info.status == "FAILED" for r in runs)


def test_a_stack_takes_one_model(settings):
    from pipeline.cell import run_stack

    with pytest.raises(ValueError, match="one model"):
        run_stack(settings, _config(), [Cell("tcn", "small", 0), Cell("lstm", "small", 0)],
                  store=make_store(settings.home / "store"))


def test_cli_train_runs_seeds_and_stock_sets_as_stacks(tmp_path, capsys):
    """`miga train --stockset A B --seed 0 1`: four cells, two stacks of two (stack size 2),
    four finished MLflow runs, one summary each."""
    from flows.cli import main
    from pipeline.settings import Settings

    home = str(tmp_path / "home")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('''
[segments]
preset = ""
train = ["2016-01-04", "2016-03-31"]
valid = ["2016-04-01", "2016-04-29"]
test = ["2016-05-02", "2016-06-30"]
[data]
stocksets = ["csi300", "csi1000"]
[train]
batch_days = 4
max_epochs = 1
device = "cpu"
[models.tcn]
hidden = 8
num_layers = 2
kernel_size = 3
''')
    assert main(["synth", "--out", str(tmp_path / "d"), "--stocks", "60", "--days", "130"]) == 0
    assert main(["--home", home, "ingest", "--data", str(tmp_path / "d")]) == 0
    assert main(["--home", home, "features", "--config", str(cfg)]) == 0
    assert main(["--home", home, "store", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["--home", home, "train", "--model", "tcn", "--stockset", "csi300", "csi1000",
                 "--seed", "0", "1", "--stack-size", "2", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("training 2 cells as one stack") == 2
    assert out.count("MLflow run") == 4
    _, runs = _runs(Settings.from_env(home))
    assert sorted(r.info.run_name for r in runs) == [
        "tcn/csi1000/seed0", "tcn/csi1000/seed1", "tcn/csi300/seed0", "tcn/csi300/seed1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["stack"] for r in runs} == {"tcn/csi300/seed0,tcn/csi300/seed1",
                                                    "tcn/csi1000/seed0,tcn/csi1000/seed1"}
