"""Prefect flow ``evaluate``: held-out bits per sample per stage, ablations and baselines (DESIGN 6).

Runs ``pipeline.evaluation.evaluate.evaluate_run``, writes the JSON atomically (to the run's
``metrics/evaluation_<split>.json``, and to ``json_path`` when asked), creates a markdown artifact
(the table) and a table artifact, and rewrites the run's listening report (``<run>/report``) with a
link artifact to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.report import default_report_dir, refresh_report
from pipeline.evaluation.evaluate import evaluate_run, stages_table
from pipeline.io import atomic_write_json
from pipeline.run import evaluation_path


@task(name="evaluate-run")
def evaluate_task(data: str, run: str, split: str, max_seconds: float | None) -> dict[str, Any]:
    return evaluate_run(data, run, split=split, max_seconds_per_track=max_seconds, progress=True)


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def evaluation_markdown(result: dict) -> str:
    """The evaluation as a markdown table plus the fine-tier baselines."""
    rows = stages_table(result)
    head = ["stage", "rate", "bits/sample", "without conditioning", "short context", "linear baseline"]
    limit = result.get("max_seconds")
    scope = f", the first {limit:g} s of each" if limit is not None else ""
    lines = [f"# Evaluation ({result['split']}: {result['tracks']} tracks, {result['seconds']:.1f} s{scope})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r[h]) for h in head) + " |" for r in rows]
    b = result["baselines"]
    lines += ["", f"- cascade bits per fine-tier sample: {_fmt(result['cascade_bits_per_sample'])}",
              f"- unigram (fine tier): {_fmt(b['unigram_bits_per_sample'])}",
              f"- linear AR (fine tier alone): {_fmt(b['linear_ar_bits_per_sample'])}"]
    return "\n".join(lines)


@flow(name="evaluate")
def evaluate_flow(data: str, run: str, split: str = "test", json_path: str | None = None,
                  max_seconds: float | None = None, report: bool = True) -> dict[str, Any]:
    """Evaluate a run on a split; returns the DESIGN 6 JSON (also written to ``json_path``).

    ``max_seconds``: score the first S seconds of every track (exact within them; in the JSON).
    ``report``: rewrite ``<run>/report`` (the run, this evaluation, real clips of ``data``) and link it."""
    logger = get_run_logger()
    result = evaluate_task(data, run, split, max_seconds)
    atomic_write_json(evaluation_path(run, split), result)  # the run's latest, for the report
    if json_path:
        atomic_write_json(Path(json_path), result)
        logger.info(f"evaluation written to {json_path}")
    md = evaluation_markdown(result)
    create_markdown_artifact(md, key="evaluation", description="Held-out bits per sample per stage")
    create_table_artifact(stages_table(result), key="evaluation-stages", description="Bits per sample per stage")
    print(md, flush=True)
    if report:
        refresh_report(run, default_report_dir(run), key="evaluate-report", data=data)
    return result
