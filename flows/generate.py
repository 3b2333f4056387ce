"""Prefect flow ``generate``: a thin shell over ``pipeline.generation.generate.generate`` with artifacts."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.report import default_report_dir, refresh_report
from pipeline.generation.generate import generate_jobs
from pipeline.generation.plan import GenerateParams
from pipeline.report.build import diagnostics_rows


@flow(name="generate")
def generate_flow(params: GenerateParams, report: bool = True, fresh_seed: bool = False) -> list[str]:
    """Generate ``params.count`` variations from ``params.run_dir``; one job folder each (returned as paths).

    ``params``: every generation parameter (``pipeline.generation.plan.GenerateParams``: what ``strata
    generate`` sets and more, e.g. ``engine``, ``end_threshold``, ``tier_prior``, ``chunk``); Prefect
    validates it (a deployment gives a mapping), and ``strata generate`` or a script passes one made
    by ``validate_params`` (one-line errors, before any Prefect server starts).  Sampling
    parameters left None take the run's ``generate:`` config section.
    ``fresh_seed``: replace ``params.seed`` by a fresh one (scheduled runs); recorded in meta.json.
    ``report``: rewrite ``<out>/report`` (the listening page of every job in ``out``) and link it.
    """
    if fresh_seed:
        params = params.model_copy(update={"seed": secrets.randbelow(2**31)})
    jobs = generate_jobs(params)
    for job in jobs:
        publish_job(job)
    if report:
        refresh_report(params.run_dir, default_report_dir(params.out_dir), key="generate-report",
                       jobs=[params.out_dir])
    return [str(j) for j in jobs]


def publish_job(job: Path) -> None:
    """A markdown summary (parameters, timings, diagnostics, file paths) as an artifact; pictures and
    players are in the report (a Prefect server's page cannot show ``file://`` images)."""
    meta = json.loads((job / "meta.json").read_text())
    create_markdown_artifact(markdown=job_markdown(job, meta), key=_key(job.name),
                             description=f"generation job {job.name}")


def job_markdown(job: Path, meta: dict) -> str:
    """A readable summary of one job's meta.json."""
    if meta.get("score_only"):  # --score-only: a score, no audio
        return "\n".join([f"# {job.name}", "", f"- score: `{(job / 'score.mid').resolve()}` "
                          f"({meta['score_seconds']:.2f} s, {meta['roll_source']})",
                          f"- piano roll: `{(job / 'score.png').resolve()}`", f"- run: `{meta['run']}`",
                          f"- written in {meta['timings']['score_wall_seconds']:.2f} s"]) + "\n"
    t = meta["timings"]
    lines = [f"# {job.name}", "", f"- folder: `{job.resolve()}`",
             f"- audio: `{(job / 'audio.wav').resolve()}` ({meta['seconds']:.2f} s)",
             f"- spectrogram: `{(job / 'spectrogram.png').resolve()}`",
             f"- run: `{meta['run']}`", "", "## Parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in meta["parameters"].items()]
    lines += ["", "## Timings", "", "| stage | rate | samples | wall s | real-time factor | samples/s |",
              "|---|---|---|---|---|---|"]
    for s in t["stages"]:
        lines.append(f"| {s['stage']} | {s['rate']} | {s['samples']} | {s['wall_seconds']:.2f} | "
                     f"{_num(s['real_time_factor'])} | {_num(s['samples_per_second'])} |")
    lines.append(f"| total | | | {t['total_wall_seconds']:.2f} | {_num(t['real_time_factor'])} | |")
    lines += diagnostics_markdown(meta.get("diagnostics") or {})
    return "\n".join(lines) + "\n"


def diagnostics_markdown(d: dict) -> list[str]:
    """Markdown lines: a table of the job's diagnostics (meta.json ``diagnostics``)."""
    if not d:
        return []
    lines = ["", "## Diagnostics", ""]
    if "error" in d:
        lines += [f"diagnostics failed: {d['error']}", ""]
    lines += ["| measure | value |", "|---|---|"]
    lines += [f"| {label} | {_value(v)} |" for label, v in diagnostics_rows(d)]
    return lines


def _value(v) -> str:
    return _num(v) if isinstance(v, float) else ("-" if v is None else str(v))


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _key(name: str) -> str:
    """Artifact keys: lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())
