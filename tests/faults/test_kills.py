"""``kill -9`` of the real ``strata`` processes at seeded random moments: nothing that looks complete
but is not, an exact ``--resume`` with at most ``checkpoint_every`` steps lost, the same audio for the
same seed.  (``tests/faults/scenarios.py``; ``bench/faults.py`` runs more rounds.)

The commands use the session's Prefect test server (``PREFECT_API_URL``), so they start in seconds;
``tests/faults/test_signals.py`` covers the commands' own ephemeral servers."""

from __future__ import annotations

import pytest

from tests.faults import scenarios
from tests.faults.procs import strata_env

pytestmark = pytest.mark.slow  # real commands killed part-way


@pytest.fixture()
def api_env(prefect_harness) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return strata_env(PREFECT_API_URL=PREFECT_API_URL.value())


def test_generate_kill_9_then_same_seed(api_env, tmp_path):
    r = scenarios.generate_kills(api_env, tmp_path, rounds=2, seed=12)
    assert not r["problems"], r["problems"]
    assert r["kills"] >= 1


def test_evaluate_kill_9_never_partial_json(api_env, tmp_path):
    r = scenarios.evaluate_kills(api_env, tmp_path, rounds=2, seed=7)
    assert not r["problems"], r["problems"]
    assert r["kills"] >= 1


def test_train_kill_9_then_resume_is_exact(api_env, tmp_path):
    r = scenarios.train_kills(api_env, tmp_path, rounds=2, seed=3)
    assert not r["problems"], r["problems"]
    assert r["kills"] == 2 and r["steps_lost_max"] <= 4


def test_train_kill_9_under_accelerate_2_processes(api_env, tmp_path):
    """The command killed, its ``accelerate launch`` and 2 workers stop by themselves (the run's lock
    comes free), and ``--resume`` under 2 processes reaches the uninterrupted run's weights."""
    r = scenarios.train_kills(api_env, tmp_path, rounds=1, seed=5, processes=2)
    assert not r["problems"], r["problems"]
    assert r["kills"] == 1
