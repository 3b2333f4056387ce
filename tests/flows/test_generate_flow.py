"""The `generate` flow under the Prefect test harness: job folders and artifacts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.errors import ParameterError
from tests.helpers_run import make_run

pytestmark = pytest.mark.slow  # trains stages or runs flows


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("flow"))


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    return asyncio.run(read())


def test_flow_writes_jobs_and_artifacts(prefect_harness, run, tmp_path):
    from flows.generate import generate_flow
    from pipeline.generation.plan import validate_params

    jobs = generate_flow(validate_params(run_dir=run, out_dir=tmp_path, seconds=0.1, count=2, seed=3))
    assert len(jobs) == 2 and all(Path(j, "audio.wav").is_file() for j in jobs)
    name = Path(jobs[0]).name
    (summary,) = _artifacts(name)
    assert summary.type == "markdown" and "audio.wav" in summary.data and "real-time factor" in summary.data
    assert "file://" not in summary.data and not _artifacts(name + "-spectrogram")  # no file:// images
    (link,) = [a for a in _artifacts("generate-report") if tmp_path.as_uri() in a.data]
    index = tmp_path / "report" / "index.html"
    assert f"({index.as_uri()})" in link.data and all(Path(j).name in index.read_text() for j in jobs)


def test_flow_takes_every_parameter_from_a_mapping(prefect_harness, run, tmp_path):
    """A deployment's parameters: a mapping Prefect validates into ``GenerateParams`` (all of them
    settable: engine, end_threshold, tier_prior, prompt_hold_seconds, chunk ...); bad ones are refused."""
    import json

    from flows.generate import generate_flow

    given = dict(engine="reference", end_threshold=0.7, tier_prior=0.2, prompt_hold_seconds=1.0, chunk=128,
                 top_p=0.9)
    (job,) = generate_flow(params=dict(run_dir=str(run), out_dir=str(tmp_path), seconds=0.05, seed=2, **given),
                           report=False)
    recorded = json.loads(Path(job, "meta.json").read_text())["parameters"]
    assert {k: recorded[k] for k in given} == given
    with pytest.raises(Exception, match="top_p"):
        generate_flow(params=dict(run_dir=str(run), out_dir=str(tmp_path / "bad"), top_p=1.5))
    assert not (tmp_path / "bad").exists()


def test_cli_validates_once_and_hands_the_params_to_the_flow(run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.generate
    import pipeline.generation.plan
    from flows.cli import app

    calls, seen = [], {}
    real = pipeline.generation.plan.validate_params
    monkeypatch.setattr(pipeline.generation.plan, "validate_params", lambda **kw: calls.append(kw) or real(**kw))
    monkeypatch.setattr(flows.generate, "generate_flow", lambda **kw: seen.update(kw) or [])
    result = CliRunner().invoke(app, ["generate", "--run", str(run), "--out", str(tmp_path), "--top-p", "0.9",
                                      "--score-guidance", "1.5"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and set(seen) == {"params"} and seen["params"].top_p == 0.9
    assert seen["params"].score_guidance == 1.5
    bad = CliRunner().invoke(app, ["generate", "--run", str(run), "--out", str(tmp_path), "--score-guidance", "-1"])
    assert bad.exit_code != 0 and "score_guidance" in bad.output  # one line naming the parameter


def test_flow_draws_a_seed_when_none(prefect_harness, run, tmp_path):
    import json

    from flows.generate import generate_flow
    from pipeline.generation.plan import validate_params

    (job,) = generate_flow(validate_params(run_dir=run, out_dir=tmp_path, seconds=0.05), fresh_seed=True)
    assert isinstance(json.loads(Path(job, "meta.json").read_text())["seed"], int)


def test_user_errors_are_logged_without_traceback():
    import logging
    import sys

    from flows import _OneLineUserErrors

    try:
        raise ParameterError("count=0: must be an integer from 1 to 64")
    except ParameterError:
        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    assert _OneLineUserErrors().filter(record) and record.exc_info is None
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    assert _OneLineUserErrors().filter(record) and record.exc_info is not None  # bugs keep their traceback


def test_score_only_jobs_through_the_flow(prefect_harness, tmp_path):
    """--score-only through the flow: score.mid and score.png, no audio, an artifact that says so, and the
    report (rewritten after the run) skips the folder with its reason instead of failing."""
    import dataclasses

    from flows.generate import generate_flow
    from pipeline.config import ScoreTierSection
    from pipeline.generation.plan import validate_params
    from pipeline.training.train import train_stage
    from tests.helpers_data import make_dataset
    from tests.helpers_run import GENRES, tiny_config

    cfg = dataclasses.replace(tiny_config(), score_tier=ScoreTierSection(n_layers=1, n_heads=2, width=16, context=32,
                                                                         batch_size=4, max_steps=3))
    run = make_run(tmp_path, cfg=cfg)
    data = make_dataset(tmp_path / "data", rates=(1000, 2000), seconds=2.0, roll="notes", genres=GENRES)
    train_stage(data, run, cfg, "score", progress=False)
    jobs = generate_flow(validate_params(run_dir=run, out_dir=tmp_path / "out", genre="folk", score_only=True,
                                         count=2, seed=1))
    assert len(jobs) == 2
    for j in map(Path, jobs):
        assert (j / "score.mid").is_file() and (j / "meta.json").is_file() and not (j / "audio.wav").exists()
    (summary,) = _artifacts(Path(jobs[0]).name)
    assert "score.mid" in summary.data and "audio.wav" not in summary.data
    assert (tmp_path / "out" / "report" / "index.html").is_file()
