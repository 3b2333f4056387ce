"""pipeline/training/score_tier.py: the score tier trained like a stage, exported, evaluated and sampled into scores."""

from __future__ import annotations

import dataclasses
import json

import mido
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.score_tier import NO_LENGTH, ScoreTransformer
from pipeline.config import ScoreTierSection
from pipeline.corpus.midi import crop_midi
from pipeline.corpus.score_events import (
    END,
    NOTE_OFF_BASE,
    NOTE_ON_BASE,
    PAD,
    events_seconds,
    events_steps,
    events_to_roll,
    held_before,
)
from pipeline.errors import ParameterError, RunError
from pipeline.generation.generate import generate
from pipeline.run import SCORE_KEY, read_metrics, stage_dir
from pipeline.training.score_tier import (
    DATA_FILE,
    EventWindows,
    extra_pieces,
    is_trained,
    lengths_of,
    load_pieces,
    load_score_tier,
    model_config,
    split_pieces,
    training_lengths,
)
from pipeline.training.train import train_stage
from tests.helpers_data import make_dataset, read_manifest, tiny_train_config
from tests.helpers_run import GENRES, make_run, tiny_config, write_midi

SMALL = ScoreTierSection(n_layers=1, n_heads=2, width=16, context=32, dropout=0.0, batch_size=4, max_steps=20,
                         lr=3e-3, transpose=2, stretch=0.1)


def _data(tmp_path, seconds: float = 3.0):
    return make_dataset(tmp_path / "data", rates=(1000, 2000), seconds=seconds, roll="notes", genres=GENRES)


def _cfg(base=None, **over):
    cfg = base or tiny_train_config(eval_every=10, checkpoint_every=10)
    return dataclasses.replace(cfg, score_tier=dataclasses.replace(SMALL, **over))


def test_windows_are_pure_functions_of_seed_and_index(tmp_path):
    data = _data(tmp_path)
    pieces = split_pieces(data, read_manifest(data), "train", 100)
    assert len(pieces) == 4 and all(p.events[-1] == END for p in pieces)
    ds = EventWindows(pieces, GENRES, context=32, seed=5, length=100, transpose=2, stretch=0.1)
    a, b = ds[7], EventWindows(pieces, GENRES, 32, 5, 100, 2, 0.1)[7]
    assert a["tokens"].shape == (33,) and bool((a["tokens"] == b["tokens"]).all()) and a["genre"] == b["genre"]
    assert any(not bool((ds[i]["tokens"] == a["tokens"]).all()) for i in range(8, 20))  # windows differ
    plain = EventWindows(pieces, GENRES, context=8, seed=5, length=100)  # no augmentation: windows of the pieces
    ends = 0
    for i in range(60):  # the offset is the piece's time steps before the window (the model's clock)
        item = plain[i]
        window = [t for t in item["tokens"].tolist() if t != PAD]  # PAD only past the piece's END
        piece = next(p for p in pieces if any(list(([END] + list(p.events))[s:s + 9]) == window
                                               for s in range(len(p.events) + 1)))
        seq = [END] + list(piece.events)
        s = next(s for s in range(len(seq)) if seq[s:s + 9] == window)
        assert int(item["offset"]) == events_steps(seq[1:s]), i
        assert int(item["total"]) == events_steps(piece.events), i  # told the piece's length (no length dropout)
        assert np.array_equal(item["held"].numpy(), held_before(seq[1:])[max(0, s - 1)] if s > 0 else
                              np.zeros(128, bool)), i  # the pitches sounding before the window
        ends += window[-1] == END and s > 0
    assert any(int(plain[i]["offset"]) > 0 for i in range(60))
    assert ends >= 6  # windows reach the piece's END as often as any event (a window covers 8 of ~40 events)


