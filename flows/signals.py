"""SIGTERM and Ctrl-C for the ``strata`` commands: exit within seconds, one line saying what was
kept, and no process left behind.

Python's default SIGTERM ends the process at once, without ``finally`` blocks or ``atexit``: the
ephemeral Prefect API server (a ``uvicorn`` child that Prefect stops from ``atexit``) was left
running, reparented to init.  ``install`` turns SIGTERM (and SIGHUP) into ``Terminated``, a
``KeyboardInterrupt``, so the command unwinds like Ctrl-C: every ``with`` and ``finally`` runs (the
temporary files of an unfinished write are removed, children such as ``accelerate launch`` are
stopped by their owner), the command prints its line, and ``atexit`` stops the server.  Prefect's
own SIGTERM bridge, installed while a flow runs, hands the signal back to this handler.

``stop_children`` is the last guard: every process started by this one that is still alive (found
through ``psutil``) gets SIGTERM, then SIGKILL.

``tie_ephemeral_server`` covers ``kill -9``, which no handler sees: the ephemeral server is started
with ``PR_SET_PDEATHSIG`` so the kernel stops it when the command dies, and in a session of its own
so that a terminal's Ctrl-C does not stop it before the command has recorded the interruption (a
Ctrl-C during ``strata train`` hung for 45 s+ while Prefect retried a server that had gone).
"""

from __future__ import annotations

import os
import signal
import time

import psutil

from pipeline.lock import die_with_parent

KEPT = {  # command -> what an interrupted run keeps (the one line it prints)
    "preprocess": "finished files are kept (cached); rerun the same command to do the rest",
    "train": "the last checkpoint and the best exported stage are kept; rerun with --resume to continue",
    "evaluate": "nothing was written (the JSON is written only when complete); rerun to evaluate",
    "generate": "finished job folders are kept, unfinished ones removed; rerun with the same --seed "
                "for the same audio",
    "serve": "finished job folders are kept; scheduled runs that had not finished are not",
    "demo-data": "finished renderings are kept; rerun to do the rest",
    "assess": "nothing was written; rerun to assess",
    "report": "nothing was written; rerun to build the page",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread was (handled like Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame) -> None:
    # a second signal while unwinding must not interrupt the cleanup of the first
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


def install() -> None:
    """SIGTERM/SIGHUP -> ``Terminated`` in the main thread (no-op elsewhere).

    A signal ignored on entry: SIGHUP stays ignored (``nohup``).  SIGINT is ignored on entry when a
    shell without job control starts a command in the background (``cmd &`` in a script), so that a
    terminal's Ctrl-C, which reaches the shell's whole process group, spares it: kept so.  A command
    that leads its own process group (``setsid``, a supervisor, a test harness) shares it with no
    shell, so a SIGINT it receives was meant for it: it gets Ctrl-C's meaning back.  (Python leaves
    an inherited SIG_IGN alone; such a ``strata train`` trained on after a Ctrl-C to its group.)"""
    try:
        signal.signal(signal.SIGTERM, _raise)
        if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
            signal.signal(signal.SIGHUP, _raise)
        if signal.getsignal(signal.SIGINT) == signal.SIG_IGN and os.getpgrp() == os.getpid():
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass


def forget_unhandled_interrupt() -> None:
    """Clear CPython's "KeyboardInterrupt went unhandled" mark once the command has handled one.

    The interpreter sets the mark when a Ctrl-C ends code that an extension runs through ``PyRun_*``
    (during the imports of torch and Prefect), even when the ``KeyboardInterrupt`` is caught further
    up; at exit it then resets SIGINT and kills itself with it (strace: ``kill(self, SIGINT)`` after
    finalisation): exit -2 instead of 130, for 2 of 40 Ctrl-Cs 0.3-4 s into ``strata train``, 0 of 45
    with this.  Every ``PyRun_*`` call clears the mark first, so running an empty string clears it."""
    import ctypes

    try:
        ctypes.pythonapi.PyRun_SimpleString(b"")
    except (AttributeError, OSError):  # not CPython: no such mark
        pass


def command_of(argv: list[str]) -> str | None:
    """The ``strata`` subcommand in ``argv`` (the first word that names one)."""
    return next((a for a in argv[1:] if a in KEPT), None)


def exit_code(exc: BaseException) -> int:
    """128 + the signal number, as a shell reports a process ended by it."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def interrupted_line(command: str | None, exc: BaseException) -> str:
    """``interrupted (SIGTERM): <what was kept>``."""
    name = exc.args[0] if isinstance(exc, Terminated) else "Ctrl-C"
    kept = KEPT.get(command or "", "finished files are kept; rerun to continue")
    return f"interrupted ({name}): {kept}"


def descendants(pid: int | None = None) -> list[int]:
    """Pids of every live process below ``pid`` (default: this one); zombies left out."""
    try:
        procs = psutil.Process(os.getpid() if pid is None else pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p.pid for p in procs if _status(p) not in (None, psutil.STATUS_ZOMBIE)]


def _status(proc: psutil.Process) -> str | None:
    try:
        return proc.status()
    except psutil.Error:  # gone
        return None


def stop_children(grace: float = 3.0) -> list[int]:
    """SIGTERM every descendant, wait up to ``grace`` seconds, SIGKILL the rest; returns their pids."""
    pids = descendants()
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    return pids


def _alive(pid: int) -> bool:
    """Running (a zombie child is reaped here; a zombie of another parent counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    try:
        return _status(psutil.Process(pid)) not in (None, psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def tie_ephemeral_server() -> bool:
    """Make the ephemeral Prefect server that this command may start die with it, even on ``kill -9``
    (``PR_SET_PDEATHSIG`` in the server process).  Only when no API URL is configured (then the server
    module is imported anyway), and only for a server started from the main thread (the signal follows
    the thread that started the child, and the main thread lives as long as the command).  Returns
    whether the hook was installed."""
    import functools
    import subprocess
    import threading
    import types

    # local: keeps prefect out of `import flows.signals` until this runs
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return False
    try:
        import prefect.server.api.server as server
    except Exception:  # noqa: BLE001 - a Prefect without this module: nothing to tie
        return False
    if isinstance(getattr(server, "subprocess", None), types.SimpleNamespace):
        return True

    def popen(*args, **kwargs):
        if threading.current_thread() is threading.main_thread() and "preexec_fn" not in kwargs:
            kwargs["preexec_fn"] = functools.partial(die_with_parent, signal.SIGTERM)
            # its own session: a terminal's Ctrl-C reaches the command, not its API server, which must
            # stay up while the command records the interruption (then atexit stops it)
            kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(*args, **kwargs)

    shim = types.SimpleNamespace(**{k: getattr(subprocess, k) for k in dir(subprocess) if not k.startswith("__")})
    shim.Popen = popen
    server.subprocess = shim
    return True
