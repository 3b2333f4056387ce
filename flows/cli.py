"""The ``strata`` command line: a thin shell over the flows (DESIGN section 6).

Every command prints where its outputs went, exits 2 with one line ``error: ...`` on bad input,
and shows progress on long work.  Flows are imported lazily so ``strata --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.errors import StrataError
from pipeline.lock import acquire

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Strata: long-structured music as raw audio with a cascade of WaveNet stages.",
)


def _quiet_prefect() -> None:
    """Before a flow is imported: no telemetry, no network; the Strata server when it is up
    (else Prefect's ephemeral API and one hint line), see ``flows/server.py``."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # local: keeps `strata --help` fast (psutil)
    from flows.server import connect
    from flows.signals import tie_ephemeral_server

    connect()  # the Strata server when it is up (sets PREFECT_API_URL)
    tie_ephemeral_server()  # else: the ephemeral server dies with the command, even on kill -9


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs):
    """Call ``fn``; user errors become one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except StrataError as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except OSError as e:  # disk full, an unwritable folder: one line; finished files were renamed into place
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e} (nothing half-written is kept; earlier results are intact)")


def _interruptible(command):
    """``command`` with Ctrl-C, or SIGTERM/SIGHUP (flows.signals), anywhere in it handled alike: one line, no
    child left, exit 128 + the signal.  The whole command, not only its flow: the imports and checks before
    a flow take seconds (Prefect, torch), and an interruption there printed click's "Aborted!" (exit 1)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as e:
            # local: keeps `strata --help` fast (psutil)
            from flows import signals

            typer.echo(signals.interrupted_line(signals.command_of(sys.argv), e), err=True)
            signals.stop_children()
            signals.forget_unhandled_interrupt()
            raise typer.Exit(code=signals.exit_code(e)) from None
    return run


def _lock(folder: Path, command: str) -> None:
    """One writer per folder (pipeline.lock): refused at once, before any Prefect server starts."""
    _run(acquire, folder, command)


def _precheck(fn, *args, **kwargs) -> None:
    """Cheap checks before a flow starts, so bad input is one line, not a failed flow run."""
    _run(fn, *args, **kwargs)


