"""Generation on tiny untrained runs: reproducibility, prompts, end class, guidance, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.sampling import guide
from pipeline.errors import ParameterError, RunError, StrataError
from pipeline.generation.generate import generate
from pipeline.generation.plan import load_prompt_tiers
from pipeline.run import load_run
from tests.helpers_run import GENRES, make_run, tiny_config, write_midi, write_tone

FILES = ("audio.wav", "tier_1000.wav", "tier_2000.wav", "spectrogram.png", "meta.json")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def end_run(tmp_path_factory) -> Path:
    """Stage 0 with an END class whose logit is biased up: pieces end after a few samples."""
    cfg = tiny_config(end_class=True, max_seconds=2.0)
    return make_run(tmp_path_factory.mktemp("end"), cfg=cfg, end_bias=6.0)


def read(job: Path, name: str = "audio.wav") -> np.ndarray:
    x, _ = sf.read(str(job / name), dtype="int16")
    return x


def meta(job: Path) -> dict:
    return json.loads((job / "meta.json").read_text())


def codes(job: Path, rate: int) -> np.ndarray:
    from pipeline.corpus.audio import mulaw_encode

    x, sr = sf.read(str(job / f"tier_{rate}.wav"), dtype="float32")
    assert sr == rate
    return mulaw_encode(x)


def test_job_files_and_meta(run, tmp_path):
    (job,) = generate(run, tmp_path, seconds=0.2, progress=False)
    assert job.parent == tmp_path and job.name.startswith("job-")
    for f in FILES:
        assert (job / f).is_file(), f
    info = sf.info(str(job / "audio.wav"))
    assert (info.samplerate, info.frames, info.subtype) == (2000, 400, "PCM_16")
    assert sf.info(str(job / "tier_1000.wav")).frames == 200
    m = meta(job)
    assert m["seed"] == 0 and m["parameters"]["seconds"] == 0.2 and m["run"] == str(run.resolve())
    stages = m["timings"]["stages"]
    assert [s["rate"] for s in stages] == [1000, 2000]
    assert all(s["real_time_factor"] > 0 and s["samples_per_second"] > 0 for s in stages)
    assert m["timings"]["real_time_factor"] > 0 and len(m["stages"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_seeded_generation_is_reproducible(run, tmp_path):
    a = generate(run, tmp_path / "a", seconds=0.2, seed=7, genre="folk", progress=False)[0]
    b = generate(run, tmp_path / "b", seconds=0.2, seed=7, genre="folk", progress=False)[0]
    c = generate(run, tmp_path / "c", seconds=0.2, seed=8, genre="folk", progress=False)[0]
    for name in FILES[:3]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert not np.array_equal(read(a), read(c))


def test_engines_give_the_same_audio_and_say_which_ran(run, tmp_path):
    """The fused engine (default) and the reference: same seed, same audio; meta.json names the engine."""
    jobs = {e: generate(run, tmp_path / e, seconds=0.3, seed=5, genre="folk", count=2, progress=False, engine=e)
            for e in ("fused", "reference")}
    for a, b in zip(jobs["fused"], jobs["reference"]):
        assert np.array_equal(read(a), read(b))
        assert {s["engine"] for s in meta(a)["timings"]["stages"]} == {"fused"}
        assert {s["engine"] for s in meta(b)["timings"]["stages"]} == {"reference"}
        assert meta(a)["parameters"]["engine"] == "fused"


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_quantized_weights_generate_near_float32_and_are_recorded(run, tmp_path, fmt):
    """``weights="int8"`` (``strata generate --weights int8``; int4 likewise) quantizes every stage as it loads:
    the piece stays near float32's in level, and meta.json records the format."""
    a = generate(run, tmp_path / "f32", seconds=0.3, seed=5, genre="folk", progress=False)[0]
    b = generate(run, tmp_path / fmt, seconds=0.3, seed=5, genre="folk", progress=False, weights=fmt)[0]
    assert meta(b)["parameters"]["weights"] == fmt and meta(a)["parameters"]["weights"] is None
    ya, yb = read(a), read(b)
    assert ya.shape == yb.shape and np.isfinite(yb).all()
    rms = lambda y: float(np.sqrt(np.mean(np.asarray(y, np.float64) ** 2)))  # noqa: E731
    assert abs(rms(yb) - rms(ya)) <= 0.5 * rms(ya) + 1e-3  # same piece in kind: level within half


