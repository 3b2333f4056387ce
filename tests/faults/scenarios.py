"""Fault scenarios on the real ``strata`` commands, shared by tests/faults (a few rounds) and
``bench/faults.py`` (many): each returns counts, and ``problems`` (anything lost, half-written or
left running) that must stay empty."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np

from tests.faults.procs import Tree, cmdline, has_server, start, strata_env

JOB_FILES = {"audio.wav", "tier_1000.wav", "tier_2000.wav", "spectrogram.png", "meta.json"}


def run_to_end(args, env, timeout=600) -> str:
    proc = start(args, env=env)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"strata {' '.join(args[:1])} failed ({proc.returncode}): {err[-3000:]}")
    return out


def kill_when(args, env, cond, timeout=240, after: float = 0.0) -> int:
    """Start the command, wait until ``cond()`` (then ``after`` seconds more), ``kill -9`` it;
    the whole session goes (a server of its own would otherwise be orphaned by kill -9)."""
    proc = start(args, env=env)
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            if proc.poll() is not None:
                return proc.returncode  # finished before the moment came: still a valid case
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the moment to kill")
            time.sleep(0.02)
        time.sleep(after)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    return proc.returncode


def job_problems(out: Path) -> tuple[list[Path], list[str]]:
    """(job folders a reader sees, problems): each must be complete and readable."""
    import soundfile as sf

    problems = []
    # job folders are job-*; dot names are unfinished (readers skip them); OUT/report is the listening report
    jobs = sorted(p for p in out.iterdir() if p.name.startswith("job-")) if out.exists() else []
    for job in jobs:
        names = {p.name for p in job.iterdir()}
        if names != JOB_FILES:
            problems.append(f"{job.name}: incomplete job folder {sorted(names)}")
            continue
        try:
            json.loads((job / "meta.json").read_text())
            sf.read(str(job / "audio.wav"))
        except Exception as e:  # noqa: BLE001 - counted
            problems.append(f"{job.name}: unreadable ({e})")
    return jobs, problems


def generate_kills(env, root: Path, rounds: int, seed: int) -> dict:
    """``kill -9`` of ``strata generate`` at random moments; then the same seed gives the same audio."""
    import soundfile as sf

    from tests.helpers_run import make_run

    run = make_run(root)
    args = ["generate", "--run", str(run), "--seconds", "2", "--seed", str(5 + seed), "--count", "2"]
    ref = root / "ref"
    run_to_end(args + ["--out", str(ref)], env)
    refs, problems = job_problems(ref)
    rng = random.Random(seed)
    out = root / "jobs"
    kills = 0
    for _ in range(rounds):
        code = kill_when(args + ["--out", str(out)], env, lambda: out.exists() and any(out.iterdir()),
                         after=rng.uniform(0.0, 2.0))
        kills += code == -signal.SIGKILL
        problems += job_problems(out)[1]
    survivors = {p.name for p in job_problems(out)[0]}
    run_to_end(args + ["--out", str(out)], env)
    jobs, more = job_problems(out)
    problems += more
    if list(out.glob(".tmp-*")):
        problems.append(f"unfinished folders left: {[p.name for p in out.glob('.tmp-*')]}")
    fresh = sorted((j for j in jobs if j.name not in survivors), key=lambda j: j.name[-2:])
    for a, b in zip(fresh, refs):
        if not np.array_equal(sf.read(str(a / "audio.wav"))[0], sf.read(str(b / "audio.wav"))[0]):
            problems.append(f"{a.name}: the same seed gave different audio than {b.name}")
    if len(fresh) != 2:
        problems.append(f"rerun wrote {len(fresh)} jobs, expected 2")
    return {"kills": kills, "rounds": rounds, "problems": problems}


def evaluate_kills(env, root: Path, rounds: int, seed: int) -> dict:
    """``kill -9`` of ``strata evaluate --json`` at random moments: no JSON, or the whole one."""
    from tests.helpers_data import make_dataset
    from tests.helpers_run import make_run

    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=3.0, roll="notes")
    run = make_run(root, genres=["alpha", "beta"])
    target = root / "eval.json"
    args = ["evaluate", "--data", str(data), "--run", str(run), "--json", str(target)]
    t0 = time.monotonic()
    run_to_end(args, env)
    full = time.monotonic() - t0
    good = json.loads(target.read_text())
    good.pop("timings", None)
    target.unlink()
    rng = random.Random(seed)
    kills, problems = 0, []
    for _ in range(rounds):
        kills += kill_when(args, env, lambda: True, after=rng.uniform(0.3, full)) == -signal.SIGKILL
        if target.exists():  # the kill came after the rename: the whole evaluation
            try:
                got = json.loads(target.read_text())
                got.pop("timings", None)
                if got != good:
                    problems.append("evaluation JSON differs from a complete run's")
            except ValueError:
                problems.append("partial evaluation JSON")
            target.unlink()
    return {"kills": kills, "rounds": rounds, "problems": problems}


def train_kills(env, root: Path, rounds: int, seed: int, every: int = 4, steps: int = 30, processes: int = 1) -> dict:
    """``kill -9`` of ``strata train`` at a random step, ``--resume`` to the end, each round from
    where the last kill left it; the final weights equal an uninterrupted run's.  ``processes=2``:
    each stage under ``accelerate launch`` (the kill reaches the command only; its launcher and
    workers must stop by themselves, and no second writer may start while they run)."""
    from safetensors.numpy import load_file

    from models import load_stage
    from pipeline.config import save_config
    from pipeline.run import list_checkpoints, read_metrics
    from tests.helpers_data import make_dataset, tiny_train_config

    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=2.0, roll="notes")
    cfg = tiny_train_config(max_steps=40, eval_every=8, checkpoint_every=every, log_every=1, keep_checkpoints=2,
                            num_processes=processes)
    save_config(cfg, root / "cfg.yaml")
    base = ["train", "--data", str(data), "--config", str(root / "cfg.yaml"), "--stages", "0",
            "--max-steps", str(steps)]
    ref, killed = root / "ref", root / "killed"
    run_to_end(base + ["--run", str(ref)], env)
    rng = random.Random(seed)
    kills, problems, lost = 0, [], []
    for r in range(rounds):
        done = max([s for s, _ in list_checkpoints(killed, 0)], default=0)
        step = rng.randint(done + 1, steps - 1) if done + 1 < steps else steps

        def reached(step=step) -> bool:
            try:
                return any(row.get("step", 0) >= step for row in read_metrics(killed, 0))
            except (OSError, ValueError):  # a row being written
                return False

        resume = ["--resume"] if list_checkpoints(killed, 0) else []
        code = kill_when(base + ["--run", str(killed)] + resume, env, reached)
        if code != -signal.SIGKILL:
            continue
        kills += 1
        if not _writers_gone(killed, 30):
            problems.append(f"round {r}: processes still hold {killed} 30 s after the kill (orphan writers)")
        ckpts = [s for s, _ in list_checkpoints(killed, 0)]
        lost.append(step - (ckpts[-1] if ckpts else 0))
        if not ckpts or step - ckpts[-1] > every:
            problems.append(f"round {r}: killed at step >= {step}, latest checkpoint {ckpts[-1:]}: "
                            f"more than checkpoint_every={every} steps lost")
        try:
            load_stage(killed / "stages/0")
        except Exception as e:  # noqa: BLE001 - counted
            problems.append(f"round {r}: exported stage unreadable after the kill ({e})")
    resume = ["--resume"] if list_checkpoints(killed, 0) else []
    run_to_end(base + ["--run", str(killed)] + resume, env)
    for name in (f"checkpoints/stage0/step-{steps}/model.safetensors", "stages/0/model.safetensors"):
        a, b = load_file(str(ref / name)), load_file(str(killed / name))
        if a.keys() != b.keys() or not all(np.array_equal(a[k], b[k]) for k in a):
            problems.append(f"{name}: resumed weights differ from the uninterrupted run's")
    return {"kills": kills, "rounds": rounds, "steps_lost_max": max(lost, default=0), "problems": problems}


def _writers_gone(run: Path, timeout: float) -> bool:
    """The run folder's lock comes free (every process sharing it has ended) within ``timeout`` s."""
    from pipeline.lock import holder

    deadline = time.monotonic() + timeout
    while holder(run) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ----------------------------------------------------------------------------- signals


