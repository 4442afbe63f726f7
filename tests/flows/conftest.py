"""Flow tests: one Prefect test harness for the session, and a tiny synthetic data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = dict(n_stocks=60, n_days=750, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from pipeline.data.synth import SynthSpec, write_synthetic

    out = tmp_path_factory.mktemp("tiny_data")
    write_synthetic(out, SynthSpec(**TINY))
    return out


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    # Prefect's local state (results used by the cache) stays in tmp, not in ~/.prefect.
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
