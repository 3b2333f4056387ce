"""bench/opening.py: stage 0 is evaluated alone, through a view of the run that links its exported stage."""

from __future__ import annotations

from opening import stage0_only


def test_stage0_only_links_stage_0_and_copies_the_config(tmp_path):
    run = tmp_path / "run"
    for k in ("0", "1"):
        (run / "stages" / k).mkdir(parents=True)
        (run / "stages" / k / "model.json").write_text(f'{{"index": {k}}}')
    (run / "config.yaml").write_text("name: tiny\n")
    view = stage0_only(run)
    assert (view / "config.yaml").read_text() == "name: tiny\n"
    assert sorted(p.name for p in (view / "stages").iterdir()) == ["0"]
    assert (view / "stages" / "0").resolve() == (run / "stages" / "0").resolve()
    assert stage0_only(run) == view  # again: the same view, no error
