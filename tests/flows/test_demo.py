"""The README's main command, as a user runs it: `miga demo` in a fresh home folder.

A real temporary Prefect API server (started by the demo, stopped when it ends), a real MLflow
sqlite store and a real DuckDB warehouse, all inside the home folder. One epoch per cell.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.settings import Settings

MIGA = str(Path(sys.executable).parent / "miga")
pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_miga_demo_end_to_end(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MIGA_", "MLFLOW_TRACKING"))}
    env["HOME"] = str(tmp_path / "user")          # the user's own ~/.prefect must stay untouched
    out = subprocess.run([MIGA, "--home", str(home), "demo", "--epochs", "1"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr

    # the results table and the champion decisions are printed
    for model in ("miga-conv", "tcn"):
        assert f"champion {model}: promoted (no champion yet)" in text
        assert re.search(rf"^{model} +csi300 +0 +-?\d\.\d{{4}} ", text, re.M)

    # every grid cell is a finished MLflow run in the home folder's store
    settings = Settings.from_env(str(home))
    client = MlflowClient(settings.mlflow_uri)
    exp = client.get_experiment_by_name("miga")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    cells = [r for r in runs if "model" in r.data.tags]
    assert cells == runs                                      # the report has its own experiment
    reports = client.get_experiment_by_name("miga-reports")
    assert [r.info.run_name for r in client.search_runs([reports.experiment_id])] == ["report miga"]
    assert sorted((r.data.tags["model"], r.data.tags["stockset"]) for r in cells) == [
        ("miga-conv", "csi1000"), ("miga-conv", "csi300"), ("tcn", "csi1000"), ("tcn", "csi300")]

    # Prefect's state (API database, persisted task results) is inside the home folder
    assert (home / "prefect" / "prefect.db").exists()
    assert any((home / "prefect" / "storage").iterdir())
    assert not (tmp_path / "user" / ".prefect").exists()

    # the temporary API server was started by the demo and is gone when it returns
    url = re.search(r"temporary Prefect API server on http://127\.0\.0\.1:(\d+)/api", text)
    assert url, text[:2000]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(url.group(1)))) != 0
    assert (home / "logs" / "temporary-api.log").exists()