def test_each_window_carries_the_transposition_it_was_given(tmp_path):
    """A window's ``semitones`` is the transposition applied to it (the key input's answer): moved back by it,
    every window is a window of its piece as written; transpositions are drawn in [-2, 2] and 0 where none."""
    data = _data(tmp_path)
    pieces = split_pieces(data, read_manifest(data), "train", 100)
    seqs = [[END] + list(p.events) for p in pieces]
    ds = EventWindows(pieces, GENRES, context=8, seed=5, length=200, transpose=2)

    def moved_back(tokens: list[int], k: int) -> list[int]:
        return [t - k if NOTE_ON_BASE <= t < NOTE_ON_BASE + 128 or NOTE_OFF_BASE <= t < NOTE_OFF_BASE + 128 else t
                for t in tokens]

    seen = set()
    for i in range(120):
        item = ds[i]
        k = int(item["semitones"])
        seen.add(k)
        window = moved_back([t for t in item["tokens"].tolist() if t != PAD], k)
        assert any(seq[s:s + len(window)] == window for seq in seqs for s in range(len(seq))), (i, k)
    assert seen == {-2, -1, 0, 1, 2}, seen
    assert all(int(EventWindows(pieces, GENRES, 8, 5, 20)[i]["semitones"]) == 0 for i in range(20))


def test_edge_share_puts_windows_at_openings_and_ends(tmp_path):
    """Drawn uniformly, a piece's opening starts ~1 window in its event count; with ``edge_share`` 0.4,
    about a fifth of windows open the piece and a fifth end with its END, the rest as before."""
    data = _data(tmp_path)
    pieces = split_pieces(data, read_manifest(data), "train", 100)
    counts = {}
    for share in (0.0, 0.4):
        ds = EventWindows(pieces, GENRES, context=8, seed=5, length=400, edge_share=share)
        items = [ds[i]["tokens"].tolist() for i in range(400)]
        counts[share] = (sum(t[0] == END for t in items), sum(t[-1] == END and t[0] != END for t in items))
    assert counts[0.0][0] < 40 and counts[0.4][0] >= counts[0.0][0] + 50, counts  # openings
    assert counts[0.4][1] >= counts[0.0][1] + 50, counts  # windows whose last target is the END
    plain, edged = EventWindows(pieces, GENRES, 8, 5, 400), EventWindows(pieces, GENRES, 8, 5, 400, edge_share=0.4)
    same = sum(plain[i]["tokens"].tolist() == edged[i]["tokens"].tolist() for i in range(200))
    assert same >= 100  # the windows not moved to an edge are the uniform draw's own


def test_held_before_matches_the_model_and_windows_move_it_with_transposition(tmp_path):
    """``held_before`` (numpy, the windows' held pitches) equals the model's own ``held_after``, and a
    transposed window's held pitches move with its notes; a length dropout of 1 tells no window its length."""
    data = _data(tmp_path)
    pieces = split_pieces(data, read_manifest(data), "train", 100)
    model = ScoreTransformer(model_config(_cfg(), len(GENRES)))
    ev = list(pieces[0].events)
    after = model.held_after(torch.tensor([[END] + ev]), None)[0].numpy()  # (N + 1, 128) after each token
    assert np.array_equal(held_before(ev), after)  # row i: before events[i] = after seq[i]
    assert held_before(ev).any()  # notes do sound somewhere
    moved = EventWindows(pieces, GENRES, context=8, seed=3, length=300, transpose=2, length_dropout=1.0)
    checked = 0
    for i in range(300):  # every note a window ends without striking it was held before the window
        item = moved[i]
        assert int(item["total"]) == NO_LENGTH
        struck: set[int] = set()
        for t in item["tokens"].tolist():
            if NOTE_ON_BASE <= t < NOTE_ON_BASE + 128:
                struck.add(t - NOTE_ON_BASE)
            elif NOTE_OFF_BASE <= t < NOTE_OFF_BASE + 128 and t - NOTE_OFF_BASE not in struck:
                assert item["held"][t - NOTE_OFF_BASE], i
                checked += 1
    assert checked >= 20


