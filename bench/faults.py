"""The long fault suite: kills, signals and hostile input against every phase, with counts.

    python bench/faults.py [--json bench/results/faults.json] [--midi 600] [--audio 300] [--rounds 5]
                           [--configs 300] [--only fuzz,long,configs,checkpoints,kills,signals,soak]

The default test run (``tests/faults``) runs a short seeded subset of the same scenarios.  Written:

- ``kills_survived``: ``kill -9`` per phase (generate, evaluate, train) that left nothing lost;
- ``signals``: SIGTERM and Ctrl-C per command, seconds to exit, children seen, orphans;
- ``fuzz_cases``: cases tried per kind (MIDI, audio, config, checkpoint);
- ``errors_by_category``: outcomes (``ok``, ``clear`` = one line, and the defects ``traceback``,
  ``timeout``, ``memory``, ``multiline``, ``crash``);
- ``lost`` (must be 0): problems found by the kill scenarios (partial files, different weights or audio);
- ``orphaned_processes`` (must be 0); ``defects``: every case that was not ``ok`` or ``clear``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

_HOME = tempfile.mkdtemp(prefix="strata-faults-prefect-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("STRATA_TORCH_THREADS", "1")

from machine import machine_info  # noqa: E402  (bench/machine.py)
from tests.faults import fuzz, scenarios  # noqa: E402
from tests.faults.procs import strata_env  # noqa: E402

DEFECTS = ("traceback", "timeout", "memory", "multiline", "crash")
PER_CASE_S = 10.0  # a config or checkpoint case that takes longer is a hang (as the fuzz workers' limit)


def _add(counts: dict, more: dict) -> None:
    for k, v in more.items():
        counts[k] = counts.get(k, 0) + v


# ----------------------------------------------------------------------------- configs and checkpoints


def _mutate_value(rng: random.Random, value):
    return rng.choice(["x", None, -1, 1.5, True, [], {}, [1, "a"], 10**12, "1e3", {"a": 1}, float("nan")])


def config_cases(n: int, seed: int) -> list[dict]:
    """``n`` mutated copies of the tiny preset: a wrong-typed value or an unknown key somewhere."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.config import CONFIG_DIR

    base = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        raw = json.loads(json.dumps(base))
        section = rng.choice(["data", "train", "generate", "stages"])
        target = raw.setdefault(section, {}) if section != "stages" else rng.choice(raw.get("stages") or [{}])
        if not isinstance(target, dict):
            target = {}
        if rng.random() < 0.25 or not target:
            target[rng.choice(["lrr", "rate_hz", "../x", "", "stages"])] = 1
        else:
            key = rng.choice(sorted(target))
            target[key] = _mutate_value(rng, target[key])
        out.append(raw)
    return out


def run_configs(n: int, seed: int, root: Path) -> dict:
    """Each mutated config written as YAML and loaded: ok, or one ``ConfigError`` line."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.config import ConfigError, load_config

    counts, defects = {}, []
    for i, raw in enumerate(config_cases(n, seed)):
        path = root / f"cfg{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        outcome, detail = fuzz.classify(load_config, path, PER_CASE_S, expected=ConfigError)
        if outcome in DEFECTS:
            defects.append({"case": f"config {i}", "outcome": outcome, "detail": detail})
        _add(counts, {outcome: 1})
    return {"cases": n, "counts": counts, "defects": defects}


def run_checkpoints(n: int, seed: int, root: Path) -> dict:
    """model.json edits (absurd or wrong sizes, wrong types) and truncated weights: ok or one line."""
    import resource

    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from models import load_stage
    from models.checkpoint import CheckpointError
    from tests.helpers_run import make_run

    stage = make_run(root / "base") / "stages" / "0"
    meta0 = json.loads((stage / "model.json").read_text())
    keys = [k for k, v in meta0["config"].items() if isinstance(v, int) and not isinstance(v, bool)]
    rng = random.Random(seed)
    counts, defects, rss = {}, [], []
    for i in range(n):
        folder = root / f"ck{i}"
        shutil.copytree(stage, folder)
        meta = json.loads(json.dumps(meta0))
        if i % 5 == 4:  # truncated weights
            w = folder / "model.safetensors"
            w.write_bytes(w.read_bytes()[: rng.randrange(1, w.stat().st_size)])
        else:
            key = rng.choice(keys)
            meta["config"][key] = rng.choice([10**9, 10**6, -1, 0, meta0["config"][key] + 1, "x", None, 2.5])
            (folder / "model.json").write_text(json.dumps(meta))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outcome, detail = fuzz.classify(load_stage, folder, PER_CASE_S, expected=CheckpointError)
        if outcome in DEFECTS:
            defects.append({"case": f"checkpoint {i}", "outcome": outcome, "detail": detail})
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        _add(counts, {outcome: 1})
        shutil.rmtree(folder)
    return {"cases": n, "counts": counts, "defects": defects, "max_rss_growth_mb": round(max(rss) / 1024, 1)}


LONG_AUDIO = """
import resource, sys, time
from pipeline.corpus.audio import prepare_audio
t0 = time.time()
y, info = prepare_audio(sys.argv[1], 16000, max_seconds=600.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, info["source_seconds"], info["seconds"],
      time.time() - t0)
