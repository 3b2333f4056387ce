"""The demo: the whole pipeline end to end on the demo corpus (``make demo``).

demo-data -> preprocess -> train (configs/tiny.yaml, bounded wall time) -> evaluate ->
generate one piece per genre and one from a MIDI file of the test split -> the listening report
(``<out>/report/index.html``).  Prints where the audio, pictures and report are, and writes
``<out>/demo_summary.json`` with the wall time of each step.

The flows run against the Strata server (``strata server start``, ``flows/server.py``): the demo
starts it when it is not running and leaves it running, so the run's flow runs stay browsable in
the Prefect UI and later ``strata`` commands skip Prefect's ~20 s start-up; ``strata server stop``
ends it.  ``--no-server`` (or a ``PREFECT_API_URL`` of your own) keeps the demo off it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from flows import server
from pipeline.corpus.demo_data import build_demo_corpus, build_extra_scores
from pipeline.errors import StrataError
from pipeline.io import atomic_write_json
from pipeline.report.build import folder_size

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")


class _Timer:
    """Collects wall time per named step and prints a banner per step."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def run(self, name: str, fn, *args, **kwargs):
        print(f"\n=== {name} ===", flush=True)
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        self.steps[name] = round(time.perf_counter() - t, 1)
        print(f"=== {name}: {self.steps[name]:.1f} s ===", flush=True)
        return result

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def _test_midi(data_dir: Path) -> str | None:
    """A MIDI file of a test-split track (its score), if the dataset has one."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for track in manifest["tracks"]:
        if track["split"] == "test" and track.get("midi"):
            return track["midi"]
    return None


def _use_server() -> str | None:
    """Start the Strata server unless it runs (or the user has an API of their own); the UI's URL."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    try:
        print("=== Prefect server ===", flush=True)
        info, started = server.start()
    except server.ServerError as e:
        print(f"note: {e}; the demo uses Prefect's ephemeral API", file=sys.stderr)
        return None
    print(f"{'started' if started else 'running'}: {info.ui} (pid {info.pid})", flush=True)
    server.connect()
    return info.ui


def run_demo(out: Path, per_genre: int, train_minutes: float, seconds: float,
             config: str | None, seed: int, use_server: bool = True) -> dict:
    ui = _use_server() if use_server else None  # before the flows (and Prefect's settings) are imported
    # local: after _use_server() (Prefect reads PREFECT_API_URL when imported); keeps prefect, torch out of
    # `import flows.demo` until the demo runs
    from flows.evaluate import evaluate_flow
    from flows.generate import generate_flow
    from flows.preprocess import preprocess_flow
    from flows.report import report_flow
    from flows.train import train_flow
    from pipeline.generation.plan import validate_params
    from pipeline.run import config_path

    out = out.resolve()
    raw, data, run, jobs = out / "raw", out / "data", out / "run", out / "jobs"
    scores = out / "scores"  # music21's other works of the demo genres' composers, for the score tier
    timer = _Timer()
    timer.run("render demo corpus", build_demo_corpus, raw, per_genre=per_genre)
    timer.run("extra scores", build_extra_scores, scores)
    timer.run("preprocess", preprocess_flow, str(raw), str(data), config)
    timer.run("train", train_flow, str(data), str(run), config=config, stages="all",
              max_minutes=train_minutes, resume=config_path(run).exists(), extra_scores=str(scores))
    evaluation = timer.run("evaluate", evaluate_flow, str(data), str(run), split="test",
                           json_path=str(out / "evaluation.json"), report=False)
    genres = json.loads((data / "manifest.json").read_text())["genres"]
    outputs: dict[str, list[str]] = {}
    for genre in genres:
        p = validate_params(run_dir=run, out_dir=jobs, seconds=seconds, genre=genre, seed=seed)
        outputs[genre] = timer.run(f"generate {genre}", generate_flow, p, report=False)
    p = validate_params(run_dir=run, out_dir=jobs, seconds=seconds, seed=seed)  # no genre: an unconditional score
    outputs["unconditional"] = timer.run("generate unconditional", generate_flow, p, report=False)
    midi = _test_midi(data)
    if midi:
        p = validate_params(run_dir=run, out_dir=jobs, midi=midi, seed=seed, seconds=seconds)
        outputs["midi"] = timer.run("generate from MIDI", generate_flow, p, report=False)
    report = timer.run("report", report_flow, str(run), str(out / "report"), jobs=[str(jobs)], data=str(data))
    summary = {"out": str(out), "timings_s": timer.steps, "total_s": timer.total,
               "evaluation": evaluation, "jobs": outputs, "midi_prompt": midi, "report": report,
               "report_bytes": folder_size(out / "report")[1], "prefect_ui": ui}

    atomic_write_json(out / "demo_summary.json", summary)
    print("\n=== demo done ===")
    print(f"total wall time: {timer.total:.0f} s")
    for name, s in timer.steps.items():
        print(f"  {name:28s} {s:8.1f} s")
    print(f"dataset:    {data}\nrun:        {run}\nevaluation: {out / 'evaluation.json'}")
    for name, folders in outputs.items():
        for folder in folders or []:
            print(f"{name:12s} {folder}/audio.wav  {folder}/spectrogram.png")
    print(f"report:     {report} ({summary['report_bytes'] / 1e6:.1f} MB; open it in a browser)")
    if ui:
        print(f"Prefect UI: {ui} (the server keeps running; `strata server stop` ends it)")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo"))
    p.add_argument("--per-genre", type=int, default=8)
    p.add_argument("--train-minutes", type=float, default=None,
                   help="wall-clock training budget for all stages (default: the config's)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per generated piece")
    p.add_argument("--config", default=None, help="config YAML (default: configs/tiny.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-server", action="store_true",
                   help="do not start the Strata server: every flow uses Prefect's ephemeral API")
    args = p.parse_args(argv)

    try:
        run_demo(args.out, args.per_genre, args.train_minutes, args.seconds, args.config, args.seed,
                 use_server=not args.no_server)
    except StrataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