def test_score_tier_trains_exports_evaluates_and_resumes_exactly(tmp_path):
    data = _data(tmp_path)
    cfg = _cfg()
    res = train_stage(data, tmp_path / "run", cfg, SCORE_KEY, progress=False)
    assert res["stage"] == SCORE_KEY and res["steps"] == 20 and np.isfinite(res["best_valid_bits"])
    assert is_trained(tmp_path / "run")
    rows = read_metrics(tmp_path / "run", SCORE_KEY)
    valid = [(r["step"], r["score/valid_bits"]) for r in rows if "score/valid_bits" in r]
    assert valid[0][0] == 0 and valid[-1][0] == 20  # validated from step 0
    assert valid[-1][1] < valid[0][1]  # it learned something in 20 steps
    seen = json.loads((stage_dir(tmp_path / "run", SCORE_KEY) / DATA_FILE).read_text())
    assert sum(v["pieces"] for v in seen["train"].values()) == 4
    assert len(load_pieces(stage_dir(tmp_path / "run", SCORE_KEY) / "train_events.npz")) == 4
    model, desc = load_score_tier(tmp_path / "run")
    assert desc["extra"]["genres"] == GENRES and desc["extra"]["step"] == res["best_step"]

    # stopped at 10 and resumed to 20: the same weights as straight through (same machine, tolerance 1e-6)
    train_stage(data, tmp_path / "r2", cfg, SCORE_KEY, max_steps=10, progress=False)
    train_stage(data, tmp_path / "r2", cfg, SCORE_KEY, resume=True, progress=False)
    ck = [sorted((tmp_path / r / "checkpoints" / "score").glob("step-20"))[0] for r in ("run", "r2")]
    a, b = (load_file(str(c / "model.safetensors")) for c in ck)
    assert a.keys() == b.keys()
    for k in a:
        assert float((a[k] - b[k]).abs().max()) <= 1e-6, k


def test_extra_scores_skip_bad_files_and_unknown_genres(tmp_path):
    root = tmp_path / "scores"
    for g in ("folk", "polka"):
        (root / g).mkdir(parents=True)
    write_midi(root / "folk" / "good.mid", notes=((60, 0.0, 0.5), (64, 0.5, 1.0)))
    (root / "folk" / "corrupt.mid").write_bytes(b"MThd\x00\x00garbage")
    empty = mido.MidiFile()
    empty.tracks.append(mido.MidiTrack([mido.MetaMessage("end_of_track", time=10)]))
    (root / "chorale").mkdir(parents=True)
    empty.save(str(root / "chorale" / "empty.mid"))
    write_midi(root / "polka" / "x.mid")
    pieces, skipped = extra_pieces(root, GENRES, 100)
    assert [(p.genre, p.source, p.kind) for p in pieces] == [("folk", "folk/good.mid", "extra")]
    reasons = {s["path"]: s["reason"] for s in skipped}
    assert set(reasons) == {"folk/corrupt.mid", "chorale/empty.mid", "polka"}
    assert "not in the dataset" in reasons["polka"] and "no notes" in reasons["chorale/empty.mid"]


def test_an_excerpt_teaches_no_end_and_no_length(tmp_path):
    """A cut score (``crop_midi`` marks it) is read without END and without the silence after its cut; its
    windows never have END as a target nor tell its length, and piece lengths leave it out.  A whole piece's
    windows still end on its END (``edge_share``) and tell its length."""
    root = tmp_path / "scores"
    for g in ("folk", "chorale"):
        (root / g).mkdir(parents=True)
    write_midi(root / "folk" / "whole.mid", notes=((60, 0.0, 0.5), (64, 0.5, 1.0), (67, 1.0, 2.0)))
    long = write_midi(tmp_path / "long.mid", notes=tuple((60 + i % 12, 0.25 * i, 0.25 * i + 0.5) for i in range(40)))
    crop_midi(mido.MidiFile(str(long)), 4.1).save(str(root / "chorale" / "cut.mid"))
    pieces, skipped = extra_pieces(root, GENRES, 100)
    by = {p.genre: p for p in pieces}
    assert not skipped and by["folk"].ended and not by["chorale"].ended
    cut = by["chorale"].events
    assert END not in cut and NOTE_OFF_BASE <= cut[-1] < NOTE_OFF_BASE + 128  # ends at the cut's note-offs
    assert events_seconds(cut) == pytest.approx(4.1, abs=0.011)
    assert lengths_of([(0, by["folk"].events), (1, cut)], None) == [pytest.approx(2.0, abs=0.011)]
    ds = EventWindows(pieces, GENRES, context=8, seed=3, length=300, edge_share=0.5)
    cut_id, seen = GENRES.index("chorale"), {True: 0, False: 0}
    for i in range(300):
        item = ds[i]
        whole = int(item["genre"]) != cut_id
        seen[whole] += 1
        targets = item["tokens"][1:].tolist()
        if whole:
            assert int(item["total"]) != NO_LENGTH
        else:
            assert int(item["total"]) == NO_LENGTH and END not in targets
    assert seen[True] >= 30 and seen[False] >= 30, seen
    as_whole, _ = extra_pieces(root, GENRES, 100, excerpts=False)  # score_tier.excerpts: false, the ablation
    assert all(p.ended for p in as_whole) and len(as_whole) == 2


