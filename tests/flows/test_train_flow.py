"""flows.train and flows.evaluate under a real Prefect API: tasks per stage, artifacts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import save_config
from pipeline.errors import ParameterError, RunError
from tests.helpers_data import make_dataset, tiny_train_config

pytestmark = pytest.mark.slow  # trains stages or runs flows


def flow_artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        arts = client.read_artifacts(artifact_filter=run_filter)
    return {a.key: a for a in arts}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    data = make_dataset(root / "data", "periodic", rates=(1000, 2000), seconds=2.0, roll="notes")
    cfg = tiny_train_config(max_steps=10, eval_every=5, checkpoint_every=5, log_every=2)
    save_config(cfg, root / "cfg.yaml")
    return root, data


def test_train_flow_then_evaluate_flow(prefect_harness, setup):
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    root, data = setup
    run = root / "run"
    state = train_flow(str(data), str(run), config=str(root / "cfg.yaml"), stages="all", return_state=True)
    out = state.result()
    assert set(out["stages"]) == {"score", "0", "1"}  # "all": the score tier too (the training split has rolls)
    for k in ("score", "0", "1"):
        assert out["stages"][k]["steps"] == 10
        assert (run / "stages" / k / "model.safetensors").is_file()
    assert (run / "stages" / "score" / "data.json").is_file() and (run / "metrics" / "score.jsonl").is_file()
    # what generation reads besides the stages: the noise calibration, and the chord chain when
    # the training split has scores
    assert (run / "diagnostics_calibration.json").is_file()
    manifest = json.loads((data / "manifest.json").read_text())
    assert (run / "score_model.json").is_file() == any(t.get("roll") and t["split"] == "train"
                                                       for t in manifest["tracks"])
    png = Path(out["loss_png"])
    assert png == run / "metrics/loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arts = flow_artifacts(state.state_details.flow_run_id)
    assert {"train-bits", "train-loss-curve", "train-summary"} <= set(arts)
    table = json.loads(arts["train-bits"].data)
    assert [r["stage"] for r in table] == ["score", 0, 1] and all(r["best_valid_bits"] < 9 for r in table)
    assert "loss.png" in arts["train-summary"].data and arts["train-loss-curve"].data.startswith("file://")

    # resume: continue stage 1 only to 14 steps (the run's config is reused)
    again = train_flow(str(data), str(run), stages="1", max_steps=14, resume=True)
    assert again["stages"]["1"]["steps"] == 14 and set(again["stages"]) == {"1"}

    jpath = root / "eval" / "evaluation.json"
    est = evaluate_flow(str(data), str(run), split="test", json_path=str(jpath), return_state=True)
    res = est.result()
    written = json.loads(jpath.read_text())
    assert written["split"] == "test" and len(written["stages"]) == 2 and written == json.loads(json.dumps(res))
    tier = written["score_tier"]  # held-out bits per event beside the n-grams over the same events
    assert tier["events"] > 0 and 0 < tier["bits_per_event"] < 9 and tier["baselines"]["best_order"] in (2, 3, 4, 5)
    arts = flow_artifacts(est.state_details.flow_run_id)
    assert "evaluation" in arts and "| stage |" in arts["evaluation"].data
    # the run keeps its latest evaluation, and its report shows it, linked from the flow run
    assert json.loads((run / "metrics" / "evaluation_test.json").read_text()) == written
    report = run / "report" / "index.html"
    assert f"({report.as_uri()})" in arts["evaluate-report"].data and "Held-out bits per sample" in report.read_text()


def test_train_flow_parameter_errors(prefect_harness, setup):
    from flows.train import parse_stages, train_flow

    root, data = setup
    assert parse_stages("all", 3) == [0, 1, 2] and parse_stages("2,0", 3) == [0, 2]
    for bad in ("5", "x", "0,-1"):
        with pytest.raises(ParameterError):
            parse_stages(bad, 3)
    with pytest.raises(ParameterError, match="stage 7"):
        train_flow(str(data), str(root / "bad"), config=str(root / "cfg.yaml"), stages="0,7")
    with pytest.raises(RunError, match="no checkpoint"):
        train_flow(str(data), str(root / "fresh"), config=str(root / "cfg.yaml"), resume=True)


def test_flow_runs_a_stage_under_accelerate_launch(prefect_harness, setup):
    """cfg.train.num_processes = 2: the stage task runs `accelerate launch` with 2 CPU processes."""
    from flows.train import train_flow

    root, data = setup
    cfg = tiny_train_config(max_steps=6, eval_every=3, checkpoint_every=3, log_every=2, num_processes=2)
    save_config(cfg, root / "cfg2.yaml")
    out = train_flow(str(data), str(root / "run2"), config=str(root / "cfg2.yaml"), stages="0")
    assert out["stages"]["0"]["processes"] == 2 and out["stages"]["0"]["steps"] == 6
    ck = root / "run2/checkpoints/stage0/step-6"
    assert (ck / "random_states_1.pkl").is_file() and (root / "run2/stages/0/model.json").is_file()
