"""The local stack on 127.0.0.1: a Prefect server, process worker(s) on the pool, an MLflow server.

`miga stack start` launches each as its own process group, with logs in `MIGA_HOME/logs/` and
PIDs in `MIGA_HOME/pids/`; `miga stack stop` stops them by those PIDs (workers first, then the
Prefect server, as STACK-NOTES advises). Only subprocesses here: no Prefect import. Part of the
application's outer layer (flows/), with the CLI: the library in pipeline/ knows nothing of it.

When `MIGA_STACK_HOST` opens the servers beyond loopback, each turns on its own authentication
(Prefect's API auth string, MLflow's basic-auth app) with one user and password: from
`MIGA_STACK_USER`/`MIGA_STACK_PASSWORD`, else `MIGA_HOME/stack-credentials`, else generated into
that file (mode 0600). On loopback nothing changes: no authentication.
"""
from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import MigaError
from pipeline.settings import QUIET_ENV, Settings
from pipeline.tracking import UI_VIEW

POOL = os.environ.get("MIGA_WORK_POOL", "miga-gpu")
# The orchestrator's telemetry off too (the library's own services are in QUIET_ENV).
PREFECT_QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
# Stop order: workers before the server they talk to.
STOP_ORDER = ("worker", "prefect-server", "mlflow-server")
# Beyond loopback: where the credentials live (under MIGA_HOME), the user when none is given,
# and MLflow basic-auth's shortest password.
CREDENTIALS_FILE = "stack-credentials"
DEFAULT_USER = "miga"
MIN_PASSWORD = 12


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


def is_loopback(address: str) -> bool:
    """Whether `address` only listens on this host: localhost, 127.0.0.0/8 or ::1. Anything else
    (0.0.0.0, ::, a LAN address, a host name) is reachable from other hosts."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_enabled() -> bool:
    """Authentication is on exactly when the stack binds beyond loopback."""
    return not is_loopback(host())


@dataclass(frozen=True)
class Credentials:
    """The one user of an authenticated stack: Prefect's auth string is `user:password`, and the
    same pair is MLflow basic-auth's admin. `source` says where they came from (never the password)."""

    user: str
    password: str = field(repr=False)
    source: str

    @property
    def auth_string(self) -> str:
        return f"{self.user}:{self.password}"

    def client_env(self) -> dict[str, str]:
        """What a Prefect or MLflow client (worker, CLI, flow) needs to talk to this stack."""
        return {"PREFECT_API_AUTH_STRING": self.auth_string,
                "MLFLOW_TRACKING_USERNAME": self.user, "MLFLOW_TRACKING_PASSWORD": self.password}

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(self.auth_string.encode()).decode()


def credentials_path(settings: Settings) -> Path:
    return settings.home / CREDENTIALS_FILE


def _check_user(user: str, where: str) -> None:
    if not user or ":" in user or any(c.isspace() for c in user):
        raise MigaError(f"stack user from {where} must be non-empty, without ':' or spaces")


def _check(user: str, password: str, where: str) -> None:
    _check_user(user, where)
    if len(password) < MIN_PASSWORD:
        raise MigaError(f"stack password from {where} must have at least {MIN_PASSWORD} characters "
                        "(MLflow basic-auth's rule)")


