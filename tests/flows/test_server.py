"""``strata server start|stop|status``: a real Prefect server in a temporary Strata state folder,
a command that runs against it (its flow run shows up in that server's API), and a stop that
leaves no process behind; the fallback to the ephemeral API with one hint line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows.server import HINT

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path) -> dict[str, str]:
    """A user's environment: no API URL, a Strata state folder and Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(PYTHONPATH=str(ROOT), STRATA_HOME=str(tmp / "strata"), PREFECT_HOME=str(tmp / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", STRATA_SERVER_PORT="")
    return env


def _strata(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _processes_with(text: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _flow_runs(api: str) -> list[dict]:
    req = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow  # starts a real Prefect server (~10-25 s)
def test_server_start_use_stop(tmp_path):
    from tests.flows.test_preprocess_flow import good_corpus

    env, port = _env(tmp_path), _free_port()
    api = f"http://127.0.0.1:{port}/api"
    assert _strata(env, "server", "status").stdout.strip() == "not running"
    started = _strata(env, "server", "start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"started: {api}" in started.stdout
        pid = int((tmp_path / "strata" / "server" / "server.pid").read_text())
        assert psutil.pid_exists(pid)
        status = _strata(env, "server", "status")
        assert status.stdout.startswith(f"running: {api} (pid {pid}"), status.stdout
        again = _strata(env, "server", "start", "--port", str(port))
        assert again.returncode == 0 and "already running" in again.stdout

        # a command uses the server: no hint, and its flow run is in this server's database
        raw = good_corpus(tmp_path / "raw", n=2)
        pre = _strata(env, "preprocess", "--raw", str(raw), "--out", str(tmp_path / "data"))
        assert pre.returncode == 0, pre.stderr
        assert HINT not in pre.stderr
        assert (tmp_path / "data" / "manifest.json").is_file()
        runs = _flow_runs(api)
        assert [(r["name"] != "", r["state_type"]) for r in runs] == [(True, "COMPLETED")], runs
    finally:
        stopped = _strata(env, "server", "stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith(f"stopped: {api}"), stopped.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _processes_with(f"--port {port}") == []
    assert not (tmp_path / "strata" / "server" / "server.pid").exists()
    assert _strata(env, "server", "status").stdout.strip() == "not running"
    assert _strata(env, "server", "stop").stdout.strip() == "not running"


def _connect(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from flows.server import connect; import os; print(connect(), os.environ.get('PREFECT_API_URL'))"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_no_server_falls_back_to_ephemeral_with_one_hint(tmp_path):
    res = _connect(_env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ephemeral", "None"]
    assert res.stderr.strip() == HINT


def test_a_users_api_url_is_respected(tmp_path):
    env = _env(tmp_path)
    env["PREFECT_API_URL"] = "http://prefect.example:4200/api"
    res = _connect(env)
    assert res.stdout.split() == ["env", "http://prefect.example:4200/api"]
    assert res.stderr == ""


def test_a_stale_pid_file_is_not_a_server(tmp_path):
    """A pid file left by a crash, naming a process that is not a Prefect server (here: this test)."""
    state = tmp_path / "strata" / "server"
    state.mkdir(parents=True)
    (state / "server.pid").write_text(f"{os.getpid()}\n")
    (state / "server.url").write_text("http://127.0.0.1:9/api\n")
    env = _env(tmp_path)
    assert _strata(env, "server", "status").stdout.strip() == "not running"
    assert _connect(env).stdout.split()[0] == "ephemeral"
    assert _strata(env, "server", "stop").stdout.strip() == "not running"
    assert not (state / "server.pid").exists()


def test_a_busy_port_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _strata(_env(tmp_path), "server", "start", "--port", str(port))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], res.stderr
