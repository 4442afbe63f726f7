"""The `miga` flow end to end on tiny data, under one Prefect test harness (real DuckDB, MLflow)."""
from __future__ import annotations

import duckdb
import pytest
from mlflow import MlflowClient

from pipeline.settings import Settings

GRID = dict(models=["tcn"], stocksets=["csi300"], seeds=[0], config="quick", epochs=1)


def _task_states(flow_state) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    fr_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr_id])))
    return {r.name.rsplit("-", 1)[0] if r.name.startswith(("ingest", "features", "validate", "tensor-store"))
            else r.name: r.state.name for r in runs}


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert arts, f"no Prefect artifact {key!r}"
    return arts[-1].data


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One home for the module: the second test reuses the first one's warehouse (cached steps)."""
    return tmp_path_factory.mktemp("flow") / "home"


@pytest.mark.slow
def test_flow_end_to_end_then_cached_rerun(prefect_harness, tiny_data, home):
    from flows.miga import miga

    settings = Settings.from_env(home)
    first = miga(data=str(tiny_data), home=str(home), **GRID, return_state=True)
    assert first.is_completed(), first.message
    out = first.result()
    (row,) = out["results"]
    assert "error" not in row and row["metrics"]["test_ic"] == row["metrics"]["test_ic"]  # not NaN

    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(row["run_id"])
    assert run.data.tags["model"] == "tcn" and run.data.tags["stockset"] == "csi300"
    assert "test_ic" in run.data.metrics
    assert client.get_model_version_by_alias("tcn", "champion").run_id == row["run_id"]
    assert [d["decision"] for d in out["champion"]] == ["promoted"]

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    n, models = con.execute("SELECT count(*), list(DISTINCT model) FROM predictions").fetchone()
    con.close()
    assert n > 0 and models == ["tcn"]

    states = _task_states(first)
    assert states["ingest"] == "Completed" and states["features"] == "Completed"
    results_md = _artifact("miga-results")
    assert row["run_id"] in results_md and "| tcn | csi300 | 0 |" in results_md  # linked to MLflow
    assert "Table 1" in _artifact("miga-report")

    second = miga(data=str(tiny_data), home=str(home), **GRID, return_state=True)
    assert second.is_completed(), second.message
    states = _task_states(second)
    assert states["ingest"] == "Cached", states
    assert states["features"] == "Cached", states
    assert states["tensor-store"] == "Cached", states
    _assert_results_are_json()


def _assert_results_are_json():
    """The cached steps' persisted results are JSON: a worker reading them back unpickles nothing."""
    import json
    import os
    from pathlib import Path

    records = [p for p in (Path(os.environ["PREFECT_HOME"]) / "storage").rglob("*") if p.is_file()]
    assert records
    for p in records:
        record = json.loads(p.read_text())
        assert record["metadata"]["serializer"]["type"] == "json", p


@pytest.mark.slow
def test_failed_cell_does_not_stop_the_others(prefect_harness, tiny_data, home):
    from flows.miga import miga

    state = miga(data=str(tiny_data), home=str(home), models=["no-such-model", "lstm"],
                 stocksets=["csi300"], seeds=[0], config="quick", epochs=1, return_state=True)
    assert state.is_failed()
    assert "no-such-model" in state.message and "1 of 2 grid cells failed" in state.message
    client = MlflowClient(Settings.from_env(home).mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("miga").experiment_id],
                              filter_string="tags.model = 'lstm'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # the healthy cell went all the way: its model became lstm's champion
    assert client.get_model_version_by_alias("lstm", "champion").run_id == runs[0].info.run_id