def _read_credentials_file(path: Path) -> Credentials:
    """KEY=VALUE lines, shell-quoted (the file can be sourced); MIGA_STACK_USER and
    MIGA_STACK_PASSWORD are ours, the client variables written beside them are ignored here."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(0o600)
        print(f"stack credentials: {path} was readable by others (mode {mode:o}); now 0600", flush=True)
    try:
        tokens = shlex.split(path.read_text(), comments=True)
    except ValueError as e:
        raise MigaError(f"stack credentials file {path}: cannot parse it ({e})") from None
    values = dict(t.partition("=")[::2] for t in tokens if "=" in t)
    password = values.get("MIGA_STACK_PASSWORD", "")
    if not password:
        raise MigaError(f"stack credentials file {path} has no MIGA_STACK_PASSWORD line; "
                        "fix it, or delete it to have a new password generated")
    user = values.get("MIGA_STACK_USER") or DEFAULT_USER
    _check(user, password, str(path))
    return Credentials(user, password, str(path))


def _write_credentials_file(path: Path, user: str, password: str) -> None:
    """Create `path` with mode 0600 from the start (O_EXCL: never over an existing file)."""
    lines = [f"# miga stack credentials. Clients: set -a; . {shlex.quote(str(path))}; set +a",
             f"MIGA_STACK_USER={shlex.quote(user)}", f"MIGA_STACK_PASSWORD={shlex.quote(password)}"]
    lines += [f"{k}={shlex.quote(v)}" for k, v in Credentials(user, password, "").client_env().items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def credentials(settings: Settings) -> Credentials | None:
    """The stack's credentials when it binds beyond loopback, else None (no authentication).

    MIGA_STACK_PASSWORD (with MIGA_STACK_USER, default "miga") from the environment wins; else
    MIGA_HOME/stack-credentials; else a random password is generated into that file (mode 0600)
    and its path printed. The password itself is never printed or logged."""
    if not auth_enabled():
        return None
    env_password = os.environ.get("MIGA_STACK_PASSWORD")
    if env_password:
        user = os.environ.get("MIGA_STACK_USER") or DEFAULT_USER
        _check(user, env_password, "MIGA_STACK_USER/MIGA_STACK_PASSWORD")
        return Credentials(user, env_password, "environment (MIGA_STACK_USER/MIGA_STACK_PASSWORD)")
    path = credentials_path(settings)
    if not path.exists():
        user = os.environ.get("MIGA_STACK_USER") or DEFAULT_USER
        _check_user(user, "MIGA_STACK_USER")
        try:
            _write_credentials_file(path, user, secrets.token_urlsafe(24))
            print(f"stack credentials generated: {path} (mode 0600)", flush=True)
        except FileExistsError:  # another `miga stack start` just wrote it: use that one
            pass
    return _read_credentials_file(path)


_READ = object()   # "read the credentials" (`credentials(settings)`), for callers that have none


def stack_env(settings: Settings, creds: Credentials | None | object = _READ) -> dict[str, str]:
    """Environment for the servers, workers and any `prefect` CLI call against this stack;
    beyond loopback it carries the client credentials (the servers' own are added at their
    start). creds: the stack's credentials when the caller has them already."""
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
    creds = credentials(settings) if creds is _READ else creds
    if creds is not None:
        env.update(creds.client_env())
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


