"""Authentication when the stack binds beyond loopback (MIGA_STACK_HOST): Prefect's API auth
string and MLflow's basic-auth app, one user and password from the environment, the credentials
file, or generated into it (mode 0600). The server tests start the real stack as `miga stack
start` does, bound to 0.0.0.0, and talk to it over HTTP as another host would.

A default (loopback) stack answering without credentials is covered by test_deployment_e2e.py,
which talks to its server with no credentials; here only its environment is checked.
"""
from __future__ import annotations

import contextlib
import io
import socket
import stat
import subprocess
import time

import httpx
import pytest

from flows import stack
from pipeline.errors import MigaError
from pipeline.settings import Settings

AUTH_VARS = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING",
             "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MIGA_STACK_USER", "MIGA_STACK_PASSWORD")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch):
    for k in AUTH_VARS + ("MIGA_STACK_HOST",):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


# --- without servers -------------------------------------------------------------------------

@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("gpu-box.lan", False)])
def test_is_loopback(address, loopback):
    assert stack.is_loopback(address) is loopback


def test_loopback_stack_has_no_auth(clean_env, tmp_path):
    settings = Settings.from_env(tmp_path / "home")
    env = stack.stack_env(settings)
    assert stack.credentials(settings) is None
    assert not any(k in env for k in AUTH_VARS)
    assert not stack.credentials_path(settings).exists()


