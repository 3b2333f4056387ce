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

    jobs = generate_flow(str(run), str(tmp_path), seconds=0.1, count=2, seed=3)
    assert len(jobs) == 2 and all(Path(j, "audio.wav").is_file() for j in jobs)
    name = Path(jobs[0]).name
    (summary,) = _artifacts(name)
    assert summary.type == "markdown" and "audio.wav" in summary.data and "real-time factor" in summary.data
    (image,) = _artifacts(name + "-spectrogram")
    assert image.type == "image" and image.data.endswith("spectrogram.png")


def test_flow_rejects_bad_parameters(prefect_harness, run, tmp_path):
    from flows.generate import generate_flow

    with pytest.raises(ParameterError, match="temperature"):
        generate_flow(str(run), str(tmp_path), temperature=0.0)
    assert not any(tmp_path.iterdir())


def test_flow_draws_a_seed_when_none(prefect_harness, run, tmp_path):
    import json

    from flows.generate import generate_flow

    (job,) = generate_flow(str(run), str(tmp_path), seconds=0.05, seed=None)
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
