"""The local stack on 127.0.0.1: a Prefect server, process worker(s) on the pool, an MLflow server.

`miga stack start` launches each as its own process group, with logs in `MIGA_HOME/logs/` and
PIDs in `MIGA_HOME/pids/`; `miga stack stop` stops them by those PIDs (workers first, then the
Prefect server, as STACK-NOTES advises). Only subprocesses here: no Prefect import. Part of the
application's outer layer (flows/), with the CLI: the library in pipeline/ knows nothing of it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.settings import QUIET_ENV, Settings

POOL = os.environ.get("MIGA_WORK_POOL", "miga-gpu")
# The orchestrator's telemetry off too (the library's own services are in QUIET_ENV).
PREFECT_QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Stop order: workers before the server they talk to.
STOP_ORDER = ("worker", "prefect-server", "mlflow-server")


def host() -> str:
    """Where the servers listen: 127.0.0.1 unless MIGA_STACK_HOST opens them to other hosts."""
    return os.environ.get("MIGA_STACK_HOST", "127.0.0.1")


def prefect_port() -> int:
    return int(os.environ.get("MIGA_PREFECT_PORT", "4200"))


def mlflow_port() -> int:
    return int(os.environ.get("MIGA_MLFLOW_PORT", "5000"))


def api_url() -> str:
    return f"http://{host()}:{prefect_port()}/api"


def mlflow_ui_url() -> str:
    """Where a user opens the MLflow UI (links in the results table): MIGA_MLFLOW_UI, else the
    stack's MLflow server."""
    return os.environ.get("MIGA_MLFLOW_UI", f"http://127.0.0.1:{mlflow_port()}")


def _bin(name: str) -> str:
    """The console script next to this interpreter (the project's venv)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def stack_env(settings: Settings) -> dict[str, str]:
    """Environment for the servers, workers and any `prefect` CLI call against this stack."""
    env = dict(os.environ)
    env.update(QUIET_ENV)
    env.update(PREFECT_QUIET_ENV)
    env.update({
        "MIGA_HOME": str(settings.home),
        "PREFECT_HOME": str(settings.home / "prefect"),
        "PREFECT_API_URL": api_url(),
        "PREFECT_SERVER_API_HOST": host(),
        "PREFECT_SERVER_API_PORT": str(prefect_port()),
        "PREFECT_LOGGING_COLORS": "false",
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
    })
    return env


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.pids_dir / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def running(settings: Settings) -> dict[str, int]:
    """name -> pid of the stack processes whose PID files point at live processes."""
    out = {}
    if not settings.pids_dir.exists():
        return out
    for f in sorted(settings.pids_dir.glob("*.pid")):
        try:
            pid = int(f.read_text().strip())
        except ValueError:
            continue
        if _alive(pid):
            out[f.stem] = pid
    return out


def spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str]) -> int:
    """Start `argv` in a new session (its own process group), log to logs/<name>.log, write its PID."""
    settings.ensure()
    log = open(settings.logs_dir / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=os.getcwd(), start_new_session=True)
    _pidfile(settings, name).write_text(str(proc.pid))
    return proc.pid


def wait_http(url: str, timeout: float, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if pid is not None and not _alive(pid):
            raise RuntimeError(f"process {pid} exited before {url} answered; see the logs")
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def start_prefect_server(settings: Settings) -> int:
    env = stack_env(settings)
    pid = spawn(settings, "prefect-server",
                [_bin("prefect"), "server", "start", "--host", host(), "--port", str(prefect_port())], env)
    wait_http(f"{api_url()}/health", 90, pid)
    subprocess.run([_bin("prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                   env=env, check=True, capture_output=True)
    return pid


def start_worker(settings: Settings, index: int = 0) -> int:
    return spawn(settings, f"worker-{index}",
                 [_bin("prefect"), "worker", "start", "--pool", POOL, "--name", f"miga-worker-{index}"],
                 stack_env(settings))


def start_mlflow_server(settings: Settings) -> int:
    pid = spawn(settings, "mlflow-server",
                [_bin("mlflow"), "server", "--backend-store-uri", settings.mlflow_uri,
                 "--artifacts-destination", str(settings.mlflow_artifacts),
                 "--host", host(), "--port", str(mlflow_port()), "--workers", "1"],
                stack_env(settings))
    wait_http(f"http://{host()}:{mlflow_port()}/health", 120, pid)
    return pid


def start(settings: Settings, workers: int = 1, mlflow: bool = True) -> dict[str, int]:
    """Start what is not already running; returns name -> pid."""
    settings.ensure()
    live = running(settings)
    if "prefect-server" not in live:
        print(f"starting Prefect server on {api_url()} ...", flush=True)
        start_prefect_server(settings)
    for i in range(workers):
        if f"worker-{i}" not in live:
            start_worker(settings, i)
    if mlflow and "mlflow-server" not in live:
        print(f"starting MLflow server on http://{host()}:{mlflow_port()} ...", flush=True)
        start_mlflow_server(settings)
    live = running(settings)
    print(f"stack up: {', '.join(f'{k} (pid {v})' for k, v in live.items())}")
    print(f"logs: {settings.logs_dir}\nPrefect UI: http://{host()}:{prefect_port()}  "
          f"MLflow UI: http://{host()}:{mlflow_port()}")
    print(f"In your shell, point the prefect CLI at this server:\n"
          f"  export PREFECT_API_URL={api_url()} MIGA_HOME={settings.home}")
    return live


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # each process leads its own group (start_new_session)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def stop_process(pid: int, grace: float = 15.0) -> None:
    """SIGINT twice (the worker ignores the first for a while), then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGINT, grace), (signal.SIGTERM, 5.0),
                      (signal.SIGKILL, 5.0)):
        if not _alive(pid):
            break
        _signal_group(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
            try:  # reap if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _stop_rank(name: str) -> int:
    kind = name.rstrip("0123456789").rstrip("-")  # worker-0, worker-1, ... are all "worker"
    return STOP_ORDER.index(kind) if kind in STOP_ORDER else len(STOP_ORDER)


def stop(settings: Settings) -> list[str]:
    """Stop every stack process by its PID file; removes the PID files. Returns what was stopped."""
    stopped = []
    files = sorted(settings.pids_dir.glob("*.pid")) if settings.pids_dir.exists() else []
    files.sort(key=lambda f: _stop_rank(f.stem))
    for f in files:
        try:
            pid = int(f.read_text().strip())
        except ValueError:
            f.unlink(missing_ok=True)
            continue
        if _alive(pid):
            stop_process(pid)
            stopped.append(f"{f.stem} (pid {pid})")
        f.unlink(missing_ok=True)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return stopped


def status(settings: Settings) -> dict[str, int]:
    live = running(settings)
    print("\n".join(f"{k}: pid {v}" for k, v in live.items()) or "nothing running")
    return live