def test_generation_writes_and_renders_the_tiers_score(tmp_path, capsys):
    cfg = _cfg(tiny_config(), max_steps=60, length_head=0.0)  # 60 steps: it writes notes; no head: a drawn length
    run = make_run(tmp_path, cfg=cfg)
    train_stage(_data(tmp_path), run, cfg, SCORE_KEY, progress=False)
    jobs = [generate(run, tmp_path / "out", genre="folk", seed=s, progress=False)[0] for s in range(4)]
    metas = [json.loads((j / "meta.json").read_text()) for j in jobs]
    with_notes = [(j, m) for j, m in zip(jobs, metas) if m["roll_source"] == "score_tier"]
    assert len(with_notes) >= 2, [m["roll_source"] for m in metas]  # seeded draws; most scores have notes
    job, meta = with_notes[0]
    assert meta["score_file"] == "score.mid"
    notes = [m for m in mido.MidiFile(str(job / "score.mid")).tracks[-1] if m.type == "note_on" and m.velocity]
    assert notes  # a score a sequencer opens, with notes
    train_seconds = {round(x, 2) for x in training_lengths(run, GENRES.index("folk"))}
    assert meta["score_length"]["from"] == "a training piece's length"  # the tier learned lengths: it is asked one
    assert meta["score_length"]["seconds"] in {round(min(x, 3.0), 2) for x in train_seconds}  # capped at max_seconds
    (told,) = generate(run, tmp_path / "told", genre="folk", seconds=1.5, seed=0, progress=False)
    assert json.loads((told / "meta.json").read_text())["score_length"] == {"seconds": 1.5, "from": "--seconds"}
    free = [generate(run, tmp_path / "out", seed=s, progress=False)[0] for s in range(4)]  # no genre
    assert "score_tier" in [json.loads((j / "meta.json").read_text())["roll_source"] for j in free]

    (only,) = generate(run, tmp_path / "scores", genre="chorale", seed=4, score_only=True, progress=False)
    assert (only / "score.mid").is_file() and (only / "score.png").is_file() and not (only / "audio.wav").exists()
    m = json.loads((only / "meta.json").read_text())
    assert m["score_only"] and m["score_seconds"] <= 3.0 + 1e-9  # the run's generate.max_seconds

    midi = write_midi(tmp_path / "p.mid", notes=((60, 0.0, 0.5), (67, 0.5, 1.0)))
    (cont,) = generate(run, tmp_path / "out", midi=midi, continue_score=1.0, seed=1, progress=False)
    meta = json.loads((cont / "meta.json").read_text())
    assert meta["roll_source"] == "midi+score_tier"
    roll = events_to_roll(meta_events(cont), 100)
    assert roll[0, 60, :40].all() and roll[0, 67, 60:90].all()  # the prompt's notes, then its continuation
    with pytest.raises(ParameterError, match="continue_score"):
        generate(run, tmp_path / "out", midi=midi, continue_score=10.0, progress=False)  # over max_seconds 3