def _floats(text: str | None, flag: str) -> list[float] | None:
    """"1,0.5,0.5" -> [1.0, 0.5, 0.5]; one clear line when it is not a list of numbers."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        _fail(f"invalid parameter: {flag} {text!r}: expected numbers separated by commas, e.g. 1,0.5,0.5")


def _need_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and write a probe into it now, so an unwritable output is one line before
    any work (not after a whole generation)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        _fail(f"{folder}: {what} is not writable ({e.strerror or e})")


def _need_dir(path: Path, what: str) -> None:
    if not path.exists():
        _fail(f"{path}: {what} does not exist")
    if not path.is_dir():
        _fail(f"{path}: {what} is not a folder")


@app.command("demo-data")
def demo_data(
    out: Path = typer.Option(..., "--out", help="folder for the rendered corpus"),
    per_genre: int = typer.Option(8, "--per-genre", min=1, help="works per genre"),
    soundfont: Optional[Path] = typer.Option(None, "--soundfont", help="GM soundfont (.sf2)"),
) -> None:
    """Render the demo corpus: music21's bundled scores through FluidSynth."""
    # local: keeps `strata --help` fast (numpy)
    from pipeline.corpus.demo_data import build_demo_corpus

    summary = _run(build_demo_corpus, out, per_genre=per_genre, soundfont=soundfont)
    typer.echo(f"demo corpus: {out}")
    if isinstance(summary, dict):
        typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def preprocess(
    raw: Path = typer.Option(..., "--raw", help="RAW/<genre>/<name>.wav (+ .mid) or RAW/metadata.csv"),
    out: Path = typer.Option(..., "--out", help="dataset folder to write"),
    config: Optional[Path] = typer.Option(None, "--config", help="config YAML (default: tiny)"),
    no_estimate: bool = typer.Option(False, "--no-estimate", help="no roll estimated from the audio of tracks "
                                     "without MIDI (overrides preprocess.estimate_scores)"),
) -> None:
    """Decode, resample, trim and mu-law encode audio into a tiered dataset folder; tracks without
    MIDI get a score estimated from their audio (basic-pitch) unless --no-estimate."""
    _need_dir(raw, "raw audio folder")
    _lock(out, "strata preprocess")
    _quiet_prefect()
    # local: keeps `strata --help` fast (numpy, prefect, torch)
    from flows.preprocess import preprocess_flow

    summary = _run(preprocess_flow, str(raw), str(out), str(config) if config else None,
                   estimate_scores=False if no_estimate else None)
    typer.echo(f"dataset: {out} (manifest.json, report.json)")
    if isinstance(summary, dict):
        typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="dataset folder from `strata preprocess`"),
    run: Path = typer.Option(..., "--run", help="run folder (created or resumed)"),
    config: Optional[Path] = typer.Option(None, "--config", help="config YAML (default: tiny)"),
    stages: str = typer.Option("all", "--stages", help="all, or 'score' (the score tier) and stage indices "
                               "like score,0,1"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.01,
                                                help="wall-clock budget for all stages"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint"),
    extra_scores: Optional[Path] = typer.Option(None, "--extra-scores", help="the score tier also learns from "
                                                "MIDI files in genre folders: DIR/<genre>/*.mid"),
) -> None:
    """Train the cascade: the score tier and the stages (one Prefect task each)."""
    _need_dir(data, "dataset folder")
    if extra_scores is not None:
        _need_dir(extra_scores, "--extra-scores folder")
    # local: keeps `strata --help` fast (numpy, prefect, torch)
    from pipeline.config import load_config
    from pipeline.corpus.dataset import load_manifest

    _precheck(load_manifest, data)
    _precheck(load_config, config)
    _lock(run, "strata train")
    _quiet_prefect()
    from flows.train import train_flow

    result = _run(train_flow, str(data), str(run), config=str(config) if config else None,
                  stages=stages, max_steps=max_steps, resume=resume, max_minutes=max_minutes,
                  extra_scores=str(extra_scores) if extra_scores else None)
    typer.echo(f"run: {run} (stages/<k>/model.safetensors, stages/score/ (the score tier), metrics/, logs/)")
    if result is not None:
        typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def evaluate(
    data: Path = typer.Option(..., "--data"),
    run: Path = typer.Option(..., "--run"),
    split: str = typer.Option("test", "--split"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the evaluation JSON here"),
    max_seconds: Optional[float] = typer.Option(
        None, "--max-seconds", help="score only the first S seconds of every track (exact within them)"),
) -> None:
    """Held-out bits per sample per stage, ablations and baselines."""
    _need_dir(data, "dataset folder")
    _need_dir(run, "run folder")
    if split not in ("train", "valid", "test"):
        _fail(f"--split {split!r}: must be train, valid or test")
    if max_seconds is not None and not max_seconds > 0:
        _fail(f"--max-seconds {max_seconds}: must be > 0")
    # local: keeps `strata --help` fast (jinja2, numpy, prefect, torch)
    from pipeline.corpus.dataset import load_manifest

    _precheck(load_manifest, data)
    from pipeline.run import stages_dir

    if not stages_dir(run).is_dir():
        _fail(f"{run}: no trained stages (run strata train first)")
    _quiet_prefect()
    from flows.evaluate import evaluate_flow

    result = _run(evaluate_flow, str(data), str(run), split=split,
                  json_path=str(json_path) if json_path else None, max_seconds=max_seconds)
    typer.echo(json.dumps(result, indent=2, default=str))
    if json_path:
        typer.echo(f"evaluation: {json_path}")
    _echo_report(run)


@app.command()
def generate(
    run: Path = typer.Option(..., "--run"),
    out: Path = typer.Option(..., "--out"),
    seconds: Optional[float] = typer.Option(None, "--seconds"),
    genre: Optional[str] = typer.Option(None, "--genre"),
    midi: Optional[Path] = typer.Option(None, "--midi"),
    prompt: Optional[Path] = typer.Option(None, "--prompt", help="audio to continue"),
    resynth: Optional[Path] = typer.Option(None, "--resynth",
                                           help="audio whose coarse tier replaces stage 0 (finer stages only)"),
    temperature: Optional[float] = typer.Option(None, "--temperature",
                                                help="sampling temperature (default: the run config's)"),
    stage_temperature: Optional[str] = typer.Option(
        None, "--stage-temperature", help="per-stage factors on --temperature, e.g. 1,0.5,0.5 "
        "(default: the run config's generate.stage_temperature)"),
    top_p: Optional[float] = typer.Option(None, "--top-p",
                                          help="nucleus sampling mass, 1 = off (default: the run config's)"),
    stage_top_p: Optional[str] = typer.Option(
        None, "--stage-top-p", help="per stage, its nucleus mass instead of --top-p, e.g. 0.9,0.99,0.99 "
        "(default: the run config's generate.stage_top_p)"),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="(default: the run config's)"),
    stage_guidance: Optional[str] = typer.Option(
        None, "--stage-guidance", help="per-stage factors on --guidance, e.g. 1,0,0 guides stage 0 alone "
        "(default: the run config's generate.stage_guidance)"),
    guidance_twin: Optional[str] = typer.Option(
        None, "--guidance-twin", help="what the stages' guidance guides away from: unconditional (no genre, no "
        "roll) or no_genre (the roll kept: towards the genre's sound) (default: the run config's)"),
    steady_scale: Optional[bool] = typer.Option(
        None, "--steady-scale/--no-steady-scale", help="the stages' adaptive scale reads drawn residuals divided by "
        "the temperature (default: the run config's generate.steady_scale)"),
    preroll: Optional[float] = typer.Option(
        None, "--preroll", help="seconds of warm-up sampled before a scored piece and cut (default: the run "
        "config's generate.preroll_seconds)"),
    score_share: Optional[str] = typer.Option(
        None, "--score-share", help="per stage, the score taps' share of its prediction where notes sound, e.g. "
        "0,1,0; 0: the share the network sets (default: the run config's generate.score_share)"),
    share_power: Optional[str] = typer.Option(
        None, "--share-power", help="per stage, the network's share of the score taps raised to this power, e.g. "
        "1,0.1,1 (< 1: a sharper resonance at the notes' harmonics; default: the run config's generate.share_power)"),
    scale_anchor: Optional[str] = typer.Option(
        None, "--scale-anchor", help="per stage, the mix of a fine stage's adaptive scale with the tier below's "
        "level times its genre's ratio, e.g. 0,1,1; 0: the scale follows its own draws (default: the run config's "
        "generate.scale_anchor)"),
    scale_clip: Optional[str] = typer.Option(
        None, "--scale-clip", help="per stage, the most a drawn sample's |residual| may count in the stage's adaptive "
        "scale, in multiples of the scale it was drawn with, e.g. 0,4,4; 0: as trained (default: the run config's "
        "generate.scale_clip)"),
    scale_floor: Optional[str] = typer.Option(
        None, "--scale-floor", help="per stage, the adaptive scale's floor where the score's notes sound, e.g. 0.01: "
        "a stage trained without one cannot stay silent through notes (the silence trap); 0: as trained (default: "
        "the run config's generate.scale_floor)"),
    adapt_floor: Optional[str] = typer.Option(
        None, "--adapt-floor", help="per stage, the adaptive scale's floor everywhere, e.g. 0,0,1e-4: a fine stage "
        "draws its new band at about this scale whatever the music's level (hiss in rests); 0: as trained, 1e-3 "
        "(default: the run config's generate.adapt_floor)"),
    tail_floor: Optional[str] = typer.Option(
        None, "--tail-floor", help="per stage, that floor after the score's last note, e.g. 1e-4,1e-4,1e-4: the stages "
        "decay there as a release does instead of settling at their floor's hiss; 0: as --adapt-floor (default: the "
        "run config's generate.tail_floor)"),
    score_length_temperature: Optional[float] = typer.Option(
        None, "--score-length-temperature", help="the temperature at which a score tier with a length head draws the "
        "piece's length (below 1: nearer its most likely lengths; default: the run config's "
        "generate.score_length_temperature)"),
    score_guidance: Optional[float] = typer.Option(
        None, "--score-guidance", help="the score tier's classifier-free guidance towards the genre, W >= 0 "
        "(default: the run config's generate.score_guidance)"),
    score_model: Optional[str] = typer.Option(
        None, "--score-model", help="where a piece without MIDI or audio gets its score: tier (the run's score "
        "tier), chain (the genre's chord chain, a baseline) or none (default: the run config's generate.score_model)"),
    continue_score: Optional[float] = typer.Option(
        None, "--continue-score", help="with --midi: the score tier extends the MIDI file's score by S seconds"),
    score_only: bool = typer.Option(False, "--score-only", help="write the score (score.mid, score.png) alone"),
    seed: int = typer.Option(0, "--seed"),
    count: int = typer.Option(1, "--count"),
    engine: str = typer.Option("fused", "--engine", help="sampling engine: fused (compiled, fast) or reference "
                               "(plain PyTorch streaming)"),
    weights: Optional[str] = typer.Option(None, "--weights", help="every stage's weights as float32, bf16, int8 or "
                                          "int4 (faster on CPUs whose L2 cannot hold float32; default: the run "
                                          "config's)"),
) -> None:
    """Generate audio: coarse stage first, then each finer stage."""
    _need_dir(run, "run folder")
    # local: keeps `strata --help` fast (jinja2, numpy, prefect, pydantic, torch)
    from pipeline.generation.plan import validate_params
    from pipeline.run import check_run, check_score_run

    factors = _floats(stage_temperature, "--stage-temperature")
    guide_factors = _floats(stage_guidance, "--stage-guidance")
    # the one validation, before any Prefect server starts; the flow takes the result as it is
    params = _run(validate_params, run_dir=str(run), out_dir=str(out), seconds=seconds, genre=genre,
                  midi=str(midi) if midi else None, prompt=str(prompt) if prompt else None,
                  resynth=str(resynth) if resynth else None, stage_temperature=factors, score_model=score_model,
                  continue_score=continue_score, score_only=score_only, score_guidance=score_guidance,
                  score_length_temperature=score_length_temperature,
                  stage_guidance=guide_factors, guidance_twin=guidance_twin, steady_scale=steady_scale,
                  preroll_seconds=preroll, score_share=_floats(score_share, "--score-share"),
                  share_power=_floats(share_power, "--share-power"),
                  scale_anchor=_floats(scale_anchor, "--scale-anchor"), scale_clip=_floats(scale_clip, "--scale-clip"),
                  scale_floor=_floats(scale_floor, "--scale-floor"), adapt_floor=_floats(adapt_floor, "--adapt-floor"),
                  tail_floor=_floats(tail_floor, "--tail-floor"),
                  temperature=temperature, top_p=top_p, stage_top_p=_floats(stage_top_p, "--stage-top-p"),
                  guidance=guidance, seed=seed, count=count, engine=engine, weights=weights)
    _precheck(check_score_run if score_only else check_run, run)  # weights are loaded once, by the flow
    _need_writable(out, "output folder")
    _quiet_prefect()
    from flows.generate import generate_flow

    jobs = _run(generate_flow, params=params)
    for job in jobs or []:
        files = "score.mid, score.png, meta.json" if score_only else \
            "audio.wav, tier_<rate>.wav, score.mid, spectrogram.png, meta.json"
        typer.echo(f"job: {job} ({files})")
    _echo_report(out)


