"""The `miga` flow end to end on tiny data, under one Prefect test harness (real DuckDB, MLflow)."""
from __future__ import annotations

import json

import duckdb
import pytest
from mlflow import MlflowClient

from pipeline.settings import Settings

GRID = dict(models=["tcn"], stocksets=["csi300"], seeds=[0], config="quick", epochs=1)


def _task_runs(flow_state) -> dict:
    """The flow run's task runs by step: the run name less Prefect's "-abc" suffix, and
    "train-stack" for the (one) stack, named after its cells."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    fr_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr_id])))
    return {"train-stack" if r.name.startswith("train ") else r.name.rsplit("-", 1)[0]: r for r in runs}


def _task_states(flow_state) -> dict[str, str]:
    return {step: r.state.name for step, r in _task_runs(flow_state).items()}


def _upstream(task_run) -> set:
    """The task runs a task run's inputs (arguments and wait_for) came from: the graph's edges."""
    return {i.id for inputs in task_run.task_inputs.values() for i in inputs
            if getattr(i, "input_type", None) == "task_run"}


# Each step and the steps whose output it uses (data given: no synthesize step). Features and
# the store also take the ingest's data fingerprint.
EDGES = {"ingest": set(), "validate": {"ingest"}, "features": {"ingest", "validate"},
         "tensor-store": {"ingest", "features"}, "train-stack": {"tensor-store"}, "report": {"train-stack"},
         "champion": {"tensor-store", "train-stack", "report"},
         "next-day-predictions": {"tensor-store", "champion"}}


def _log_messages(flow_state) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)      # the run's last log lines, sent in batches
    fr_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[fr_id])))
    return [log.message for log in logs]


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
def test_flow_end_to_end_then_cached_rerun(prefect_harness, tiny_data, home, monkeypatch):
    import prefect._internal.analytics.milestones as milestones

    from flows.miga import miga

    settings = Settings.from_env(home)
    # As in a terminal, where Prefect marks its SDK milestones (and writes a device id for them)
    monkeypatch.setattr(milestones, "_is_interactive_terminal", lambda: True)
    first = miga(data=str(tiny_data), home=str(home), **GRID, return_state=True)
    assert first.is_completed(), first.message
    out = first.result()
    (row,) = out["results"]
    assert "error" not in row and row["metrics"]["test_ic"] == row["metrics"]["test_ic"]  # not NaN

    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(row["run_id"])
    assert run.data.tags["model"] == "tcn" and run.data.tags["stockset"] == "csi300"
    assert "test/ic" in run.data.metrics
    assert client.get_model_version_by_alias("tcn", "champion").run_id == row["run_id"]
    assert [d["decision"] for d in out["champion"]] == ["promoted"]

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    n, models = con.execute("SELECT count(*), list(DISTINCT model) FROM predictions").fetchone()
    con.close()
    assert n > 0 and models == ["tcn"]

    runs = _task_runs(first)
    assert runs["ingest"].state.name == "Completed" and runs["features"].state.name == "Completed"
    assert {step: _upstream(runs[step]) for step in EDGES} == \
        {step: {runs[u].id for u in ups} for step, ups in EDGES.items()}    # the task graph
    results_md = _artifact("miga-results")
    assert row["run_id"] in results_md and "| tcn | csi300 | 0 |" in results_md  # linked to MLflow
    (cell,) = json.loads(_artifact("miga-results-table"))
    assert cell["model"] == "tcn" and cell["seed"] == 0 and cell["error"] is None
    assert cell["test_ic"] == round(row["metrics"]["test_ic"], 4) and "long_only_ir" in cell
    assert cell["mlflow_run"].endswith(f"/runs/{row['run_id']}?workflowType=machine_learning")
    assert "Table 1" in _artifact("miga-report")
    logs = _log_messages(first)     # each step says what it did: here a cell's metrics and run
    assert any(row["run_id"] in m and f"test_ic {row['metrics']['test_ic']:.4f}" in m for m in logs), logs
    assert any(f"tensor store {out['store_fingerprint']} built" in m for m in logs), logs
    assert any(m.startswith("champion tcn: promoted") for m in logs), logs

    second = miga(data=str(tiny_data), home=str(home), **GRID, return_state=True)
    assert second.is_completed(), second.message
    states = _task_states(second)
    assert states["ingest"] == "Cached", states
    assert states["features"] == "Cached", states
    assert states["tensor-store"] == "Cached", states
    _assert_results_are_json()
    _assert_no_telemetry()


def _assert_no_telemetry():
    """The telemetry opt-out holds in Prefect too: no SDK device id (or milestones) under
    PREFECT_HOME, though the runs looked interactive, and the server's analytics are off."""
    import os
    from pathlib import Path

    from prefect.client.orchestration import get_client

    written = [p for p in Path(os.environ["PREFECT_HOME"]).rglob("*")
               if p.name in ("device_id", "milestones.json", ".sdk_telemetry")]
    assert not written, written
    with get_client(sync_client=True) as client:
        assert client.request("GET", "/admin/settings").json()["server"]["analytics_enabled"] is False


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


@pytest.mark.slow
def test_a_daily_append_through_the_flow(prefect_harness, tmp_path):
    """A data folder of daily/ and features/ month files, run through the flow; then tomorrow's
    file dropped into each folder and the flow run again: the ingest reads the two new files,
    the validate step checks that day's rows, and the tensor store is extended, not rebuilt."""
    import re
    import shutil

    import pandas as pd

    from flows.miga import miga
    from pipeline.data.synth import SynthSpec, write_synthetic
    from pipeline.store import TensorStore

    from .conftest import TINY

    full = write_synthetic(tmp_path / "full", SynthSpec(**TINY, n_features=6, panel_files="month",
                                                        price_files="month"))
    last = {}
    for folder in ("daily", "features"):   # the last day held back: tomorrow's delivery
        month = sorted((full / folder).glob("*.parquet"))[-1]
        frame = pd.read_parquet(month)
        day = frame.date.max()
        frame[frame.date < day].to_parquet(month, index=False)
        last[folder] = (frame[frame.date == day], day)
    home = tmp_path / "home"
    first = miga(data=str(full), home=str(home), **GRID, return_state=True)
    assert first.is_completed(), first.message
    store_fp = first.result()["store_fingerprint"]

    for folder, (rows, day) in last.items():
        rows.to_parquet(full / folder / f"{day.date()}.parquet", index=False)
    second = miga(data=str(full), home=str(home), **GRID, return_state=True)
    assert second.is_completed(), second.message
    logs = "\n".join(_log_messages(second))
    for folder in last:
        files = len(list((full / folder).glob("*.parquet")))
        assert f"{folder}/: {files} files, 1 new, 0 changed, {files - 1} unchanged (not read)" in logs
    checked = re.findall(r"prices\s+([\d,]+) rows\s+\d+ expectations\s+ok", logs)
    assert str(len(last["daily"][0])) in checked, logs   # the validate step: the new day's rows
    assert "warehouse:prices, the 1 date(s) the last ingest wrote" in logs
    new = TensorStore(Settings.from_env(home).store_dir / second.result()["store_fingerprint"])
    assert new.meta["extended_from"] == store_fp
    assert str(new.dates[-1]) == str(last["daily"][1].date())
    shutil.rmtree(full)