def start_prefect_server(settings: Settings, creds: Credentials | None | object = _READ) -> int:
    creds = credentials(settings) if creds is _READ else creds
    env = stack_env(settings, creds)
    if creds is not None:  # /api/health stays open (the wait below); everything else needs it
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.auth_string
    pid = spawn(settings, "prefect-server",
                [_bin("prefect"), "server", "start", "--host", host(), "--port", str(prefect_port())], env)
    wait_http(f"{api_url()}/health", 90, pid)
    subprocess.run([_bin("prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                   env=env, check=True, capture_output=True)
    return pid


def start_worker(settings: Settings, index: int, env: dict[str, str]) -> int:
    return spawn(settings, f"worker-{index}",
                 [_bin("prefect"), "worker", "start", "--pool", POOL, "--name", f"miga-worker-{index}"],
                 env)


def mlflow_auth_env(settings: Settings, creds: Credentials) -> dict[str, str]:
    """The basic-auth app's server side: its config (users DB in MIGA_HOME, READ for users an
    admin adds later), the bootstrap admin = the stack's user (created with our password on the
    first start; the password goes by environment, not into the ini), and the CSRF key."""
    ini = settings.home / "mlflow-auth.ini"
    db = f"sqlite:///{settings.home / 'mlflow-auth.db'}".replace("%", "%%")   # configparser's escape
    ini.write_text("[mlflow]\n"
                   "default_permission = READ\n"
                   f"database_uri = {db}\n"
                   f"admin_username = {creds.user.replace('%', '%%')}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": creds.user, "MLFLOW_AUTH_ADMIN_PASSWORD": creds.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or secrets.token_hex(32)}  # one worker: a key per start is enough for CSRF


# Run with the MLflow server's environment: makes the stack's user an admin with the stack's
# password when the users DB holds another one (MLflow only sets it when it creates the user).
_SYNC_ADMIN = """
import os
from mlflow.server.auth import auth_config, store
store.init_db(auth_config.database_uri)
user, password = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"], os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
if not store.has_user(user, use_primary=True):
    store.create_user(user, password, is_admin=True)
else:
    store.update_user(user, password=password, is_admin=True)
"""


def _mlflow_auth_status(creds: Credentials) -> int:
    req = urllib.request.Request(
        f"http://{host()}:{mlflow_port()}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": creds.basic_header()})
    try:
        with urllib.request.urlopen(req, timeout=90) as r:  # PBKDF2 + a loaded box: slow
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def start_mlflow_server(settings: Settings, creds: Credentials | None | object = _READ) -> int:
    creds = credentials(settings) if creds is _READ else creds
    env = stack_env(settings, creds)
    argv = [_bin("mlflow"), "server", "--backend-store-uri", settings.mlflow_uri,
            "--artifacts-destination", str(settings.mlflow_artifacts),
            "--host", host(), "--port", str(mlflow_port()), "--workers", "1"]
    if creds is not None:
        env.update(mlflow_auth_env(settings, creds))
        argv += ["--app-name", "basic-auth"]
    pid = spawn(settings, "mlflow-server", argv, env)
    wait_http(f"http://{host()}:{mlflow_port()}/health", 120, pid)  # /health needs no login
    if creds is not None:
        ensure_mlflow_admin(settings, creds, env)
    return pid


def ensure_mlflow_admin(settings: Settings, creds: Credentials, server_env: dict[str, str]) -> None:
    """Check that the running MLflow server lets the stack's credentials in; when it refuses them
    (a users DB from an earlier start with another password, or a non-admin of that name), set
    them on its users DB (`server_env`: the server's environment) and check again."""
    code = _mlflow_auth_status(creds)   # one request: a password hash check takes seconds here
    if code in (401, 403):
        out = subprocess.run([sys.executable, "-c", _SYNC_ADMIN], env=server_env, capture_output=True,
                             text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError("could not set the MLflow admin password from the stack credentials: "
                               + out.stderr.strip()[-2000:])
        code = _mlflow_auth_status(creds)
    if code != 200:
        raise RuntimeError(f"MLflow server answers HTTP {code} to the stack credentials; "
                           f"see {settings.logs_dir / 'mlflow-server.log'}")


def start(settings: Settings, workers: int = 1, mlflow: bool = True) -> dict[str, int]:
    """Start what is not already running; returns name -> pid."""
    settings.ensure()
    creds = credentials(settings)          # read (or generated) once for every process started
    live = running(settings)
    if "prefect-server" not in live:
        print(f"starting Prefect server on {api_url()} ...", flush=True)
        start_prefect_server(settings, creds)
    worker_env = stack_env(settings, creds)
    for i in range(workers):
        if f"worker-{i}" not in live:
            start_worker(settings, i, worker_env)
    if mlflow and "mlflow-server" not in live:
        print(f"starting MLflow server on http://{host()}:{mlflow_port()} ...", flush=True)
        start_mlflow_server(settings, creds)
    live = running(settings)
    print(f"stack up: {', '.join(f'{k} (pid {v})' for k, v in live.items())}")
    print(f"logs: {settings.logs_dir}\nPrefect UI: http://{host()}:{prefect_port()}  "
          f"MLflow UI: http://{host()}:{mlflow_port()}/#/experiments{UI_VIEW}")
    print(f"In your shell, point the prefect CLI at this server:\n"
          f"  export PREFECT_API_URL={api_url()} MIGA_HOME={settings.home} DO_NOT_TRACK=1")
    if creds is not None:
        how = (f"set -a; . {shlex.quote(creds.source)}; set +a" if creds.source == str(credentials_path(settings))
               else "export PREFECT_API_AUTH_STRING=USER:PASSWORD MLFLOW_TRACKING_USERNAME=USER "
                    "MLFLOW_TRACKING_PASSWORD=PASSWORD")
        print(f"Authentication is on (bound to {host()}); user {creds.user!r}, credentials from "
              f"{creds.source}. Clients (prefect CLI, workers, MLflow):\n  {how}")
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