def test_a_tier_with_a_length_head_chooses_the_length_of_a_piece_asked_none(tmp_path):
    cfg = _cfg(tiny_config(), max_steps=20, length_head=0.1)
    run = make_run(tmp_path, cfg=cfg)
    train_stage(_data(tmp_path), run, cfg, SCORE_KEY, progress=False)
    model, desc = load_score_tier(run)
    assert model.cfg.length_head and desc["extra"]["training"]["length_head"] == 0.1
    (job,) = generate(run, tmp_path / "out", genre="folk", seed=0, progress=False)
    asked = json.loads((job / "meta.json").read_text())["score_length"]
    assert asked["from"] == "the score tier's length head" and 0 < asked["seconds"] <= 3.0  # generate.max_seconds
    steps = model.choose_length(GENRES.index("folk"), 0, min_steps=round(cfg.generate.score_min_seconds * 100))
    assert asked["seconds"] == round(min(steps / 100, 3.0), 2)  # the tier's own choice, seeded
    (guided,) = generate(run, tmp_path / "guided", genre="folk", seed=0, score_guidance=2.0, progress=False)
    meta = json.loads((guided / "meta.json").read_text())
    assert meta["parameters"]["score_guidance"] == 2.0  # the run's default (1) overridden, recorded
    (plain,) = generate(run, tmp_path / "plain", genre="folk", seed=0, score_guidance=0.0, progress=False)
    assert meta_events(guided) != meta_events(plain)  # the same seed drew another score


def test_guidance_is_off_with_one_line_for_a_tier_that_never_learned_no_genre(capsys):
    from pipeline.generation.plan import tier_guidance

    assert tier_guidance({"extra": {"training": {"genre_dropout": 0.1}}}, 1.5) == 1.5
    assert tier_guidance({"extra": {"training": {"genre_dropout": 0.0}}}, None) == 0.0
    assert capsys.readouterr().err == ""  # nothing asked, nothing said
    assert tier_guidance({"extra": {"training": {"genre_dropout": 0.0}}}, 1.5) == 0.0
    assert "without genre dropout" in capsys.readouterr().err


def test_a_run_with_only_its_score_tier_writes_scores(tmp_path):
    """--score-only needs no stage: a run that trained only its score tier writes scores; the checks before a
    flow accept it, and still refuse a run with neither its stages nor a score tier."""
    from pipeline.run import check_run, check_score_run

    cfg = _cfg(tiny_config(), max_steps=20)
    # the presets' per-stage temperatures: one factor per stage of the config, none of them trained
    cfg = dataclasses.replace(cfg, generate=dataclasses.replace(cfg.generate, stage_temperature=(1.0, 0.6)))
    run = tmp_path / "run"
    train_stage(_data(tmp_path), run, cfg, SCORE_KEY, progress=False)
    assert not (run / "stages" / "0").exists()
    with pytest.raises(RunError, match="stage 0"):
        check_run(run)
    assert check_score_run(run).score_tier.length_head == cfg.score_tier.length_head
    (job,) = generate(run, tmp_path / "out", genre="folk", seed=1, score_only=True, progress=False)
    meta = json.loads((job / "meta.json").read_text())
    assert meta["score_only"] and (job / "score.mid").is_file() and not (job / "audio.wav").exists()
    with pytest.raises(RunError, match="stage 0"):
        generate(run, tmp_path / "out", genre="folk", progress=False)  # audio needs the stages
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(RunError, match="stage 0"):
        check_score_run(empty)


def meta_events(job):
    """The events of a job's score.mid."""
    from pipeline.corpus.score_events import midi_to_events

    return midi_to_events(job / "score.mid", 100)


def test_without_a_score_tier_the_chain_stands_in_with_one_line(tmp_path, capsys):
    run = make_run(tmp_path)
    (job,) = generate(run, tmp_path / "out", genre="folk", seconds=0.3, progress=False)
    err = capsys.readouterr().err
    assert "has no score tier" in err and "chord chain" in err
    assert json.loads((job / "meta.json").read_text())["roll_source"] is None  # the run has no chain either
    with pytest.raises(ParameterError, match="no score tier"):
        generate(run, tmp_path / "out", midi=write_midi(tmp_path / "p.mid"), continue_score=1.0, progress=False)


