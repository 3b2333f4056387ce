"""One local Prefect server that every ``strata`` command uses (DESIGN 5 and 6: ``strata server``).

Without a server, the first flow of every command starts Prefect's ephemeral API (14-23 s on 2
cores).  ``strata server start`` runs ``prefect server start`` (uvicorn, SQLite) once, detached,
in its own process group, with its own Prefect home under the Strata state folder:

    $STRATA_HOME/server/         (default ~/.cache/strata/server)
        prefect/                 PREFECT_HOME of the server: the SQLite database, UI build
        server.pid  server.url   written once /api/health answers; removed by ``stop``
        server.log               the server's output

Before a command imports its flow it calls :func:`connect`: a ``PREFECT_API_URL`` the user set
(environment or Prefect profile) is respected; else a running Strata server is used; else the
command falls back to the ephemeral API with one dim hint line on stderr.  This module imports
nothing from Prefect at import time, so the check costs milliseconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from pipeline.errors import StrataError
from pipeline.lock import pid_exists

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4210  # not Prefect's 4200, so a user's own Prefect server can run beside it
HEALTH_TIMEOUT_S = 0.5  # per check while a command starts: an answer or the ephemeral fallback
START_TIMEOUT_S = 180.0  # first start on a new database: ~20 s on an idle 2-core machine
STOP_TIMEOUT_S = 30.0
HINT = "hint: run 'strata server start' to skip the ~20 s Prefect start-up"


class ServerError(StrataError):
    """The Strata server could not be started or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int  # also the process group of the server and its children
    url: str  # the API, e.g. http://127.0.0.1:4210/api

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def state_dir() -> Path:
    """``$STRATA_HOME/server``, default ``~/.cache/strata/server``."""
    home = os.environ.get("STRATA_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "strata")
    return Path(home) / "server"


def _files(state: Path | None) -> tuple[Path, Path, Path]:
    state = state or state_dir()
    return state / "server.pid", state / "server.url", state / "server.log"


def _alive(pid: int) -> bool:
    """A live process that is a Prefect server (guards against a reused pid)."""
    if not pid_exists(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return False
        cmd = proc.cmdline()
    except psutil.AccessDenied:
        return True  # its command line is not ours to read: the signal check is all there is
    except psutil.Error:  # gone
        return False
    return any("prefect" in a for a in cmd) and any("server" in a for a in cmd)


def healthy(url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """``GET {url}/health`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def recorded(state: Path | None = None) -> ServerInfo | None:
    """The server the state folder records, if its process is alive (health not checked)."""
    pid_file, url_file, _ = _files(state)
    try:
        pid = int(pid_file.read_text().strip())
        url = url_file.read_text().strip()
    except (OSError, ValueError):
        return None
    return ServerInfo(pid, url) if _alive(pid) else None


def running(state: Path | None = None, timeout: float = HEALTH_TIMEOUT_S) -> ServerInfo | None:
    """The Strata server, if its process is alive and its API answers."""
    info = recorded(state)
    return info if info is not None and healthy(info.url, timeout) else None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _server_env(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE"):  # the server is the API; it needs no client settings
        env.pop(key, None)
    env["PREFECT_HOME"] = str(state / "prefect")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry (no network on many machines)
    return env


def start(port: int | None = None, host: str = DEFAULT_HOST, state: Path | None = None,
          timeout: float = START_TIMEOUT_S) -> tuple[ServerInfo, bool]:
    """Start the server in the background and wait for ``/api/health``; ``(info, started)``,
    ``started`` False when it was already running.  Port: ``--port``, ``STRATA_SERVER_PORT``, 4210."""
    state = state or state_dir()
    info = running(state, timeout=5.0)
    if info is not None:
        return info, False
    old = recorded(state)
    if old is not None:  # alive but not answering: a start under way, or a hung server
        raise ServerError(f"{state}: a server (pid {old.pid}) is starting or not answering at {old.url}; "
                          "wait, or run 'strata server stop'")
    port = int(port or os.environ.get("STRATA_SERVER_PORT") or DEFAULT_PORT)
    if not _port_free(host, port):
        raise ServerError(f"port {port} on {host} is in use: choose another with --port (or STRATA_SERVER_PORT)")
    state.mkdir(parents=True, exist_ok=True)
    pid_file, url_file, log_file = _files(state)
    url = f"http://{host}:{port}/api"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, env=_server_env(state), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _write(url_file, url + "\n")
    _write(pid_file, f"{proc.pid}\n")  # now `stop` can end it, even while it starts
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _remove(state)
            tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise ServerError(f"the Prefect server exited with code {proc.returncode}: {tail[0]} (log: {log_file})")
        if healthy(url, timeout=1.0):
            return ServerInfo(proc.pid, url), True
        time.sleep(0.25)
    stop(state)
    raise ServerError(f"the Prefect server did not answer at {url} within {timeout:.0f} s (log: {log_file})")


def _remove(state: Path) -> None:
    pid_file, url_file, _ = _files(state)
    for p in (pid_file, url_file):
        p.unlink(missing_ok=True)


def stop(state: Path | None = None, timeout: float = STOP_TIMEOUT_S) -> ServerInfo | None:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL after ``timeout``);
    the recorded server, or None when none was running.  Removes the pid and URL files."""
    state = state or state_dir()
    info = recorded(state)
    if info is None:
        _remove(state)  # stale files of a server that died
        return None
    try:
        os.killpg(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while pid_exists(info.pid, group=True) and time.monotonic() < deadline:
        _reap(info.pid)
        time.sleep(0.1)
    if pid_exists(info.pid, group=True):
        try:
            os.killpg(info.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while pid_exists(info.pid, group=True) and time.monotonic() < deadline + 5:
            _reap(info.pid)
            time.sleep(0.1)
    _remove(state)
    return info


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the server (else it stays a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _settings_api_url() -> str | None:
    """The API URL of the active Prefect profile (or of a test harness), if any."""
    # local: keeps prefect out of `import flows.server` until this runs
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def hint(message: str = HINT) -> None:
    """One dim line on stderr."""
    dim = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    print(f"\x1b[2m{message}\x1b[0m" if dim else message, file=sys.stderr, flush=True)


def connect(quiet: bool = False) -> str:
    """Point this process's Prefect client at an API before a flow runs, and say which:
    ``"env"`` (the user's ``PREFECT_API_URL``), ``"server"`` (the running Strata server),
    ``"profile"`` (an API URL in the active Prefect profile) or ``"ephemeral"`` (none: the
    flow starts Prefect's ephemeral API; one hint line unless ``quiet``)."""
    if os.environ.get("PREFECT_API_URL"):
        return "env"
    info = running()
    if info is not None:
        os.environ["PREFECT_API_URL"] = info.url
        if "prefect.context" in sys.modules:  # settings already read: read them again
            # local: keeps prefect out of `import flows.server` until this runs
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        return "server"
    if _settings_api_url():
        return "profile"
    if not quiet:
        hint()
    return "ephemeral"
