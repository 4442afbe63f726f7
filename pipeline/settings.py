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


@dataclass(frozen=True)
class Settings:
    """Paths under the home folder (env `MIGA_HOME`, default `./.miga`)."""

    home: Path
    mlflow_uri: str

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> "Settings":
        home = Path(home or os.environ.get("MIGA_HOME") or ".miga").expanduser().resolve()
        uri = os.environ.get("MIGA_MLFLOW_URI") or f"sqlite:///{home / 'mlflow.db'}"
        return cls(home=home, mlflow_uri=uri)

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
        """Create the home folder tree and keep libraries' scratch files inside it."""
        for p in (self.home, self.mlflow_artifacts, self.store_dir, self.reports_dir,
                  self.runs_dir, self.logs_dir, self.pids_dir, self.tmp_dir):
            p.mkdir(parents=True, exist_ok=True)
        for k, v in QUIET_ENV.items():
            os.environ.setdefault(k, v)
        return self
