"""A temporary Prefect API server for `miga demo`, started before the flow needs it.

Without PREFECT_API_URL, Prefect starts the same server itself when the flow first calls the
API (`SubprocessASGIServer`: uvicorn on Prefect's app factory, UI off). Doing it here instead
lets the seconds the server spends getting ready on a fresh home (mostly its database
migrations) overlap the imports the flow's tasks need (torch, MLflow, DuckDB, matplotlib), and
skips importing Prefect's server package in this process just to launch a subprocess (figures
in benchmarks/bench_pipeline.py).
The server's output goes to MIGA_HOME/logs/temporary-api.log.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import prefect
from prefect.settings import (PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED,
                              get_current_settings, temporary_settings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(port: int, log_file: Path) -> subprocess.Popen:
    env = {**os.environ,
           **get_current_settings().to_environment_variables(exclude_unset=True),
           # as Prefect's own temporary server: no UI, ephemeral mode (no background services)
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
           "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    with open(log_file, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the temporary Prefect API server exited with code "
                                   f"{proc.returncode}; its output is in {log_file}")
            try:
                if client.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the temporary Prefect API server was not ready after {timeout:.0f} s "
                       f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); see {log_file}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def temporary_api(log_dir: Path, timeout: float, preload=None) -> Iterator[str | None]:
    """Within the block, Prefect talks to a temporary API server started on entry and stopped
    on exit; `preload()` runs while it starts. Yields its URL, or None (and starts nothing)
    when PREFECT_API_URL already names a server or temporary servers are disabled."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        if preload:
            preload()
        yield None
        return
    log_file = Path(log_dir) / "temporary-api.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    print(f"Starting a temporary Prefect API server on {url} (log: {log_file})", flush=True)
    proc = _launch(port, log_file)
    try:
        if preload:
            preload()
        for attempt in range(3):
            try:
                _wait_ready(url, proc, timeout, log_file)
                break
            except RuntimeError:
                # the free port was taken between our check and the server's bind: another one
                if proc.poll() is None or attempt == 2:
                    raise
                port = _free_port()
                url = f"http://127.0.0.1:{port}/api"
                print(f"Port taken; starting it on {url}", flush=True)
                proc = _launch(port, log_file)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)   # the flow's last log lines, before it goes
    finally:
        _stop(proc)