def test_demo_extra_scores_are_never_demo_tracks():
    from pipeline.corpus.demo_data import extra_candidates, load_candidates

    listed = {w.corpus_path for w in load_candidates()}
    extra = extra_candidates()
    assert len(extra) > 100
    assert not listed & {w.corpus_path for w in extra}  # no valid or test piece can be among them
    assert {w.genre for w in extra} == {w.genre for w in load_candidates()}


def test_a_score_that_does_not_open_with_music_is_drawn_again(tmp_path, capsys):
    """Every training score sounds its first note within plan.OPENING_SECONDS; a draw of the tier that does not
    (no note at all, or a first note later) is drawn again with another seed, at most plan.SCORE_DRAWS times,
    and the job says how many draws it took (meta.json ``score_draws``)."""
    from safetensors.torch import save_file

    from pipeline.corpus.score_events import first_onset_seconds
    from pipeline.generation.plan import OPENING_SECONDS, SCORE_DRAWS, draw_seed

    cfg = _cfg(tiny_config(), max_steps=20)
    run = tmp_path / "run"
    train_stage(_data(tmp_path), run, cfg, SCORE_KEY, progress=False)
    weights = stage_dir(run, SCORE_KEY) / "model.safetensors"
    state = load_file(weights)
    state["ln_f.weight"].zero_()  # every next event equally likely: a real sampler whose draws often open with
    state["ln_f.bias"].zero_()  # a second or more of rests (about one in five here)
    save_file(state, weights)
    draws, opens = [], []
    for seed in range(16):
        (job,) = generate(run, tmp_path / "out", genre="folk", seed=seed, seconds=3.0, score_only=True,
                          progress=False)
        meta = json.loads((job / "meta.json").read_text())
        draws.append(meta["score_draws"])
        onset = first_onset_seconds(meta_events(job)) if (job / "score.mid").is_file() else None
        opens.append(onset is not None and onset <= OPENING_SECONDS)
    err = capsys.readouterr().err
    assert all(1 <= d <= SCORE_DRAWS for d in draws), draws
    assert all(o or d == SCORE_DRAWS for o, d in zip(opens, draws)), (opens, draws)  # kept: opens, or the last
    assert any(d > 1 for d in draws) and "drawn again with another seed" in err, draws  # the path was taken
    assert sum(opens) > sum(d == 1 for d in draws), (opens, draws)  # redraws found openings first draws lacked
    assert len({draw_seed(s, k) for s in range(16) for k in range(SCORE_DRAWS)}) == 16 * SCORE_DRAWS
    assert {draw_seed(s, 0) for s in range(16)} == set(range(16))  # a first draw is the job's own seed


def test_a_draw_whose_music_stops_long_before_the_piece_ends_is_unlike_training():
    """plan.unlike_training: a score told 8 s whose last note ends at 2.5 s leaves 5.5 s of silence, unlike every
    training score (their music ends within 1.5 s of their END): drawn again, as a late first note or no note is;
    music to 7 s of 8 is kept; without a told length the score's own END is the piece's end."""
    from pipeline.corpus.score_events import note_off, note_on, time_shift
    from pipeline.generation.plan import ENDING_SECONDS, unlike_training

    def score(rest_before: int, notes: int, rest_after: int) -> list[int]:
        ev = [time_shift(100)] * rest_before  # 1 s shifts
        for i in range(notes):  # notes of 0.5 s
            ev += [note_on(60 + i % 5), time_shift(50), note_off(60 + i % 5)]
        return ev + [time_shift(100)] * rest_after + [END]

    assert unlike_training(score(0, 14, 0), 8.0) is None  # 7 s of music in an 8 s piece
    assert "ending 5.50 s" in unlike_training(score(0, 5, 0), 8.0)  # 2.5 s of music told 8 s
    assert unlike_training(score(0, 5, 0), None) is None  # not told: it ends with its END
    assert "ending 3.00 s" in unlike_training(score(0, 5, 3), None)  # its END 3 s after the music
    assert unlike_training(score(0, 13, 0), 6.5 + ENDING_SECONDS) is None  # at the limit: kept
    assert "first note at 2.00 s" in unlike_training(score(2, 10, 0), 8.0)
    assert unlike_training([time_shift(100)] * 8 + [END], 8.0) == "no note"
