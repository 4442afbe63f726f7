"""The real deployment path, as a user runs it: a Prefect server, `prefect deploy`,
`prefect deployment run miga/full-pipeline`, process workers, then the MLflow runs and the
warehouse `predictions` table; everything stopped by PID at the end.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient

from flows import stack
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
pytestmark = [pytest.mark.slow, pytest.mark.server]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(env, path: str) -> dict:
    import httpx

    r = httpx.get(env["PREFECT_API_URL"] + path, timeout=30)
    r.raise_for_status()
    return r.json()


def _run_deployment(env, params: dict) -> str:
    out = subprocess.run([PREFECT, "deployment", "run", "miga/full-pipeline", "--params", json.dumps(params)],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120)
    return re.search(r"UUID: ([0-9a-f-]{36})", out.stdout).group(1)


def _wait_final(env, flow_run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(env, f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server started by `flows.stack`, with both deployments deployed."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MIGA_PREFECT_PORT", str(_free_port()))
    settings = Settings.from_env(tmp_path_factory.mktemp("e2e") / "home").ensure()
    env = stack.stack_env(settings) | {"PWD": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    try:
        stack.start_prefect_server(settings)
        subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=180)
        yield settings, env
    finally:
        live = stack.running(settings)
        stack.stop(settings)
        mp.undo()
        assert "prefect-server" in live
        assert stack.running(settings) == {}
        assert not any(stack._alive(p) for p in live.values())


def test_full_pipeline_deployment_runs_on_a_worker(server, tiny_data):
    settings, env = server
    params = {"data": str(tiny_data), "models": ["tcn"], "stocksets": ["csi300"], "seeds": [0],
              "config": "quick", "epochs": 1}
    flow_run_id = _run_deployment(env, params)
    worker = subprocess.run([PREFECT, "worker", "start", "--pool", stack.POOL, "--run-once"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    run = _get(env, f"/flow_runs/{flow_run_id}")
    assert run["state"]["type"] == "COMPLETED", (run["state"], worker.stdout[-3000:], worker.stderr[-3000:])

    client = MlflowClient(settings.mlflow_uri)
    exp = client.get_experiment_by_name("miga")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.model = 'tcn'")
    assert len(runs) == 1 and "test/ic" in runs[0].data.metrics
    assert client.get_model_version_by_alias("tcn", "champion").run_id == runs[0].info.run_id

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    n = con.execute("SELECT count(*) FROM predictions WHERE model = 'tcn'").fetchone()[0]
    con.close()
    assert n > 0


def test_grid_fans_out_over_two_workers(server, tiny_data):
    """fan_out=True: each training stack (the cells of one model) is a `miga-stack/stack` run;
    two workers on the pool share them."""
    settings, env = server
    # One run at a time per worker (--limit 1), so the second worker must take cells too.
    pids = [stack.spawn(settings, f"worker-{i}",
                        [PREFECT, "worker", "start", "--pool", stack.POOL, "--name", f"fan-{i}", "--limit", "1"],
                        env) for i in range(2)]
    params = {"data": str(tiny_data), "models": ["lstm", "tcn"], "stocksets": ["csi300"], "seeds": [1, 2],
              "config": "quick", "epochs": 1, "fan_out": True}
    # The parent flow runs in this process, against the same server; the cells go to the pool.
    out = subprocess.run([sys.executable, "-c", "import json,sys; from flows.miga import miga; "
                          "print(json.dumps(miga(**json.loads(sys.argv[1]))['results']))", json.dumps(params)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == 4 and all("error" not in r for r in results), results
    cell_runs = [r for r in _post_filter(env) if r["name"].startswith("train ")]
    assert sorted(r["name"].split(" x")[0] for r in cell_runs) == ["train lstm", "train tcn"]
    assert all(r["state"]["type"] == "COMPLETED" for r in cell_runs)
    # The worker that ran a flow run labels it with its name. (Counting run ids in the worker
    # logs over-counts: a worker that loses the race for a run also logs its id, "aborted".)
    took = Counter(r["labels"].get("prefect.worker.name") for r in cell_runs)
    assert set(took) == {"fan-0", "fan-1"}, took  # both workers ran a stack
    for i in range(2):
        assert "miga-stack" in (settings.logs_dir / f"worker-{i}.log").read_text()
    assert all(stack._alive(p) for p in pids)


def _post_filter(env) -> list[dict]:
    import httpx

    r = httpx.post(env["PREFECT_API_URL"] + "/flow_runs/filter", json={"limit": 100}, timeout=30)
    r.raise_for_status()
    return r.json()
