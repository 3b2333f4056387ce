"""SIGTERM and Ctrl-C on the commands: exit within seconds, one line saying what was kept, and no
process left behind (the process tree is counted while the command runs and after it ends), and a
second ``strata train`` on a busy run folder refused at once.

Each test starts a real ``strata`` command with its own ephemeral Prefect server (~10-20 s here);
``bench/faults.py`` runs every command with both signals."""

from __future__ import annotations

import pytest

from pipeline.lock import holder
from tests.faults import scenarios
from tests.faults.procs import start

pytestmark = pytest.mark.slow  # real commands, each with its own Prefect server


@pytest.mark.parametrize("command,how", [("evaluate", "term"), ("generate", "ctrl-c")])
def test_signal_leaves_nothing(tmp_path, command, how):
    r = scenarios.signal_case(command, how, tmp_path)
    assert not r["problems"], r["problems"]
    assert r["children_seen"] >= 1 and r["orphans"] == 0


def test_train_sigterm_refuses_second_and_leaves_nothing(tmp_path):
    refused = []

    def second_train(args, proc):
        second = start(args)
        _, err = second.communicate(timeout=60)
        refused.append(second.returncode == 2 and f"in use by strata train (pid {proc.pid}" in err)

    r = scenarios.signal_case("train", "term", tmp_path, during=second_train)
    assert refused == [True]
    assert not r["problems"], r["problems"]
    assert "--resume" in r["line"]
    assert holder(tmp_path / "run") is None
