"""The real deployment path, as a user runs it: a Prefect server, `prefect deploy`,
`prefect deployment run miga/full-pipeline`, a process worker with `--run-once`, then the
MLflow runs and the warehouse `predictions` table; everything stopped by PID at the end.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient

from pipeline import stack
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(env, path: str, body: dict | None = None):
    import httpx

    url = env["PREFECT_API_URL"] + path
    r = httpx.post(url, json=body or {}) if body is not None else httpx.get(url)
    r.raise_for_status()
    return r.json()


@pytest.mark.slow
@pytest.mark.server
def test_full_pipeline_deployment_runs_on_a_worker(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MIGA_PREFECT_PORT", str(_free_port()))
    settings = Settings.from_env(tmp_path / "home").ensure()
    env = stack.stack_env(settings) | {"PWD": str(ROOT)}
    pids = {}
    try:
        pids["prefect-server"] = stack.start_prefect_server(settings)
        subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=180)
        params = {"data": str(tiny_data), "models": ["tcn"], "stocksets": ["csi300"], "seeds": [0],
                  "config": "quick", "epochs": 1}
        out = subprocess.run([PREFECT, "deployment", "run", "miga/full-pipeline", "--params", json.dumps(params)],
                             cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)
        worker = subprocess.run([PREFECT, "worker", "start", "--pool", stack.POOL, "--run-once"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        run = _api(env, f"/flow_runs/{flow_run_id}")
        assert run["state"]["type"] == "COMPLETED", (run["state"], worker.stdout[-4000:], worker.stderr[-4000:])

        client = MlflowClient(settings.mlflow_uri)
        exp = client.get_experiment_by_name("miga")
        runs = client.search_runs([exp.experiment_id], filter_string="tags.model = 'tcn'")
        assert len(runs) == 1 and "test_ic" in runs[0].data.metrics

        con = duckdb.connect(str(settings.warehouse), read_only=True)
        n = con.execute("SELECT count(*) FROM predictions WHERE model = 'tcn'").fetchone()[0]
        con.close()
        assert n > 0
    finally:
        live = stack.running(settings)
        stack.stop(settings)
    assert "prefect-server" in live
    assert stack.running(settings) == {}
    assert not any(stack._alive(p) for p in live.values())