@pytest.mark.parametrize("kwargs", [dict(genre="folk", count=2), dict(genre="chorale", tier_prior=0.05)])
def test_pipelined_cascade_gives_the_sequential_audio(run, tmp_path, monkeypatch, kwargs):
    """With more than one core the stages run side by side, each reading the tier below as it is
    written; the audio is the sequential cascade's (one core), bit for bit."""
    jobs = {}
    for workers in ("1", "4"):  # 4 cores > the variations: the stages side by side
        monkeypatch.setenv("STRATA_GENERATE_WORKERS", workers)
        jobs[workers] = generate(run, tmp_path / workers, seconds=3.0, seed=9, chunk=256, progress=False, **kwargs)
    for a, b in zip(jobs["1"], jobs["4"]):
        assert np.array_equal(read(a), read(b))
        assert not any(s.get("pipelined") for s in meta(a)["timings"]["stages"])
        assert all(s.get("pipelined") for s in meta(b)["timings"]["stages"])


def test_a_failing_stage_stops_the_pipelined_cascade(run, tmp_path, monkeypatch):
    """A stage that fails mid-piece fails the job with its error; the stage waiting on it stops."""
    import models.fused as fused

    monkeypatch.setenv("STRATA_GENERATE_WORKERS", "2")
    calls = []

    def boom(self, draw, t0, t1):  # stage 1's tier prior, at its first block
        calls.append(t0)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(fused.FusedStream, "_band", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        generate(run, tmp_path / "out", seconds=2.0, genre="folk", tier_prior=0.1, progress=False)
    assert calls == [0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no job folder


def test_count_gives_distinct_folders(run, tmp_path):
    jobs = generate(run, tmp_path, seconds=0.1, count=3, seed=1, progress=False)
    assert len(jobs) == len(set(jobs)) == 3 and all(j.is_dir() for j in jobs)
    assert [meta(j)["variation"] for j in jobs] == [0, 1, 2]
    audios = [read(j) for j in jobs]
    assert not np.array_equal(audios[0], audios[1]) and not np.array_equal(audios[1], audios[2])


def test_stage_temperature_scales_one_stage(run, tmp_path):
    """A factor for stage 1 changes stage 1 only; the run config's factors are the default."""
    base = generate(run, tmp_path / "a", seconds=0.2, seed=3, progress=False)[0]
    cold = generate(run, tmp_path / "b", seconds=0.2, seed=3, stage_temperature=(1.0, 0.3), progress=False)[0]
    assert (base / "tier_1000.wav").read_bytes() == (cold / "tier_1000.wav").read_bytes()
    assert not np.array_equal(read(base), read(cold))
    assert meta(cold)["parameters"]["stage_temperature"] == [1.0, 0.3]


def test_stage_top_p_narrows_only_the_stages_it_names(run, tmp_path):
    """stage_top_p (0.05,): stage 0 draws from a narrower nucleus than the run's top_p, so other samples; values equal
    to top_p draw as without them; more values than stages are refused; the values are recorded."""
    kw = dict(seconds=0.2, seed=3, progress=False)
    plain = generate(run, tmp_path / "a", **kw)[0]
    first = generate(run, tmp_path / "b", stage_top_p=(0.05,), **kw)[0]
    same = generate(run, tmp_path / "c", stage_top_p=(0.99, 0.99), top_p=0.99, **kw)[0]
    assert (first / "tier_1000.wav").read_bytes() != (plain / "tier_1000.wav").read_bytes()
    assert (same / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert read(same).tobytes() == read(plain).tobytes()
    assert meta(first)["parameters"]["stage_top_p"] == [0.05]
    with pytest.raises(ParameterError, match="stage_top_p"):
        generate(run, tmp_path / "d", stage_top_p=(0.9, 0.9, 0.9), **kw)


def test_scale_floor_lifts_the_scale_where_the_score_sounds(tmp_path):
    """scale_floor (0.5,) on a run whose stage 0 has score taps and an adaptive scale trained without a floor: other
    stage-0 samples under a MIDI score; 0 draws as trained; more values than stages or a floor >= 1 are refused; the
    values are recorded."""
    cfg = tiny_config(stage0={"linear_order": 16, "adaptive_scale": True, "score": {"enabled": True}})
    scored = make_run(tmp_path / "scored", cfg=cfg)
    midi = write_midi(tmp_path / "score.mid", notes=((60, 0.0, 0.3),))
    kw = dict(midi=str(midi), seconds=0.3, seed=3, progress=False)
    plain = generate(scored, tmp_path / "a", **kw)[0]
    floored = generate(scored, tmp_path / "b", scale_floor=(0.5,), **kw)[0]
    as_trained = generate(scored, tmp_path / "c", scale_floor=(0.0, 0.0), **kw)[0]
    assert (floored / "tier_1000.wav").read_bytes() != (plain / "tier_1000.wav").read_bytes()
    assert (as_trained / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert meta(floored)["parameters"]["scale_floor"] == [0.5]
    with pytest.raises(ParameterError, match="scale_floor"):
        generate(scored, tmp_path / "d", scale_floor=(0.1, 0.1, 0.1), **kw)
    with pytest.raises(ParameterError, match="scale_floor"):
        generate(scored, tmp_path / "e", scale_floor=(1.0,), **kw)


def test_adapt_floor_replaces_the_trained_floor_of_the_stages_it_names(tmp_path):
    """adapt_floor (0.1,) on a run whose stage 0 has an adaptive scale (trained with the 1e-3 floor): other stage-0
    samples; 0 draws as trained; more values than stages or a floor >= 1 are refused; the values are recorded."""
    cfg = tiny_config(stage0={"linear_order": 16, "adaptive_scale": True})
    adaptive = make_run(tmp_path / "adaptive", cfg=cfg)
    kw = dict(seconds=0.3, seed=3, progress=False)
    plain = generate(adaptive, tmp_path / "a", **kw)[0]
    floored = generate(adaptive, tmp_path / "b", adapt_floor=(0.1,), **kw)[0]
    as_trained = generate(adaptive, tmp_path / "c", adapt_floor=(0.0, 0.0), **kw)[0]
    assert (floored / "tier_1000.wav").read_bytes() != (plain / "tier_1000.wav").read_bytes()
    assert (as_trained / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert meta(floored)["parameters"]["adapt_floor"] == [0.1]
    with pytest.raises(ParameterError, match="adapt_floor"):
        generate(adaptive, tmp_path / "d", adapt_floor=(0.1, 0.1, 0.1), **kw)
    with pytest.raises(ParameterError, match="adapt_floor"):
        generate(adaptive, tmp_path / "e", adapt_floor=(1.0,), **kw)


def test_tail_floor_changes_the_draw_only_after_the_scores_last_note(tmp_path):
    """tail_floor (0.1,) on a run whose stage 0 has an adaptive scale, for a score whose one note ends at 0.3 s of
    a 0.8 s piece: stage 0 draws as without it up to the note's end (same seed) and otherwise after it; the values
    are recorded, and more values than stages are refused."""
    cfg = tiny_config(stage0={"linear_order": 16, "adaptive_scale": True})
    adaptive = make_run(tmp_path / "adaptive", cfg=cfg)
    midi = write_midi(tmp_path / "score.mid", notes=((60, 0.0, 0.3),))
    kw = dict(midi=str(midi), seconds=0.8, seed=3, progress=False)
    plain = codes(generate(adaptive, tmp_path / "a", **kw)[0], 1000)
    job = generate(adaptive, tmp_path / "b", tail_floor=(0.1,), **kw)[0]
    tailed = codes(job, 1000)
    end = 300  # the note's end at 1000 Hz
    assert np.array_equal(tailed[:end], plain[:end])
    assert not np.array_equal(tailed[end:], plain[end:])
    assert meta(job)["parameters"]["tail_floor"] == [0.1]
    with pytest.raises(ParameterError, match="tail_floor"):
        generate(adaptive, tmp_path / "c", tail_floor=(0.1, 0.1, 0.1), **kw)


def test_steady_scale_per_stage_steadies_only_the_stages_it_names(run, tmp_path):
    """steady_scale (False, True) at temperature 0.5: stage 0 draws as without it, stage 1 otherwise (its scale reads
    drawn |residuals| / 0.5); True steadies both; the values are recorded."""
    kw = dict(seconds=0.2, seed=3, temperature=0.5, progress=False)
    plain = generate(run, tmp_path / "a", **kw)[0]
    second = generate(run, tmp_path / "b", steady_scale=(False, True), **kw)[0]
    both = generate(run, tmp_path / "c", steady_scale=True, **kw)[0]
    assert (second / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert (both / "tier_1000.wav").read_bytes() != (plain / "tier_1000.wav").read_bytes()
    assert not np.array_equal(read(second), read(plain))
    assert meta(second)["parameters"]["steady_scale"] == [False, True]


def test_stage_guidance_guides_only_the_stages_it_names(run, tmp_path):
    """Guidance with stage factors (1, 0): stage 0 is guided as with plain guidance, stage 1 samples as unguided
    (its tier below aside); the factors are recorded."""
    kw = dict(genre="folk", seconds=0.2, seed=3, progress=False)
    plain = generate(run, tmp_path / "a", **kw)[0]
    guided = generate(run, tmp_path / "b", guidance=3.0, **kw)[0]
    first = generate(run, tmp_path / "c", guidance=3.0, stage_guidance=(1.0, 0.0), **kw)[0]
    assert (first / "tier_1000.wav").read_bytes() == (guided / "tier_1000.wav").read_bytes()
    assert (first / "tier_1000.wav").read_bytes() != (plain / "tier_1000.wav").read_bytes()
    both_unguided_at_1 = generate(run, tmp_path / "d", guidance=3.0, stage_guidance=(0.0, 0.0), **kw)[0]
    assert (both_unguided_at_1 / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert meta(first)["parameters"]["stage_guidance"] == [1.0, 0.0]


def test_genre_twin_keeps_the_roll_and_needs_a_genre(run, tmp_path):
    """guidance_twin "no_genre": the twins drop the genre alone, so a MIDI piece with a genre is guided otherwise
    than with the unconditional twins, and one without a genre has nothing to guide (it samples as unguided)."""
    kw = dict(midi=write_midi(tmp_path / "s.mid"), seconds=0.2, seed=3, progress=False)
    away = generate(run, tmp_path / "a", genre="folk", guidance=3.0, **kw)[0]
    towards = generate(run, tmp_path / "b", genre="folk", guidance=3.0, guidance_twin="no_genre", **kw)[0]
    assert (away / "tier_1000.wav").read_bytes() != (towards / "tier_1000.wav").read_bytes()
    assert meta(towards)["parameters"]["guidance_twin"] == "no_genre"
    plain = generate(run, tmp_path / "c", **kw)[0]
    no_genre = generate(run, tmp_path / "d", guidance=3.0, guidance_twin="no_genre", **kw)[0]
    assert (no_genre / "tier_1000.wav").read_bytes() == (plain / "tier_1000.wav").read_bytes()
    assert not any(t["streams"] > 1 for t in meta(no_genre)["timings"]["stages"])  # no twins ran


def test_preroll_is_sampled_then_cut(run, tmp_path):
    """A warm-up in front of a scored piece: the same length and files, other samples (the stages start warm), the
    seconds recorded; a piece continuing an audio prompt has a past already and takes none."""
    midi = write_midi(tmp_path / "s.mid", notes=((60, 0.0, 0.3), (64, 0.1, 0.4)))
    kw = dict(midi=midi, seconds=0.3, seed=3, progress=False)
    plain = generate(run, tmp_path / "a", **kw)[0]
    warm = generate(run, tmp_path / "b", preroll_seconds=0.1, **kw)[0]
    for name in ("audio.wav", "tier_1000.wav"):
        assert read(warm, name).shape == read(plain, name).shape
    assert not np.array_equal(read(warm, "tier_1000.wav"), read(plain, "tier_1000.wav"))
    assert meta(warm)["parameters"]["preroll_seconds"] == 0.1
    prompt = write_tone(tmp_path / "p.wav", seconds=0.2)
    kw = dict(prompt=prompt, seconds=0.3, seed=3, progress=False)
    cold = generate(run, tmp_path / "c", **kw)[0]
    assert np.array_equal(read(generate(run, tmp_path / "d", preroll_seconds=0.1, **kw)[0]), read(cold))


def test_with_preroll_holds_the_first_frames_notes():
    from pipeline.generation.generate import with_preroll
    from pipeline.generation.plan import Plan

    roll = np.zeros((2, 128, 5), np.uint8)
    roll[0, 60, :3] = roll[1, 60, 0] = 90  # C4 struck at frame 0, held 3 frames
    roll[0, 67, 2:] = roll[1, 67, 2] = 70  # G4 from frame 2
    plan = Plan(n0=50, free_length=False, genre_id=0, roll=roll, prompt_tiers=None, prompt_seconds=0.0,
                midi_seconds=None)
    warm = with_preroll(plan, 3, 10)
    assert (warm.n0, warm.preroll, warm.roll.shape) == (80, 30, (2, 128, 8))
    assert warm.roll[0, 60, :3].tolist() == [90, 90, 90] and warm.roll[1, 60, :3].tolist() == [90, 0, 0]
    assert not warm.roll[:, 67, :3].any()  # only what sounds in the first frame
    assert np.array_equal(warm.roll[:, :, 3:], roll)  # the piece's own roll, its onset at frame 0 kept


def test_genre_pieces_take_a_score_from_the_runs_chain(run, tmp_path):
    """With score_model.json in the run, a genre-only piece gets its notes from that genre's chain."""
    import shutil

    from pipeline.training.score_model import FILE, fit

    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    roll = np.zeros((2, 128, 300), np.uint8)
    roll[0, 64, :] = roll[0, 67, :] = 100
    roll[1, [64, 67], 0] = 100
    (folder / FILE).write_text(json.dumps(fit([(GENRES[0], roll)], 100)))
    (job,) = generate(folder, tmp_path / "a", genre=GENRES[0], seconds=0.5, progress=False)
    assert meta(job)["roll_source"] == "chain"  # the run has no score tier: the chain stands in
    (free,) = generate(folder, tmp_path / "free", genre=GENRES[0], progress=False)  # no --seconds
    # the score's length (>= half of the 3 s training piece) + 1 s release, within max_seconds = 3
    assert 1.5 + 1.0 <= sf.info(str(free / "audio.wav")).duration <= 3.0
    (plain,) = generate(folder, tmp_path / "b", genre=GENRES[0], seconds=0.5, score_model="none", progress=False)
    assert meta(plain)["roll_source"] is None
    assert not np.array_equal(read(job), read(plain))
    (other,) = generate(run, tmp_path / "c", genre=GENRES[0], seconds=0.5, progress=False)  # no chain in the run
    assert meta(other)["roll_source"] is None


def test_tier_prior_holds_a_fine_stage_to_the_tier_below(run):
    """An untrained stage 1 wanders off its tier below; under the prior it follows it."""
    from models.draw import Draw
    from models.mulaw import decode_values, mulaw_encode
    from pipeline.generation.generate import run_stage

    stage = load_run(run).stages[1]
    n = 800
    t = torch.arange(n // stage.factor, dtype=torch.float32)
    below = torch.from_numpy(mulaw_encode((0.5 * torch.sin(2 * np.pi * t / 25)).numpy(), 8).astype(np.int64))[None]
    table = torch.tensor(decode_values(256), dtype=torch.float32)

    def error(sigma: float) -> float:
        res = run_stage(stage, n, 1, Draw(tier_prior=sigma), genre=torch.zeros(1, dtype=torch.int64), below=below,
                        generator=torch.Generator().manual_seed(0))
        x = table[res.x[0]].view(-1, stage.factor).mean(1)  # back at the tier below's rate
        return float((x - table[below[0]]).abs().mean())

    free, held = error(0.0), error(0.02)
    assert held < 0.05 and held < free / 3, (free, held)


def test_midi_prompt_sets_length(run, tmp_path):
    midi = write_midi(tmp_path / "score.mid", notes=((60, 0.0, 0.25), (64, 0.2, 0.4)))
    (job,) = generate(run, tmp_path / "out", midi=midi, progress=False)
    m = meta(job)
    assert m["midi_seconds"] == pytest.approx(0.4)
    assert sf.info(str(job / "audio.wav")).frames == round((0.4 + 1.0) * 2000)  # + 1 s release
    assert sf.info(str(job / "tier_1000.wav")).frames == 1400
    assert (job / "spectrogram.png").stat().st_size > 1000


def test_roll_conditions_the_output(run, tmp_path):
    midi = write_midi(tmp_path / "score.mid", notes=((72, 0.0, 0.1),))
    with_roll = generate(run, tmp_path / "a", midi=midi, seconds=0.2, progress=False)[0]
    without = generate(run, tmp_path / "b", seconds=0.2, progress=False)[0]
    assert not np.array_equal(read(with_roll), read(without))


def test_audio_prompt_is_continued_unchanged(run, tmp_path):
    prompt = write_tone(tmp_path / "prompt.wav", seconds=0.3, rate=4000)
    (job,) = generate(run, tmp_path / "out", prompt=prompt, seconds=0.2, progress=False)
    loaded = load_run(run)
    expected = load_prompt_tiers(prompt, loaded.cfg, loaded.rates)  # {rate: uint8 codes}
    for rate, want in expected.items():
        got = codes(job, rate)
        assert got.shape[0] == want.shape[0] + round(0.2 * rate)  # prompt + seconds
        np.testing.assert_array_equal(got[: want.shape[0]], want)
        assert not np.array_equal(got[want.shape[0]:], np.full(round(0.2 * rate), 128))
    assert meta(job)["prompt_seconds"] == pytest.approx(0.3)
    assert meta(job)["roll_source"] == ("prompt" if loaded.cfg.stages[0].use_roll else None)  # notes estimated


def test_end_class_ends_the_piece_early(end_run, tmp_path):
    jobs = generate(end_run, tmp_path, count=3, seed=3, progress=False)
    cap = 2.0 * 2000
    lengths = [sf.info(str(j / "audio.wav")).frames for j in jobs]
    assert all(0 < n < cap for n in lengths), lengths
    for j, n in zip(jobs, lengths):
        m = meta(j)
        assert m["length_decided_by_model"] and m["ended_by_model"]
        assert sf.info(str(j / "tier_1000.wav")).frames * 2 == n  # tiers cropped alike
    assert len(set(lengths)) > 1  # streams of one batch end at different times


def test_end_threshold_decides_where_pieces_end(end_run):
    """END is taken only where its probability reaches the threshold, never drawn by chance."""
    import torch

    from models.draw import Draw
    from pipeline.generation.generate import run_stage

    stage = load_run(end_run).stages[0]
    kw = dict(genre=torch.zeros(4, dtype=torch.int64), generator=torch.Generator().manual_seed(0))
    ends = dict(free_length=True, min_length=20, round_to=20)
    never = run_stage(stage, 400, 4, Draw(end_threshold=1.0, **ends), **kw)
    assert never.lengths == [400] * 4 and never.x.shape == (4, 400)
    eager = run_stage(stage, 400, 4, Draw(end_threshold=1e-6, **ends), **kw)
    assert eager.lengths == [20] * 4  # the first step END is allowed


def test_end_class_never_ends_a_fixed_length(end_run, tmp_path):
    (job,) = generate(end_run, tmp_path, seconds=0.3, progress=False)
    assert sf.info(str(job / "audio.wav")).frames == 600
    assert not meta(job)["ended_by_model"]


def test_guidance_runs_and_changes_output(run, tmp_path):
    plain = generate(run, tmp_path / "a", seconds=0.2, genre="chorale", seed=4, progress=False)[0]
    guided = generate(run, tmp_path / "b", seconds=0.2, genre="chorale", seed=4, guidance=3.0,
                      progress=False)[0]
    assert not np.array_equal(read(plain), read(guided))
    midi = write_midi(tmp_path / "s.mid")
    (job,) = generate(run, tmp_path / "c", midi=midi, seconds=0.2, guidance=2.0, progress=False)
    assert meta(job)["timings"]["stages"][0]["streams"] == 2  # conditional + unconditional twin


def test_guide_formula():
    l_c, l_u = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 2.0]])
    out = guide(torch.cat([l_c, l_u]), batch=1, guidance=2.0)
    torch.testing.assert_close(out, l_u + 3.0 * (l_c - l_u))
    assert guide(l_c, batch=1, guidance=2.0) is l_c


def test_concurrent_jobs_do_not_collide(run, tmp_path):
    results: dict[int, list[Path]] = {}

    def work(i: int) -> None:
        results[i] = generate(run, tmp_path, seconds=0.1, seed=5, progress=False)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a,), (b,) = results[0], results[1]
    assert a != b and sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])
    for j in (a, b):
        assert all((j / f).is_file() for f in FILES)
    np.testing.assert_array_equal(read(a), read(b))  # same seed, same audio, even at once


def test_interrupted_job_leaves_nothing(run, tmp_path, monkeypatch):
    import pipeline.generation.spectrogram

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.generation.spectrogram, "plot_spectrogram", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(run, tmp_path, seconds=0.1, progress=False)
    assert list(tmp_path.iterdir()) == []


BAD = [
    (dict(seconds=-1.0), ParameterError, "seconds"),
    (dict(seconds=0.0), ParameterError, "seconds"),
    (dict(seconds=5000.0), ParameterError, "seconds"),
    (dict(seconds=10.0), ParameterError, "max_seconds"),  # above the run's generate.max_seconds
    (dict(seconds=float("nan")), ParameterError, "seconds"),
    (dict(temperature=0.0), ParameterError, "temperature"),
    (dict(temperature=-1.0), ParameterError, "temperature"),
    (dict(stage_temperature=(1.0, 0.0)), ParameterError, "stage_temperature"),
    (dict(stage_temperature=(1.0, 1.0, 1.0)), ParameterError, "3 factors, this run has 2 stages"),
    (dict(stage_guidance=(1.0, 0.0, 1.0)), ParameterError, "stage_guidance has 3 factors"),
    (dict(stage_guidance=(1.0, -1.0)), ParameterError, "stage_guidance"),
    (dict(score_share=(0.0, 1.0, 1.0)), ParameterError, "score_share has 3 factors"),
    (dict(score_share=(0.0, 1.5)), ParameterError, "score_share"),
    (dict(share_power=(1.0, 0.0)), ParameterError, "share_power"),
    (dict(steady_scale=(True, False, True)), ParameterError, "steady_scale has 3 factors"),
    (dict(share_power=(1.0, 1.0, 1.0)), ParameterError, "share_power has 3 factors"),
    (dict(scale_anchor=(0.0, 1.5)), ParameterError, "scale_anchor"),
    (dict(scale_clip=(0.0, -1.0)), ParameterError, "scale_clip"),
    (dict(top_p=0.0), ParameterError, "top_p"),
    (dict(top_p=1.5), ParameterError, "top_p"),
    (dict(count=0), ParameterError, "count"),
    (dict(count=65), ParameterError, "count"),
    (dict(guidance=-0.5), ParameterError, "guidance"),
    (dict(seed=-1), ParameterError, "seed"),
    (dict(genre="polka"), ParameterError, "chorale, folk"),
    (dict(midi="missing.mid"), ParameterError, "midi"),
    (dict(prompt="missing.wav"), ParameterError, "prompt"),
    (dict(engine="turbo"), ParameterError, "engine"),
    (dict(weights="fp8"), ParameterError, "weights"),
]


@pytest.mark.parametrize("kwargs,err,needle", BAD, ids=[f"{k}" for k, _, _ in BAD])
def test_bad_parameters_give_one_line(run, tmp_path, kwargs, err, needle):
    kwargs = {k: (str(tmp_path / v) if k in ("midi", "prompt") else v) for k, v in kwargs.items()}
    with pytest.raises(err) as info:
        generate(run, tmp_path / "out", progress=False, **kwargs)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg, msg
    assert not (tmp_path / "out").exists()


def test_bad_runs_and_midi(run, tmp_path):
    with pytest.raises(ParameterError, match="run folder not found"):
        generate(tmp_path / "nope", tmp_path / "out", progress=False)
    broken = make_run(tmp_path / "b")
    (broken / "stages" / "1" / "model.safetensors").unlink()
    with pytest.raises(RunError, match="stage 1"):
        generate(broken, tmp_path / "out", progress=False)
    empty = write_midi(tmp_path / "empty.mid", notes=())
    with pytest.raises(ParameterError, match="no notes"):
        generate(run, tmp_path / "out", midi=empty, progress=False)
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"not a midi file at all")
    with pytest.raises(StrataError) as info:
        generate(run, tmp_path / "out", midi=junk, progress=False)
    assert "junk.mid" in str(info.value) and "\n" not in str(info.value)


def test_genre_vocabulary_comes_from_the_run(run):
    assert load_run(run).genres == GENRES
