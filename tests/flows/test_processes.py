"""Several real `miga` processes on one home: readers side by side, a second writer that waits
for the first (or gives up with one line), two trainings at once, Ctrl-C during training.

Every command here is a separate process started as a user starts it (the `miga` script of
this environment), on one home with a real DuckDB warehouse and MLflow store.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from flows.cli import main
from pipeline.settings import Settings

MIGA = str(Path(sys.executable).with_name("miga"))
HOLD = """
import duckdb, sys, time, pathlib
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
release = pathlib.Path(sys.argv[2])
deadline = time.time() + 120
while not release.exists() and time.time() < deadline:
    time.sleep(0.05)
con.close()
"""


@pytest.fixture(scope="module")
def home(tiny_data, tmp_path_factory) -> Path:
    """A home with the tiny data ingested and the quick config's tensor store built; no MLflow
    store yet (the first training creates it)."""
    home = tmp_path_factory.mktemp("processes") / "home"
    assert main(["--home", str(home), "ingest", "--data", str(tiny_data)]) == 0
    assert main(["--home", str(home), "store", "--config", "quick"]) == 0
    return home


def _miga(home: Path, *argv: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([MIGA, "--home", str(home), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """Read the process's stderr until `text` shows (tqdm writes without newlines)."""
    seen, fd, deadline = "", proc.stderr.fileno(), time.time() + timeout
    while text not in seen:
        assert time.time() < deadline and proc.poll() is None, f"never said {text!r}: {seen}"
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 65536).decode(errors="replace")
    return seen


def _fingerprint(home: Path) -> tuple:
    con = duckdb.connect(str(Settings.from_env(home).warehouse), read_only=True)
    try:
        return con.execute("SELECT count(*), sum(close) FROM prices").fetchone()
    finally:
        con.close()


@pytest.mark.slow
def test_two_trainings_and_a_validation_at_once(home):
    """Two `miga train` started together on a home with no MLflow store yet (the store's first
    creation is serialized), and a read-only `miga validate` beside them."""
    from mlflow import MlflowClient

    settings = Settings.from_env(home)
    assert not (settings.home / "mlflow.db").exists()
    procs = [_miga(home, "train", "--model", "linear", "--config", "quick", "--seed", str(seed))
             for seed in (0, 1)]
    procs.append(_miga(home, "validate"))
    results = [_finish(p) for p in procs]
    for rc, out, err in results:
        assert rc == 0 and "Traceback" not in err, err
    assert "test_ic" in results[0][1] and "test_ic" in results[1][1]
    runs = MlflowClient(settings.mlflow_uri).search_runs(
        [e.experiment_id for e in MlflowClient(settings.mlflow_uri).search_experiments()],
        filter_string="tags.model = 'linear'")
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_second_writer_waits_for_the_first_or_gives_up(home, tiny_data, tmp_path):
    settings = Settings.from_env(home)
    before = _fingerprint(home)
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(settings.warehouse), str(release)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"

        # A bounded wait that runs out: one line naming the holder, exit 2, the warehouse as it was.
        rc, _, err = _finish(_miga(home, "ingest", "--data", str(tiny_data), MIGA_LOCK_WAIT="0.5"))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and "Traceback" not in err, err
        assert lines[-1].startswith("error: another miga process holds the warehouse"), err
        assert f"PID {holder.pid}" in err and "MIGA_LOCK_WAIT" in lines[-1]

        # The default wait: it says it waits and for whom, then runs once the holder is done.
        writer = _miga(home, "ingest", "--data", str(tiny_data))
        said = _wait_for(writer, "waiting for the warehouse")
        release.touch()
        rc, _, err = _finish(writer)
        assert rc == 0, said + err
        assert f"held by PID {holder.pid}" in said + err
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert _fingerprint(home) == before


@pytest.mark.slow
def test_readers_run_while_a_writer_holds_nothing(home):
    """Readers open the warehouse read-only: two at once do not wait for each other."""
    procs = [_miga(home, "validate", MIGA_LOCK_WAIT="0") for _ in range(2)]
    for rc, out, err in (_finish(p) for p in procs):
        assert rc == 0 and "ok" in out, err


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_in_one_line_and_the_run_resumes(home):
    from mlflow import MlflowClient

    settings = Settings.from_env(home)
    argv = ("train", "--model", "tcn", "--config", "quick", "--epochs", "6", "--seed", "5")
    proc = _miga(home, *argv)
    said = _wait_for(proc, "1/6")              # an epoch is done (and checkpointed)
    proc.send_signal(signal.SIGINT)
    rc, _, err = _finish(proc)
    err = said + err
    assert rc == 130, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("interrupted: `miga train` stopped"), err
    client = MlflowClient(settings.mlflow_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(exps, filter_string="tags.model = 'tcn' and tags.seed = '5'")
    assert run.info.status == "KILLED"

    rc, out, err = _finish(_miga(home, *argv))   # the same command goes on with the same run
    assert rc == 0, err
    (again,) = client.search_runs(exps, filter_string="tags.model = 'tcn' and tags.seed = '5'")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags.get("resumed") == "true"


def test_a_bad_model_setting_is_refused_before_any_run_opens(home, tmp_path, capsys):
    from mlflow import MlflowClient

    cfg = tmp_path / "bad.toml"
    quick = Path(__file__).parents[2] / "configs" / "quick.toml"
    cfg.write_text(quick.read_text() + "\n[models.tcn]\nnosuch_width = 3\n")
    settings = Settings.from_env(home)

    def n_runs() -> int:
        if not (settings.home / "mlflow.db").exists():
            return 0
        client = MlflowClient(settings.mlflow_uri)
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    before = n_runs()
    assert main(["--home", str(home), "train", "--model", "tcn", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) ['nosuch_width'] for model 'tcn'" in err and len(err.splitlines()) == 1
    assert n_runs() == before


GRID_RUN = """
import sys
from flows.miga import miga
miga(data=sys.argv[1], home=sys.argv[2], models=["linear", "tcn"], stocksets=["csi300"],
     seeds=[0], config="quick", epochs=20)
"""


@pytest.mark.slow
def test_kill_9_during_the_flow_grid_then_the_rerun_reuses_and_resumes(prefect_harness, tiny_data,
                                                                       tmp_path):
    """The flow's process group is killed (SIGKILL) while the second stack trains; the same flow
    again keeps the finished cell (no second run) and resumes the killed one in its own run."""
    from mlflow import MlflowClient
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    settings = Settings.from_env(home)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    argv = [sys.executable, "-c", GRID_RUN, str(tiny_data), str(home)]

    def runs(model: str):
        client = MlflowClient(settings.mlflow_uri)
        return client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.model = '{model}'")

    flow = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:        # linear's cell is logged and tcn has a checkpoint: kill the lot
            assert flow.poll() is None and time.time() < deadline, flow.stderr.read().decode()[-3000:]
            ckpts = list(settings.runs_dir.glob("tcn-csi300-s0-*/last.pt")) \
                if settings.runs_dir.exists() else []
            if ckpts:
                assert [r.info.status for r in runs("linear")] == ["FINISHED"]
                break
            time.sleep(0.1)
        os.killpg(flow.pid, signal.SIGKILL)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
        flow.wait()
        flow.stderr.close()
    killed_run = (ckpts[0].parent / "mlflow_run_id").read_text().strip()
    (linear_run,) = runs("linear")

    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.info.run_id for r in runs("linear")] == [linear_run.info.run_id]   # reused
    (tcn,) = runs("tcn")
    assert tcn.info.run_id == killed_run and tcn.info.status == "FINISHED"
    assert tcn.data.tags.get("resumed") == "true"
