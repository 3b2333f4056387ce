"""Start-up and orchestration overhead of the ``strata`` commands: with the Strata server up
(``strata server start``) against Prefect's ephemeral API (goals: <= 3 s of fixed overhead per
command with the server up; orchestration < 3 % of a core while ``strata train`` runs).

    python bench/orchestration.py --raw demo/raw --data demo/data [--repeats 5] [--train-minutes 1.5]
                                  [--json FILE]

Every command runs as a user runs it, ``python -m flows.cli ...`` in a new process, with a
private Strata state folder and Prefect home in a temporary folder (the user's own server and
database are not touched).  Rows, each the median of ``--repeats`` runs after one untimed run:

- ``status``: ``strata server status`` (Python and the command line, no Prefect): the floor;
- ``preprocess 1 file cached``: a rerun of ``strata preprocess`` on one file of ``--raw`` whose
  result is cached: a command's fixed overhead (imports, API, one flow run, one task);
- ``preprocess corpus cached``: the same on the whole corpus (one cached task per file).

Each row has the wall time and the CPU time (user + system of the command and its children,
such as the ephemeral API, and the Strata server's over the same time): on a machine shared
with other jobs the wall time grows with the load, the CPU time much less; on an idle 2-core
machine the two are close.

Training: ``strata train --max-minutes M`` on ``--data`` in each mode; while its training lanes
(``python -m pipeline.training``) run, the CPU time of the flow process itself (the command) and of
the Prefect API (the Strata server's process group, or the ephemeral server the command
starts) is sampled from /proc through psutil, as % of one core; and the same over the whole
command, from its start to its exit (Python and imports, the ephemeral API's start-up, the flow's
artifacts and loss plot), as % of one core over the command's wall time.  The untimed runs of the
commands come first; the timed repeats then go round robin over the commands.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows import server  # noqa: E402
from machine import machine_info, median, run_info  # noqa: E402  (bench/machine.py)
from pipeline.io import atomic_write_json  # noqa: E402

STRATA = [sys.executable, "-m", "flows.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tmp: Path, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update({
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp / f"prefect-{mode}"),  # the client's home: result cache, ephemeral database
        "STRATA_HOME": str(tmp / ("strata" if mode == "server" else "strata-none")),
    })
    return env


def timed(cmd: list[str], env: dict[str, str], server=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a command, its own children (an ephemeral API) and the
    Strata server (a psutil process, if given) over the same time included."""
    s0 = _cpu(server) if server else 0.0
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    s1 = _cpu(server) if server else 0.0
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime) + (s1 - s0)


