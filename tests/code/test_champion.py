"""Champion/challenger against a real MLflow registry: the alias moves only to a better model."""
from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.cell import run_cell
from pipeline.champion import challenge, load_run_model
from pipeline.config import load_config
from pipeline.grid import Cell
from pipeline.models import model_state
from tests.synthetic_store import make_store


def _cells(run_id: str) -> list[dict]:
    return [{"cell": {"model": "tcn", "stockset": "large", "seed": 0}, "run_id": run_id}]


def test_alias_moves_to_a_better_challenger_and_not_to_a_worse_one(settings, tmp_path):
    store = make_store(tmp_path / "store", days=90)
    cfg = load_config("quick", overrides={"data": {"stocksets": ["large"]},
                                          "train": {"max_epochs": 3, "batch_days": 4}})
    good = run_cell(settings, cfg, Cell("tcn", "large", 0), store=store, progress=False)

    # A worse model of the same kind: the trained one with its output sign flipped.
    bad_model = load_run_model(settings, good.run_id)
    bad_model.head.weight.data.neg_()
    bad_model.head.bias.data.neg_()
    example = tracking.pack_input(store.features[None, 10:15, :4].transpose(0, 2, 1, 3),
                                  store.market[None, 10:15])
    tracking.setup(settings)
    with mlflow.start_run(experiment_id=good.experiment_id, run_name="worse") as run:
        tracking.log_model(bad_model, model_state(bad_model, "tcn", 6, 3, {}, 5), example,
                           name="tcn-large-seed0-worse", register=True)
        bad_id = run.info.run_id

    client = MlflowClient(settings.mlflow_uri)
    version = {mv.run_id: mv.version for mv in client.search_model_versions("name='tcn'")}

    (d,) = challenge(settings, cfg, _cells(bad_id), store=store)   # no champion yet: it wins
    assert d.decision == "promoted" and d.champion_version is None
    assert client.get_model_version_by_alias("tcn", "champion").version == version[bad_id]

    (d,) = challenge(settings, cfg, _cells(good.run_id), store=store)  # better: takes the alias
    assert d.decision == "promoted" and d.challenger_ic > d.champion_ic
    assert client.get_model_version_by_alias("tcn", "champion").version == version[good.run_id]

    (d,) = challenge(settings, cfg, _cells(bad_id), store=store)   # worse: alias stays
    assert d.decision == "kept" and d.challenger_ic < d.champion_ic
    assert client.get_model_version_by_alias("tcn", "champion").version == version[good.run_id]
    assert client.get_run(bad_id).data.tags["champion.decision"] == "kept"
    log = (settings.reports_dir / "champion_log.jsonl").read_text().splitlines()
    assert [line.count('"promoted"') for line in log] == [1, 1, 0]

    # Both at once: the worse one is tagged as having lost, on its version and its run.
    challenge(settings, cfg, _cells(bad_id) + _cells(good.run_id), store=store)
    assert client.get_model_version("tcn", version[bad_id]).tags["champion.decision"] == "lost"
    assert client.get_run(bad_id).data.tags["champion.decision"] == "lost"
    assert client.get_model_version_by_alias("tcn", "champion").version == version[good.run_id]