def ephemeral_env(root: Path) -> dict[str, str]:
    """No API URL: the command starts (and must stop) its own Prefect server."""
    # its start-up took over Prefect's default 30 s on a loaded machine (2 cores, 5 jobs): the command failed
    env = strata_env(PREFECT_HOME=str(root / "prefect-home"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    env.pop("PREFECT_API_URL", None)
    return env


def command_args(command: str, root: Path) -> tuple[list[str], callable]:
    """Arguments of a long-enough run of ``command`` and the moment to signal it."""
    from pipeline.config import save_config
    from tests.helpers_data import make_dataset, tiny_train_config
    from tests.helpers_run import make_run

    if command in ("train", "train-lanes"):  # train-lanes: both stages side by side, each in a process of its own
        lanes = 2 if command == "train-lanes" else 1
        data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=1.0, roll="notes")
        save_config(tiny_train_config(max_steps=100000, eval_every=50, checkpoint_every=5, log_every=1,
                                      parallel_stages=lanes), root / "cfg.yaml")
        run = root / "run"
        stages = ",".join(str(k) for k in range(lanes))  # the WaveNet stages (the score tier would come first)
        return (["train", "--data", str(data), "--run", str(run), "--config", str(root / "cfg.yaml"),
                 "--stages", stages],
                lambda: all((run / f"checkpoints/stage{k}").is_dir() for k in range(lanes)))
    if command == "evaluate":
        data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=20.0, roll="notes")
        run = make_run(root, genres=["alpha", "beta"])
        return ["evaluate", "--data", str(data), "--run", str(run), "--json", str(root / "e.json")], lambda: True
    if command == "generate":
        run = make_run(root)
        return ["generate", "--run", str(run), "--out", str(root / "jobs"), "--seconds", "3"], lambda: True
    if command == "demo-data":  # no Prefect server: FluidSynth children render the corpus
        return ["demo-data", "--out", str(root / "demo"), "--per-genre", "3"], "fluidsynth"
    if command == "serve":
        run = make_run(root)
        return ["serve", "--run", str(run), "--out", str(root / "jobs"), "--interval", "3600"], lambda: True
    if command == "preprocess":
        from tests.pipeline.test_preprocess import tone, write_wav

        for i in range(12):
            write_wav(root / "raw" / "folk" / f"t{i}.wav", tone(20.0, 44100, 200 + 10 * i))
        return ["preprocess", "--raw", str(root / "raw"), "--out", str(root / "ds")], lambda: True
    raise ValueError(command)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell without job control starts `cmd &`