def one_file_corpus(raw: Path, dest: Path) -> Path:
    """The first audio file of ``raw`` (and its MIDI) in a corpus of its own."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.corpus.inputs import discover

    inputs, _ = discover(raw)
    audio, genre, midi = inputs[0]
    (dest / genre).mkdir(parents=True, exist_ok=True)
    shutil.copy(audio, dest / genre / Path(audio).name)
    if midi:
        shutil.copy(midi, dest / genre / Path(midi).name)
    return dest


def command_rows(mode: str, env: dict[str, str], corpora: dict[str, Path], tmp: Path, repeats: int,
                 server_pid: int | None) -> list[dict]:
    server = psutil.Process(server_pid) if server_pid else None
    rows = []
    cases = [("status", STRATA + ["server", "status"])]
    for name, raw in corpora.items():
        cases.append((f"preprocess {name} cached",
                      STRATA + ["preprocess", "--raw", str(raw), "--out", str(tmp / f"data-{mode}-{name}")]))
    for _, cmd in cases:
        timed(cmd, env)  # untimed: computes the files (the cache), creates the ephemeral database
    walls: dict[str, list[float]] = {name: [] for name, _ in cases}
    cpus: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeats):  # round robin: the machine's load drifts over all cases alike
        for name, cmd in cases:
            wall, cpu = timed(cmd, env, server)
            walls[name].append(wall)
            cpus[name].append(cpu)
    for name, w in walls.items():
        rows.append({"mode": mode, "command": name, "median_seconds": round(median(w), 3),
                     "median_cpu_seconds": round(median(cpus[name]), 3),
                     "seconds": [round(x, 3) for x in w], "cpu_seconds": [round(x, 3) for x in cpus[name]]})
        print(f"{mode:<10} {name:<28} {median(w):7.2f} s  (CPU {median(cpus[name]):.2f} s)  "
              f"{[round(x, 2) for x in w]}", flush=True)
    return rows


def _cpu(p) -> float:
    t = p.cpu_times()
    return t.user + t.system  # this process only, not its children


def training_overhead(mode: str, env: dict[str, str], data: Path, run: Path, minutes: float,
                      server_pid: int | None) -> dict:
    """% of one core used by the flow process and the Prefect API while training lanes run."""
    cmd = STRATA + ["train", "--data", str(data), "--run", str(run), "--max-minutes", str(minutes)]
    t_start = time.perf_counter()
    log = open(run.parent / f"train-{mode}.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    flow = psutil.Process(proc.pid)
    server_root = psutil.Process(server_pid) if server_pid else None

    lane_pids: set[int] = set()  # a lane stays a lane when it exits (a zombie has no command line)

    def groups():
        """(lanes, api): the lane processes, and the Prefect API's processes."""
        lanes, api = [], []
        try:
            kids = flow.children(recursive=True)
        except psutil.NoSuchProcess:
            return [], []
        for p in kids:
            try:
                line = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if p.pid in lane_pids or "pipeline.training.train" in line:
                lane_pids.add(p.pid)
                lanes.append(p)
            elif line and "flows.cli" not in line:  # not a zombie, not a lane between fork and exec
                api.append(p)
        if server_root is not None:
            api = [server_root, *server_root.children(recursive=True)]
        return lanes, api

    def snapshot(procs) -> dict[int, float]:
        out = {}
        for p in procs:
            try:
                out[p.pid] = _cpu(p)
            except psutil.Error:
                pass
        return out

    first: dict | None = None  # CPU seconds per process when the window opens, and the latest
    last: dict = {}
    api_at_launch = snapshot(groups()[1])  # the Strata server's CPU so far (nothing in ephemeral mode)
    whole: dict[str, dict[int, float]] = {"flow": {}, "api": {}}  # latest readings over the whole command
    while proc.poll() is None:
        lanes, api = groups()
        whole["flow"].update(snapshot([flow]))
        whole["api"].update(snapshot(api))
        live = [p for p in lanes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if live:
            now = {"t": time.perf_counter(), "flow": snapshot([flow]), "api": snapshot(api)}
            lane_cpu = {**last.get("lanes", {}), **snapshot(live)}  # a lane that ended keeps its last reading
            if first is None:
                if not last:
                    last = {"since": now["t"]}
                elif now["t"] - last["since"] >= 3.0:  # past the lanes' start-up
                    first = {**now, "lanes": lane_cpu}
                    last = {**now, "lanes": dict(lane_cpu)}
            else:
                last = {**now, "lanes": lane_cpu}
        time.sleep(0.5)
    proc.wait()
    wall = time.perf_counter() - t_start
    log.close()
    if proc.returncode != 0 or first is None or last["t"] - first["t"] < 5:
        raise SystemExit(f"strata train ({mode}) failed or its lanes ran too briefly: see {log.name}")
    span = last["t"] - first["t"]

    def used(key: str) -> float:
        return sum(v - first[key].get(pid, 0.0) for pid, v in last[key].items())

    flow_s, api_s, lanes_s = used("flow"), used("api"), used("lanes")
    whole_s = sum(whole["flow"].values()) + sum(v - api_at_launch.get(pid, 0.0) for pid, v in whole["api"].items())
    row = {"mode": mode, "max_minutes": minutes, "wall_seconds": round(wall, 1),
           "whole_command_orchestration_seconds": round(whole_s, 1),
           "whole_command_orchestration_core_percent": round(100 * whole_s / wall, 2),
           "window_seconds": round(span, 1),
           "flow_process_core_percent": round(100 * flow_s / span, 2),
           "api_core_percent": round(100 * api_s / span, 2),
           "orchestration_core_percent": round(100 * (flow_s + api_s) / span, 2),
           "lanes_core_percent": round(100 * lanes_s / span, 1)}
    print(f"{mode:<10} train: orchestration {row['orchestration_core_percent']:.2f}% of a core (flow process "
          f"{row['flow_process_core_percent']:.2f}%, API {row['api_core_percent']:.2f}%) over {span:.0f} s; "
          f"lanes {row['lanes_core_percent']:.0f}%; whole command "
          f"{row['whole_command_orchestration_core_percent']:.1f}% ({whole_s:.0f} CPU-s in {wall:.0f} s)", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, required=True, help="raw corpus (e.g. demo/raw)")
    ap.add_argument("--data", type=Path, help="dataset folder to train on (e.g. demo/data); none: no training rows")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-minutes", type=float, default=1.5)
    ap.add_argument("--modes", default="server,ephemeral")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="strata-bench-orch-"))
    corpora = {"1 file": one_file_corpus(a.raw, tmp / "raw1"), "corpus": a.raw.resolve()}
    modes = a.modes.split(",")
    rows, training, start_s = [], [], None
    try:
        for mode in modes:
            env = base_env(tmp, mode)
            server_pid = None
            if mode == "server":
                t0 = time.perf_counter()
                info, _ = server.start(port=free_port(), state=Path(env["STRATA_HOME"]) / "server")
                start_s = round(time.perf_counter() - t0, 2)
                server_pid = info.pid
                print(f"server started in {start_s:.1f} s: {info.url}", flush=True)
            rows += command_rows(mode, env, corpora, tmp, a.repeats, server_pid)
            if a.data:
                training.append(training_overhead(mode, env, a.data.resolve(), tmp / f"run-{mode}",
                                                  a.train_minutes, server_pid))
            if mode == "server":
                server.stop(Path(env["STRATA_HOME"]) / "server")
    finally:
        server.stop(tmp / "strata" / "server")
    med = {(r["mode"], r["command"]): r["median_seconds"] for r in rows}
    summary = {f"fixed_overhead_seconds_{m}": med.get((m, "preprocess 1 file cached")) for m in modes}
    summary.update({f"preprocess_corpus_cached_seconds_{m}": med.get((m, "preprocess corpus cached")) for m in modes})
    summary.update({f"orchestration_core_percent_{t['mode']}": t["orchestration_core_percent"] for t in training})
    summary.update({f"whole_command_orchestration_core_percent_{t['mode']}":
                    t["whole_command_orchestration_core_percent"] for t in training})
    result = {"machine": machine_info(), **run_info(argv and [sys.argv[0], *argv]), "repeats": a.repeats,
              "corpus": str(a.raw), "dataset": str(a.data) if a.data else None,
              "server_start_seconds": start_s, "results": rows, "training": training, "summary": summary}
    shutil.rmtree(tmp, ignore_errors=True)
    print(summary)
    if a.json:
        atomic_write_json(a.json, result)
        print(f"wrote {a.json}")
    return result


if __name__ == "__main__":
    main()