def _echo_report(folder: Path) -> None:
    """Print the report a flow rewrote in ``folder`` (flows.report.default_report_dir)."""
    # local: keeps `strata --help` fast (jinja2, numpy, prefect)
    from flows.report import default_report_dir

    index = default_report_dir(folder) / "index.html"
    if index.is_file():
        typer.echo(f"report: {index}")


@app.command()
def assess(
    paths: Optional[list[Path]] = typer.Argument(None, help="job folders, folders of jobs, or audio files"),
    midi: Optional[Path] = typer.Option(None, "--midi", help="score for every path (default: the job's MIDI, "
                                        "or a .mid with the audio's stem beside it)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the diagnostics JSON here"),
    run: Optional[Path] = typer.Option(None, "--run", help="use (with --data: store) this run's noise calibration"),
    data: Optional[Path] = typer.Option(None, "--data", help="calibrate the noise threshold on this dataset's "
                                        "train split"),
) -> None:
    """Diagnostics of generated or real audio: score agreement, noise, tier consistency, length."""
    if not paths and not (data and run):
        _fail("give PATH... to assess (or --data DIR --run DIR to store a noise calibration)")
    if data is not None:
        _need_dir(data, "dataset folder")
    if run is not None:
        _need_dir(run, "run folder")
    # local: keeps `strata --help` fast (numpy, torch)
    from pipeline.evaluation.assess import assess_paths, item_line
    from pipeline.run import calibration_path

    result = _run(assess_paths, list(paths or []), midi=midi, run=run, data=data, json_path=json_path)
    for item in result["assessed"]:
        typer.echo(item_line(item))
    typer.echo(json.dumps(result["summary"], indent=2))
    for item in result["skipped"]:
        typer.echo(f"skipped: {item['reason']}", err=True)
    if json_path:
        typer.echo(f"diagnostics: {json_path}")
    if data is not None and run is not None:
        typer.echo(f"noise calibration: {calibration_path(run)}")
    if paths and not result["assessed"]:
        _fail("nothing could be assessed")


