"""Shared fixtures.  Prefect's home is a temporary folder, set before prefect is imported;
one real ephemeral Prefect server (the test harness) serves the whole session."""

from __future__ import annotations

import os
import tempfile

_PREFECT_HOME = tempfile.mkdtemp(prefix="strata-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", os.path.join(_PREFECT_HOME, "storage"))
os.environ.setdefault("MPLBACKEND", "Agg")
# a Strata server the developer runs (`strata server start`) is not the tests': flows use the harness
os.environ.setdefault("STRATA_HOME", os.path.join(_PREFECT_HOME, "strata"))
# tiny models on a shared 2-core machine: one torch thread avoids OpenMP threads waiting for each
# other (measured: 0.6 s vs up to 70 s for the same 30 steps under load)
os.environ.setdefault("STRATA_TORCH_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """A real ephemeral Prefect API for flow tests (request it in tests that run flows)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
