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


@pytest.mark.parametrize("command,how", [("evaluate", "term"), ("train", "ctrl-c"), ("train-lanes", "ctrl-c")])
def test_signal_leaves_nothing(tmp_path, command, how):
    """train-lanes: the stages train in processes of their own session, which a Ctrl-C does not reach, fed by
    threads that Prefect's task runner waits for (before: the command trained on to the end of its budget)."""
    r = scenarios.signal_case(command, how, tmp_path)
    assert not r["problems"], r["problems"]
    assert r["children_seen"] >= 1 and r["orphans"] == 0


@pytest.mark.parametrize("moment", ["started", "server"])
def test_early_ctrl_c_is_handled_like_a_late_one(tmp_path, moment):
    """Ctrl-C while the command imports Prefect and torch (it holds its lock already), and while its
    Prefect server starts: the same one line and exit code (before: click's "Aborted!", exit 1)."""
    r = scenarios.signal_case("train", "ctrl-c", tmp_path, moment=moment)
    assert not r["problems"], r["problems"]
    assert r["orphans"] == 0 and "--resume" in r["line"]


def test_ctrl_c_reaches_a_command_started_with_sigint_ignored(tmp_path):
    """A parent can hand down an ignored SIGINT (a script's ``cmd &``, a test run started so): the command,
    leading its own process group here, takes Ctrl-C back (before: ``strata train`` trained on)."""
    r = scenarios.signal_case("train", "ctrl-c", tmp_path, sigint_ignored=True)
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


def test_kill_9_of_the_command_alone_takes_its_server_along(tmp_path):
    """``kill -9`` reaches no handler: the ephemeral server must die with the command by itself."""
    import signal
    import time

    from tests.faults.procs import Tree, has_server

    args, ready = scenarios.command_args("generate", tmp_path)
    proc = start(args, env=scenarios.ephemeral_env(tmp_path))
    tree = Tree(proc)
    try:
        tree.wait_for(lambda: has_server(tree), 240, "the Prefect server")
        proc.send_signal(signal.SIGKILL)  # the command's pid only, as `kill -9 PID` does
        proc.wait()  # not communicate(): an orphaned server would hold the pipes open
        proc.stdout.close()
        proc.stderr.close()
        deadline = time.monotonic() + 10
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = tree.alive()
    finally:
        tree.reap()
    assert not left, f"orphaned after kill -9: {left}"