@app.command()
def report(
    run: Path = typer.Option(..., "--run", help="run folder"),
    out: Path = typer.Option(..., "--out", help="report folder to write (index.html + media/)"),
    jobs: Optional[list[Path]] = typer.Option(None, "--jobs", help="job folders or folders of jobs (repeatable)"),
    data: Optional[Path] = typer.Option(None, "--data", help="dataset folder: real held-out clips per genre"),
    evaluation: Optional[Path] = typer.Option(None, "--evaluation", help="evaluation JSON (default: the run's "
                                              "latest, metrics/evaluation_<split>.json)"),
) -> None:
    """A static listening page: the run, its evaluation, every job's audio per tier, real clips."""
    _need_dir(run, "run folder")
    for folder in jobs or []:
        _need_dir(folder, "jobs folder")
    if data is not None:
        _need_dir(data, "dataset folder")
    if evaluation is not None and not evaluation.is_file():
        _fail(f"{evaluation}: evaluation JSON does not exist")
    # local: keeps `strata --help` fast (jinja2, numpy)
    from pipeline.report.build import build_report

    result = _run(build_report, run, out, jobs=list(jobs or []), data_dir=data, evaluation=evaluation)
    for reason in result.skipped:
        typer.echo(f"skipped: {reason}", err=True)
    typer.echo(result.line())


