"""`strata serve`: deployments with a schedule and a concurrency limit, run through a Runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.errors import ParameterError
from tests.helpers_run import make_run

pytestmark = pytest.mark.slow  # trains stages or runs flows


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve"))


def test_build_deployments_without_server(run, tmp_path):
    from flows.serve import GENERATE_DEPLOYMENT, build_deployments

    deps = build_deployments(str(run), str(tmp_path), cron="0 * * * *", genre="folk", seconds=0.1, limit=3)
    gen = next(d for d in deps if d.name == GENERATE_DEPLOYMENT)
    assert gen.schedules and gen.schedules[0].schedule.cron == "0 * * * *"
    assert gen.concurrency_limit == 3 or gen.concurrency_limit.limit == 3
    params = gen.parameters["params"]
    assert params["genre"] == "folk" and params["seconds"] == 0.1
    assert params["run_dir"] == str(run.resolve()) and gen.parameters["fresh_seed"] is True
    with pytest.raises(ParameterError, match="not both"):
        build_deployments(str(run), str(tmp_path), cron="0 * * * *", interval=60)
    with pytest.raises(ParameterError, match="limit"):
        build_deployments(str(run), str(tmp_path), limit=0)
    with pytest.raises(ParameterError, match="run folder"):
        build_deployments(str(tmp_path / "nope"), str(tmp_path))


def test_scheduled_deployment_runs_through_a_runner(prefect_harness, run, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    from flows.serve import GENERATE_DEPLOYMENT, build_deployments

    out = tmp_path / "jobs"
    deps = build_deployments(str(run), str(out), interval=3600, seconds=0.05, limit=2)
    gen = next(d for d in deps if d.name == GENERATE_DEPLOYMENT)

    async def main():
        dep_id = await gen.apply()
        async with get_client() as client:
            dep = await client.read_deployment(dep_id)
        runner = Runner(query_seconds=1)
        await runner.add_deployment(gen)
        flow_run = await run_deployment(f"generate/{GENERATE_DEPLOYMENT}", timeout=0)
        await runner.start(run_once=True)
        async with get_client() as client:
            return dep, await client.read_flow_run(flow_run.id)

    dep, flow_run = asyncio.run(main())
    assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 3600
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 2
    assert flow_run.state.is_completed(), flow_run.state
    jobs = [p for p in out.iterdir() if p.name.startswith("job-")]
    assert len(jobs) == 1 and (jobs[0] / "audio.wav").is_file()
