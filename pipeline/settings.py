"""One settings object: where everything the pipeline writes lives.

Built at the entry point (CLI, flow, test fixture) and passed down. Nothing here runs at
import time: no folder is made until `Settings.ensure()` is called.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Offline stack: the library's own services otherwise try to phone home (STACK-NOTES.md);
# flows/ adds the orchestrator's.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def apply_quiet_env() -> None:
    """The telemetry opt-out (`QUIET_ENV`) in this process's environment, unless it says
    otherwise: before Prefect is imported (its SDK analytics start on import), so the flows
    package applies it first (flows/__init__.py)."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


DEFAULT_LOCK_WAIT = 600.0


@dataclass(frozen=True)
class Settings:
    """Paths under the home folder (env `MIGA_HOME`, default `./.miga`)."""

    home: Path
    mlflow_uri: str
    lock_wait: float = DEFAULT_LOCK_WAIT   # seconds to wait for a warehouse another process holds

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> "Settings":
        from pipeline.errors import ConfigError

        home = Path(home or os.environ.get("MIGA_HOME") or ".miga").expanduser().resolve()
        uri = os.environ.get("MIGA_MLFLOW_URI") or f"sqlite:///{home / 'mlflow.db'}"
        raw = os.environ.get("MIGA_LOCK_WAIT", str(DEFAULT_LOCK_WAIT))
        try:
            wait = float(raw)
        except ValueError:
            wait = -1.0
        if not 0 <= wait < float("inf"):
            raise ConfigError(f"MIGA_LOCK_WAIT must be a number of seconds >= 0, got {raw!r}")
        return cls(home=home, mlflow_uri=uri, lock_wait=wait)

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def runs_dir(self) -> Path:
        """Per-run scratch: checkpoints, plots before upload."""
        return self.home / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.home / "pids"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    def ensure(self) -> "Settings":
        """Create the home folder tree and keep libraries' scratch files inside it.

        A home that is a file, or a folder this user cannot write, is a ConfigError."""
        from pipeline.errors import ConfigError

        if self.home.exists() and not self.home.is_dir():
            raise ConfigError(f"home {self.home} is a file, not a folder: give --home (or "
                              "MIGA_HOME) a folder, new or existing")
        try:
            for p in (self.home, self.mlflow_artifacts, self.store_dir, self.reports_dir,
                      self.runs_dir, self.logs_dir, self.pids_dir, self.tmp_dir):
                p.mkdir(parents=True, exist_ok=True)
        except OSError as e:         # not a folder, no permission, a file in the way
            raise ConfigError(f"cannot write the home folder {self.home} ({e.strerror or e}): "
                              "give --home (or MIGA_HOME) a folder you can write") from None
        if not os.access(self.home, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write the home folder {self.home} (permission denied): "
                              "give --home (or MIGA_HOME) a folder you can write")
        apply_quiet_env()
        return self