@app.command()
def serve(
    run: Path = typer.Option(..., "--run"),
    out: Path = typer.Option(..., "--out"),
    cron: Optional[str] = typer.Option(None, "--cron", help="schedule, e.g. '0 * * * *'"),
    interval: Optional[float] = typer.Option(None, "--interval", help="schedule in seconds"),
    genre: Optional[str] = typer.Option(None, "--genre"),
    seconds: Optional[float] = typer.Option(None, "--seconds"),
    limit: int = typer.Option(2, "--limit", min=1, help="generation jobs at once"),
) -> None:
    """Register deployments (scheduled generation; training and evaluation on demand) and serve them."""
    _need_dir(run, "run folder")
    _quiet_prefect()
    # local: keeps `strata --help` fast (prefect)
    from flows.serve import serve as serve_deployments

    typer.echo(f"serving deployments for {run}; jobs go to {out}; Ctrl-C stops")
    _run(serve_deployments, str(run), str(out), cron=cron, interval=interval, genre=genre,
         seconds=seconds, limit=limit)


server_app = typer.Typer(no_args_is_help=True,
                         help="One local Prefect server on SQLite that every command uses (start|stop|status).")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    port: Optional[int] = typer.Option(None, "--port", help="local port (default: STRATA_SERVER_PORT or 4210)"),
) -> None:
    """Start the server in the background (its state: $STRATA_HOME/server, default ~/.cache/strata/server)."""
    # local: keeps `strata --help` fast (psutil)
    from flows import server

    typer.echo("starting the Prefect server (about 20 s) ...", err=True)
    info, started = _run(server.start, port=port)
    typer.echo(f"{'started' if started else 'already running'}: {info.url} (pid {info.pid}; UI {info.ui})")
    typer.echo(f"every strata command now uses it; log: {server.state_dir() / 'server.log'}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server (its whole process group)."""
    # local: keeps `strata --help` fast (psutil)
    from flows import server

    info = _run(server.stop)
    typer.echo(f"stopped: {info.url} (pid {info.pid})" if info else "not running")


@server_app.command("status")
def server_status() -> None:
    """Print the server's URL and pid, or "not running"."""
    # local: keeps `strata --help` fast (psutil)
    from flows import server

    info = server.running()
    typer.echo(f"running: {info.url} (pid {info.pid}; UI {info.ui})" if info else "not running")


for _typer in (app, server_app):
    for _info in _typer.registered_commands:
        _info.callback = _interruptible(_info.callback)


def main() -> None:
    # local: keeps `strata --help` fast (psutil)
    from flows import signals

    signals.install()
    app()


if __name__ == "__main__":
    sys.exit(main())
