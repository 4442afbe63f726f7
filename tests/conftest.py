"""Shared fixtures. Every test gets its own home folder; nothing is written outside tmp."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.settings import QUIET_ENV, Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    home = tmp_path / "home"
    monkeypatch.setenv("MIGA_HOME", str(home))
    monkeypatch.delenv("MIGA_MLFLOW_URI", raising=False)
    return Settings.from_env(home).ensure()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "daily.parquet").exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