def signal_case(command: str, how: str, root: Path, limit: float = 15.0, during=None, moment: str = "working",
                sigint_ignored: bool = False) -> dict:
    """SIGTERM (``how="term"``) or a terminal's Ctrl-C (SIGINT to the group) once the command's own
    Prefect server is up (and its work has started): exit within ``limit`` s, one ``interrupted`` line,
    no process left (every pid seen below the command is counted).  ``during(args, proc)`` runs
    just before the signal (e.g. a second command on the same folder).  ``moment``: ``"working"`` (as
    above), ``"started"`` (the command holds its folder's lock and imports Prefect and torch: before any
    flow) or ``"server"`` (its Prefect server process exists: before the work).  ``sigint_ignored``: the
    command inherits an ignored SIGINT (its own session, as here, all the same)."""
    args, ready = command_args(command, root)
    proc = start(args, env=ephemeral_env(root), preexec_fn=_ignore_sigint if sigint_ignored else None)
    tree = Tree(proc)
    problems = []
    try:
        if moment == "started":
            from pipeline.lock import lock_path

            folder = Path(args[args.index("--run") + 1])
            tree.wait_for(lambda: lock_path(folder).is_file(), 240, "the folder's lock", step=0.01)
        elif moment == "server":
            tree.wait_for(lambda: has_server(tree), 240, "the Prefect server", step=0.01)
        elif ready == "fluidsynth":
            tree.wait_for(lambda: any("fluidsynth" in cmdline(p) for p in tree.sample()), 240, "a FluidSynth child",
                          step=0.01)
        else:
            tree.wait_for(lambda: has_server(tree) and ready(), 240, "the Prefect server and the work")
        if during is not None:
            during(args, proc)
        time.sleep(0.5 if moment == "working" else 0.0)
        tree.sample()
        t0 = time.monotonic()
        if how == "term":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=limit + 30)
        except Exception:
            proc.kill()
            _, err = proc.communicate()
            problems.append("did not exit")
        took = time.monotonic() - t0
        time.sleep(0.5)
        orphans = tree.alive()
    finally:
        if proc.poll() is None:
            proc.kill()
        tree.reap()
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    if took > limit:
        problems.append(f"took {took:.1f} s to exit")
    if len(lines) != 1 or "Traceback" in err:
        problems.append(f"not one clean line: {err[-1500:]}")
    if proc.returncode != (143 if how == "term" else 130):
        problems.append(f"exit code {proc.returncode}")
    if orphans:
        problems.append(f"orphaned processes: {[p for p in orphans]}")
    return {"command": command, "signal": how, "seconds": round(took, 2), "children_seen": len(tree.seen),
            "orphans": len(orphans), "line": lines[0] if lines else None, "problems": problems}