"""


def run_long_audio(root: Path, minutes: float = 60.0, rate: int = 16000) -> dict:
    """An hour-long mono WAV through ``prepare_audio`` (as preprocess does, 10-minute crop) in a fresh
    process: its peak resident memory, against the same process on a 1-minute file."""
    rows = {}
    for label, mins in (("one_minute", 1.0), ("long", minutes)):
        path = root / f"{label}.wav"
        with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
            block = (0.3 * np.sin(np.arange(rate * 60) * 2 * np.pi * 220 / rate)).astype(np.float32)
            for _ in range(int(mins)):
                f.write(block)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-c", LONG_AUDIO, str(path)], cwd=ROOT, env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        rows[label] = {"file_minutes": mins, "file_mb": round(path.stat().st_size / 2**20, 1),
                       "peak_rss_mb": round(float(out[0]), 1), "kept_seconds": float(out[2]),
                       "seconds": round(float(out[3]), 2)}
        path.unlink()
    return rows


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--midi", type=int, default=600)
    ap.add_argument("--audio", type=int, default=300)
    ap.add_argument("--configs", type=int, default=300)
    ap.add_argument("--checkpoints", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5, help="kill -9 rounds per phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="fuzz,long,configs,checkpoints,kills,signals,soak")
    ap.add_argument("--soak-seconds", type=float, default=120.0, help="how long strata serve runs in the soak")
    ap.add_argument("--merge", action="store_true", help="update only the parts run in an existing --json file")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    t_start = time.time()
    result: dict = {"kills_survived": {}, "signals": [], "fuzz_cases": {}, "errors_by_category": {},
                    "lost": 0, "orphaned_processes": 0, "defects": [], "details": {}}
    root = Path(tempfile.mkdtemp(prefix="strata-faults-"))
    try:
        if "fuzz" in parts:
            for kind, n in (("midi", a.midi), ("audio", a.audio)):
                r = fuzz.run_worker(kind, n, a.seed, per_case=PER_CASE_S, mem_mb=3072, timeout=3600)
                result["fuzz_cases"][kind] = r["cases"]
                _add(result["errors_by_category"], r["counts"])
                result["defects"] += r["defects"]
                result["details"][f"fuzz_{kind}"] = {k: r.get(k) for k in ("counts", "slowest_case", "peak_rss_mb",
                                                                              "memory_limit_mb", "per_case_limit_s")}
                print(f"fuzz {kind}: {r['cases']} cases {r['counts']}", flush=True)
        if "long" in parts:
            r = run_long_audio(root)
            result["details"]["long_audio"] = r
            print(f"long audio: {r}", flush=True)
        if "configs" in parts:
            (root / "configs").mkdir()
            r = run_configs(a.configs, a.seed, root / "configs")
            result["fuzz_cases"]["config"] = r["cases"]
            result["details"]["configs"] = {"counts": r["counts"]}
            _add(result["errors_by_category"], r["counts"])
            result["defects"] += r["defects"]
            print(f"configs: {r['counts']}", flush=True)
        if "checkpoints" in parts:
            (root / "ck").mkdir()
            r = run_checkpoints(a.checkpoints, a.seed, root / "ck")
            result["fuzz_cases"]["checkpoint"] = r["cases"]
            _add(result["errors_by_category"], r["counts"])
            result["defects"] += r["defects"]
            result["details"]["checkpoints"] = {"counts": r["counts"], "max_rss_growth_mb": r["max_rss_growth_mb"]}
            print(f"checkpoints: {r['counts']}", flush=True)
        if "soak" in parts:
            from tests.helpers_run import make_run

            (root / "soak").mkdir()
            r = scenarios.serve_soak(root / "soak", make_run(root / "soak" / "r"), "folk", seconds=a.soak_seconds)
            result["details"]["serve_soak"] = r
            result["lost"] += len(r["problems"])
            print(f"serve soak: {r}", flush=True)
        if "kills" in parts:
            # local: keeps prefect out of the script's start-up (--help, bad arguments)
            from prefect.settings import PREFECT_API_URL
            from prefect.testing.utilities import prefect_test_harness

            with prefect_test_harness(server_startup_timeout=120):
                env = strata_env(PREFECT_API_URL=PREFECT_API_URL.value())
                accelerate = functools.partial(scenarios.train_kills, processes=2)
                for phase, fn in (("generate", scenarios.generate_kills), ("evaluate", scenarios.evaluate_kills),
                                  ("train", scenarios.train_kills), ("train_accelerate_2", accelerate)):
                    (root / phase).mkdir()
                    r = fn(env, root / phase, a.rounds, a.seed)
                    result["kills_survived"][phase] = r["kills"] if not r["problems"] else 0
                    result["lost"] += len(r["problems"])
                    result["details"][f"kills_{phase}"] = r
                    print(f"kill -9 {phase}: {r}", flush=True)
        if "signals" in parts:
            for command in ("preprocess", "train", "evaluate", "generate", "serve", "demo-data"):
                if command == "demo-data" and not shutil.which("fluidsynth"):
                    print("demo-data: no fluidsynth here, not run", flush=True)
                    continue
                for how in ("term", "ctrl-c"):
                    where = root / f"sig-{command}-{how}"
                    where.mkdir()
                    r = scenarios.signal_case(command, how, where)
                    result["signals"].append(r)
                    result["orphaned_processes"] += r["orphans"]
                    if r["problems"]:
                        result["defects"].append({"case": f"{how} {command}", "outcome": "signal",
                                                  "detail": "; ".join(r["problems"])[:500]})
                    print(f"{how} {command}: {r['seconds']} s, {r['children_seen']} children, "
                          f"{r['orphans']} orphans {r['problems'] or ''}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if a.merge and a.json and Path(a.json).is_file():  # keep the parts not run this time
        old = json.loads(Path(a.json).read_text())["results"]
        for key in ("kills_survived", "fuzz_cases", "details"):
            result[key] = {**old.get(key, {}), **result[key]}
        if "signals" not in parts:
            result["signals"], result["orphaned_processes"] = old["signals"], old["orphaned_processes"]
        if "kills" not in parts:  # the earlier runs' losses, and this run's (the soak's)
            result["lost"] += old["lost"]
        result["defects"] = old.get("defects", []) + result["defects"]
    if a.merge:  # outcome counts over every kind in the file (each kind's counts are in details)
        result["errors_by_category"] = {}
        for key in ("fuzz_midi", "fuzz_audio", "configs", "checkpoints"):
            _add(result["errors_by_category"], (result["details"].get(key) or {}).get("counts") or {})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    run_info = {"commit": commit, "command": " ".join(["python", *sys.argv]),
                "seconds": round(time.time() - t_start, 1)}
    runs = [run_info]
    if a.merge and a.json and Path(a.json).is_file():
        old_out = json.loads(Path(a.json).read_text())
        runs = old_out.get("runs") or [{k: old_out.get(k) for k in ("commit", "command", "seconds")}]
        runs = runs + [run_info]
    out = {"machine": machine_info(), **run_info, "runs": runs, "results": result}
    text = json.dumps(out, indent=2)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
        print(f"faults: {a.json}")
    print(json.dumps({k: result[k] for k in ("kills_survived", "fuzz_cases", "errors_by_category", "lost",
                                             "orphaned_processes")}, indent=2))
    bad = result["lost"] or result["orphaned_processes"] or result["defects"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