def test_generated_credentials_file(clean_env, tmp_path, capsys):
    clean_env.setenv("MIGA_STACK_HOST", "0.0.0.0")
    settings = Settings.from_env(tmp_path / "home")
    creds = stack.credentials(settings)
    path = stack.credentials_path(settings)
    out = capsys.readouterr().out
    assert out.strip() == f"stack credentials generated: {path} (mode 0600)"   # one line, no password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert creds.user == "miga" and len(creds.password) >= 30 and creds.source == str(path)
    assert creds.password not in repr(creds)
    # The second start reads the same file and prints nothing.
    assert stack.credentials(settings) == creds and capsys.readouterr().out == ""
    # The file is what a client sources: it exports the Prefect and MLflow client variables.
    shell = subprocess.run(["bash", "-c", f"set -a; . '{path}'; set +a; env"], capture_output=True,
                           text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert f"PREFECT_API_AUTH_STRING=miga:{creds.password}" in shell
    assert "MLFLOW_TRACKING_USERNAME=miga" in shell and f"MLFLOW_TRACKING_PASSWORD={creds.password}" in shell
    env = stack.stack_env(settings)
    assert env["PREFECT_API_AUTH_STRING"] == creds.auth_string
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (creds.user, creds.password)
    assert "PREFECT_SERVER_API_AUTH_STRING" not in env       # server-side only, set at its start


def test_environment_wins_and_writes_no_file(clean_env, tmp_path):
    clean_env.setenv("MIGA_STACK_HOST", "192.168.1.20")
    clean_env.setenv("MIGA_STACK_USER", "alice")
    clean_env.setenv("MIGA_STACK_PASSWORD", "a-long-enough-password")
    settings = Settings.from_env(tmp_path / "home")
    creds = stack.credentials(settings)
    assert (creds.user, creds.password) == ("alice", "a-long-enough-password")
    assert not stack.credentials_path(settings).exists()
    clean_env.setenv("MIGA_STACK_PASSWORD", "short")
    with pytest.raises(MigaError, match="at least 12"):
        stack.credentials(settings)
    clean_env.setenv("MIGA_STACK_PASSWORD", "a-long-enough-password")
    clean_env.setenv("MIGA_STACK_USER", "al:ice")
    with pytest.raises(MigaError, match="':'"):
        stack.credentials(settings)


def test_existing_file_is_read_and_made_private(clean_env, tmp_path, capsys):
    clean_env.setenv("MIGA_STACK_HOST", "0.0.0.0")
    settings = Settings.from_env(tmp_path / "home")
    path = stack.credentials_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("# mine\nexport MIGA_STACK_USER=bob\nMIGA_STACK_PASSWORD='pass word with #'\n")
    path.chmod(0o644)
    creds = stack.credentials(settings)
    assert (creds.user, creds.password) == ("bob", "pass word with #")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "pass word" not in capsys.readouterr().out
    path.write_text("MIGA_STACK_USER=bob\n")
    with pytest.raises(MigaError, match="no MIGA_STACK_PASSWORD"):
        stack.credentials(settings)


# --- the real stack on 0.0.0.0 ---------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory):
    """The stack as `miga stack start` starts it (Prefect server, one worker, MLflow server),
    bound to all interfaces, with generated credentials; stopped by PID at the end."""
    mp = pytest.MonkeyPatch()
    for k in AUTH_VARS:
        mp.delenv(k, raising=False)
    mp.setenv("MIGA_STACK_HOST", "0.0.0.0")
    mp.setenv("MIGA_PREFECT_PORT", str(_free_port()))
    mp.setenv("MIGA_MLFLOW_PORT", str(_free_port()))
    mp.setenv("PREFECT_WORKER_QUERY_SECONDS", "2")
    settings = Settings.from_env(tmp_path_factory.mktemp("auth") / "home").ensure()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            stack.start(settings, workers=1)
        yield settings, out.getvalue()
    finally:
        live = stack.running(settings)
        with contextlib.redirect_stdout(io.StringIO()):
            stack.stop(settings)
        mp.undo()
        assert stack.running(settings) == {}
        assert not any(stack._alive(p) for p in live.values())


def _urls() -> tuple[str, str]:
    # Bound to 0.0.0.0, so reachable on every local address; these requests carry no stack env.
    return f"http://127.0.0.1:{stack.mlflow_port()}", f"http://127.0.0.1:{stack.prefect_port()}/api"


@pytest.mark.slow
@pytest.mark.server
def test_mlflow_api_needs_the_credentials(auth_stack):
    settings, _ = auth_stack
    creds = stack.credentials(settings)
    url = _urls()[0] + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(url, timeout=90).status_code == 401
    assert httpx.get(url, auth=(creds.user, "not-the-password"), timeout=90).status_code == 401
    r = httpx.get(url, auth=(creds.user, creds.password), timeout=90)
    assert r.status_code == 200 and "experiments" in r.json()
    assert httpx.get(_urls()[0] + "/health", timeout=30).status_code == 200   # open, for probes


@pytest.mark.slow
@pytest.mark.server
def test_prefect_api_needs_the_credentials(auth_stack):
    settings, _ = auth_stack
    creds = stack.credentials(settings)
    api = _urls()[1]
    assert httpx.get(api + "/admin/version", timeout=30).status_code == 401
    assert httpx.post(api + "/flows/filter", json={}, timeout=30).status_code == 401
    assert httpx.post(api + "/flows/filter", json={}, auth=(creds.user, "not-the-password"),
                      timeout=30).status_code == 401
    assert httpx.get(api + "/admin/version", auth=(creds.user, creds.password), timeout=30).status_code == 200
    assert httpx.post(api + "/flows/filter", json={}, auth=(creds.user, creds.password),
                      timeout=30).status_code == 200
    assert httpx.get(api + "/health", timeout=30).status_code == 200       # open, for probes


@pytest.mark.slow
@pytest.mark.server
def test_the_stacks_worker_is_let_in(auth_stack):
    """The worker got the client credentials: it registers on the pool and polls it."""
    settings, _ = auth_stack
    creds = stack.credentials(settings)
    deadline, names = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        r = httpx.post(f"{_urls()[1]}/work_pools/{stack.POOL}/workers/filter", json={},
                       auth=(creds.user, creds.password), timeout=30)
        names = [w["name"] for w in r.json() if w["status"] == "ONLINE"]
        if "miga-worker-0" in names:
            break
        time.sleep(2)
    assert "miga-worker-0" in names, (settings.logs_dir / "worker-0.log").read_text()[-3000:]
    assert "Unauthorized" not in (settings.logs_dir / "worker-0.log").read_text()


@pytest.mark.slow
@pytest.mark.server
def test_credentials_stay_private(auth_stack, capsys):
    settings, start_output = auth_stack
    path = stack.credentials_path(settings)
    creds = stack.credentials(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"stack credentials generated: {path} (mode 0600)" in start_output
    assert creds.password not in start_output
    for f in [*settings.logs_dir.glob("*.log"), settings.home / "mlflow-auth.ini"]:
        assert creds.password not in f.read_text(errors="replace"), f
    assert set(stack.status(settings)) == {"prefect-server", "worker-0", "mlflow-server"}
    assert creds.password not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.server
def test_a_new_password_reaches_mlflow(auth_stack, monkeypatch):
    """MLflow sets the admin password only when it creates the user; with other credentials
    (here MIGA_STACK_PASSWORD) the check `start_mlflow_server` makes after MLflow is up must set
    the new password on the users DB: the new one lets in, the old one not. (The same check as a
    restart runs, without the restart's minute on this box.)"""
    settings, _ = auth_stack
    old = stack.credentials(settings)
    monkeypatch.setenv("MIGA_STACK_PASSWORD", "a-rotated-password-1")
    new = stack.credentials(settings)
    assert (new.user, new.password) == (old.user, "a-rotated-password-1")
    stack.ensure_mlflow_admin(settings, new, stack.stack_env(settings) | stack.mlflow_auth_env(settings, new))
    url = _urls()[0] + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(url, auth=(new.user, new.password), timeout=90).status_code == 200
    assert httpx.get(url, auth=(old.user, old.password), timeout=90).status_code == 401
