"""Flow tests: one Prefect test harness for the session, and a tiny synthetic data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Prefect configures its console log handler when first imported, on the sys.stderr of that
# moment: imported inside a test that captures output (capsys), the handler would keep that
# test's stream, closed afterwards, and every later flow's log line fails. Import it here, on
# the session's streams (flows.miga first sets the telemetry opt-out, see flows/steps.py).
import flows.miga  # noqa: E402,F401

TINY = dict(n_stocks=60, n_days=750, seed=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from pipeline.data.synth import SynthSpec, write_synthetic

    out = tmp_path_factory.mktemp("tiny_data")
    write_synthetic(out, SynthSpec(**TINY))
    return out


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    # Prefect's local state (results used by the cache) stays in tmp, not in ~/.prefect; the
    # test server's analytics off, as everywhere the project starts one (no heartbeat, no
    # session id in its database).
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