# ----------------------------------------------------------------------------- serve soak

ENDED_BY_STOP = ("Cancelled", "Cancelling", "Crashed")  # in flight when serve was stopped
WAITING = ("Scheduled", "Late", "AwaitingConcurrencySlot", "AwaitingRetry", "Pending")  # never started


def _flow_runs(api: str, deployment: str) -> list[dict]:
    """The deployment's flow runs, from the server's REST API."""
    import httpx

    body = {"deployments": {"name": {"any_": [deployment]}}, "limit": 200, "sort": "EXPECTED_START_TIME_ASC"}
    r = httpx.post(f"{api.rstrip('/')}/flow_runs/filter", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def serve_soak(root: Path, run: Path, genre: str, seconds: float = 60.0, interval: float = 3.0, limit: int = 2,
               piece: float = 0.5) -> dict:
    """``strata serve`` against a real Strata server, a generation scheduled every ``interval`` s with
    ``--limit``, for ``seconds``; then SIGTERM.  Counts the due runs by state, checks the job folders
    (one complete, distinct folder per completed run) and samples the serving process's resident
    memory every second (``rss_mb``: first and last quarter)."""
    from collections import Counter
    from datetime import datetime, timezone

    import psutil

    from flows.serve import GENERATE_DEPLOYMENT
    from flows.train import free_port

    env = strata_env(STRATA_HOME=str(root / "strata-home"))
    env.pop("PREFECT_API_URL", None)  # the Strata server, not a test harness
    port, out = free_port(), root / "jobs"
    run_to_end(["server", "start", "--port", str(port)], env, timeout=240)
    api = f"http://127.0.0.1:{port}/api"
    problems: list[str] = []
    try:
        proc = start(["serve", "--run", str(run), "--out", str(out), "--interval", str(interval), "--limit",
                      str(limit), "--seconds", str(piece), "--genre", genre], env)
        tree, rss, t0 = Tree(proc), [], time.monotonic()
        while time.monotonic() - t0 < seconds and proc.poll() is None:
            tree.sample()
            rss.append(psutil.Process(proc.pid).memory_info().rss / 2**20)
            time.sleep(1.0)
        if proc.poll() is not None:
            problems.append(f"serve ended by itself: {proc.communicate()[1][-1500:]}")
        stopped = datetime.now(timezone.utc)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except Exception:  # noqa: BLE001 - a hang is a problem, then clean up
            problems.append("serve did not stop within 60 s of SIGTERM")
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        time.sleep(1.0)
        orphans = tree.alive()
        if orphans:
            problems.append(f"processes left by serve: {[cmdline(p)[:80] for p in orphans]}")
            tree.reap()
        runs = [r for r in _flow_runs(api, GENERATE_DEPLOYMENT)
                if datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) <= stopped]
    finally:
        run_to_end(["server", "stop"], env, timeout=120)
    states = Counter(r["state_name"] for r in runs)
    odd = {s: n for s, n in states.items() if s not in ("Completed", *ENDED_BY_STOP, *WAITING)}
    if odd:
        problems.append(f"runs in unexpected states: {odd}")
    jobs, job_issues = job_problems(out)
    problems += job_issues
    done, stopped_runs = states.get("Completed", 0), sum(states.get(s, 0) for s in ENDED_BY_STOP)
    if not done <= len(jobs) <= done + stopped_runs:  # a run stopped after its folder was renamed keeps it
        problems.append(f"{len(jobs)} job folders for {done} completed and {stopped_runs} stopped runs")
    q = max(1, len(rss) // 4)
    first, last = float(np.mean(rss[q:2 * q])) if len(rss) >= 2 * q else 0.0, float(np.mean(rss[-q:]))
    if first and last > 1.2 * first:
        problems.append(f"serve's resident memory grew from {first:.0f} MB to {last:.0f} MB")
    return {"seconds": seconds, "interval": interval, "limit": limit, "due_runs": len(runs),
            "states": dict(states), "job_folders": len(jobs), "distinct_job_names": len({j.name for j in jobs}),
            "rss_mb": {"second_quarter": round(first, 1), "last_quarter": round(last, 1),
                       "max": round(max(rss), 1) if rss else None, "samples": len(rss)},
            "stop_line": next((ln for ln in (err or "").splitlines() if "interrupted" in ln), None),
            "stderr_tail": (err or "").strip().splitlines()[-4:],
            "problems": problems}
