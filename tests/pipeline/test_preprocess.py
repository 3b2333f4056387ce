"""pipeline.corpus.preprocess, .inputs (discovery), .manifest (splits): bad inputs, tiers and roll alignment."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from pipeline.config import load_config
from pipeline.corpus import preprocess as pp
from pipeline.corpus.audio import mulaw_decode, mulaw_encode, resample
from pipeline.corpus.inputs import discover
from pipeline.corpus.manifest import MANIFEST_TRACK_KEYS, assign_splits, write_dataset
from pipeline.io import load_npy

CFG = load_config(None)
D = CFG.data  # rates 2000/8000/16000, roll_fps 100, min_seconds 2.0
ODD_GENRE = "Chœur 'odd' \"quoted\" genre"


# ----------------------------------------------------------------------------- generators


def tone(seconds: float, sr: int, freq: float = 330.0, amp: float = 0.4, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def write_wav(path: Path, x: np.ndarray, sr: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def write_midi(path: Path, notes: list[tuple[int, float, float, int]]) -> Path:
    """notes: (pitch, start s, end s, velocity) at 120 bpm, 480 ticks per beat (1 s = 960 ticks)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    events = [(s, "note_on", p, v) for p, s, e, v in notes] + [(e, "note_off", p, 0) for p, s, e, v in notes]
    now = 0
    for t, kind, p, v in sorted(events, key=lambda e: (e[0], e[1] == "note_on")):
        tick = int(round(t * 960))
        track.append(mido.Message(kind, note=p, velocity=v, time=tick - now))
        now = tick
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


def make_bad_corpus(raw: Path) -> dict[str, str]:
    """A raw folder with good files and every kind of bad one; name -> expected reason part."""
    good, bad = raw / "good", raw / "bad"
    write_wav(good / "plain.wav", tone(3.0, 16000))
    write_wav(good / "scored.wav", tone(3.0, 16000, 440))
    write_midi(good / "scored.mid", [(60, 0.5, 1.0, 100), (64, 1.0, 2.5, 80)])
    write_wav(good / "stereo.wav", tone(3.0, 44100, channels=2), 44100)
    write_wav(good / "quad.flac", tone(3.0, 22050, channels=4), 22050)
    write_wav(good / "low.wav", tone(3.0, 8000), 8000)
    write_wav(good / "high.wav", tone(3.0, 96000), 96000)
    write_wav(raw / ODD_GENRE / "ünïcode name's.wav", tone(2.5, 16000, 550))
    expect = {}
    (bad / "empty.wav").parent.mkdir(parents=True, exist_ok=True)
    (bad / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = "empty"
    (bad / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    expect["random.wav"] = "cannot decode"
    full = write_wav(bad / "whole.tmpwav.wav", tone(3.0, 16000)).read_bytes()
    (bad / "whole.tmpwav.wav").unlink()
    (bad / "truncated.wav").write_bytes(full[:30])  # cut inside the header
    expect["truncated.wav"] = "cannot decode"
    nan = tone(3.0, 16000)
    nan[100], nan[200] = np.nan, np.inf
    write_wav(bad / "nan.wav", nan, subtype="FLOAT")
    expect["nan.wav"] = "NaN"
    write_wav(bad / "one.wav", np.array([0.5], np.float32))
    expect["one.wav"] = "too short"
    write_wav(bad / "short.wav", tone(1.0, 16000))
    expect["short.wav"] = "too short"
    write_wav(bad / "silent.wav", np.zeros(48000, np.float32))
    expect["silent.wav"] = "silent"
    write_wav(bad / "badmidi.wav", tone(3.0, 16000))
    (bad / "badmidi.mid").write_bytes(b"MThd garbage \x00\x01\x02 not a midi file")
    expect["badmidi.wav"] = "bad MIDI"
    write_wav(bad / "nonotes.wav", tone(3.0, 16000))
    write_midi(bad / "nonotes.mid", [])
    expect["nonotes.wav"] = "no notes"
    (bad / "notes.xyz").write_text("not audio")
    expect["notes.xyz"] = "unknown extension .xyz"
    # Running as root, chmod 000 is still readable: unreadable inputs are made as a folder
    # named like an audio file and a dangling symbolic link instead (both fail to open).
    (bad / "folder.wav").mkdir()
    expect["folder.wav"] = "not a file"
    os.symlink(bad / "missing-target.wav", bad / "dangling.wav")
    expect["dangling.wav"] = "file not found"
    (raw / ".hidden.wav").write_bytes(b"ignored")
    (good / ".DS_Store").write_bytes(b"ignored")
    return expect


def run_pipeline(raw: Path, out: Path) -> dict:
    inputs, skipped = discover(raw)
    tracks, bad = pp.process_all(inputs, out, D)
    return write_dataset(out, tracks, skipped + bad, D)


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("bad")
    raw, out = root / "raw", root / "out"
    expect = make_bad_corpus(raw)
    return raw, out, expect, run_pipeline(raw, out)


def test_bad_inputs_are_skipped_with_reasons(bad_run):
    raw, out, expect, written = bad_run
    report = json.loads((out / "report.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == set(expect), reasons
    for name, part in expect.items():
        assert part.lower() in reasons[name].lower(), (name, reasons[name])
    assert report["counts"]["skipped"] == len(expect)
    assert report["counts"]["tracks"] == 7
    assert "midi" in report["policies"]


def test_good_inputs_processed_mono_any_rate(bad_run):
    raw, out, expect, written = bad_run
    manifest = json.loads((out / "manifest.json").read_text())
    names = {Path(t["source"]).name for t in manifest["tracks"]}
    assert names == {"plain.wav", "scored.wav", "stereo.wav", "quad.flac", "low.wav", "high.wav",
                     "ünïcode name's.wav"}
    assert manifest["genres"] == sorted(["good", ODD_GENRE])
    for t in manifest["tracks"]:
        for r in D.rates:
            a = load_npy(out / t["tiers"][str(r)])
            assert a.dtype == np.uint8 and a.ndim == 1 and len(a) == t["samples"][str(r)]  # mono


def test_nothing_partial_or_unsafe_in_output(bad_run):
    raw, out, expect, written = bad_run
    manifest = json.loads((out / "manifest.json").read_text())
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not [f for f in files if ".tmp" in f]
    wanted = {"manifest.json", "report.json"}
    for t in manifest["tracks"]:
        wanted |= set(t["tiers"].values()) | ({t["roll"]} if t["roll"] else set())
        assert all(c.isascii() and (c.isalnum() or c in "-._") for c in t["id"]), t["id"]
    assert files == wanted  # no tier or roll file of a skipped track


def test_short_rule_uses_min_seconds(tmp_path):
    write_wav(tmp_path / "raw/g/a.wav", tone(D.min_seconds - 0.1, 16000))
    with pytest.raises(pp.StrataError, match="too short"):
        pp.preprocess_file(tmp_path / "raw/g/a.wav", "g", None, tmp_path / "out", D)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.npy"))


# ----------------------------------------------------------------------------- discovery


def test_discover_folders_and_midi(tmp_path):
    write_wav(tmp_path / "jazz/a.wav", tone(2.5, 16000))
    write_midi(tmp_path / "jazz/a.mid", [(60, 0.0, 1.0, 90)])
    write_wav(tmp_path / "jazz/b.ogg", tone(2.5, 16000))
    (tmp_path / "jazz/only.mid").write_bytes(b"x")  # a MIDI without audio is ignored
    (tmp_path / "jazz/readme.txt").write_text("x")
    (tmp_path / "loose.wav").write_bytes(b"x")
    inputs, skipped = discover(tmp_path)
    assert inputs == [(tmp_path / "jazz/a.wav", "jazz", tmp_path / "jazz/a.mid"),
                      (tmp_path / "jazz/b.ogg", "jazz", None)]
    assert {Path(s["path"]).name: s["reason"] for s in skipped} == {
        "readme.txt": "unknown extension .txt",
        "loose.wav": "not inside a genre folder (layout RAW/<genre>/<file>)",
    }


def test_discover_metadata_csv(tmp_path):
    write_wav(tmp_path / "files/x.wav", tone(2.5, 16000))
    write_midi(tmp_path / "files/x.mid", [(60, 0.0, 1.0, 90)])
    write_wav(tmp_path / "files/y.flac", tone(2.5, 16000))
    (tmp_path / "metadata.csv").write_text(
        "path,genre,midi\nfiles/x.wav,Folk Song,files/x.mid\nfiles/y.flac,blues,\nfiles/z.doc,blues,\n"
    )
    inputs, skipped = discover(tmp_path)
    assert inputs == [(tmp_path / "files/x.wav", "Folk Song", tmp_path / "files/x.mid"),
                      (tmp_path / "files/y.flac", "blues", None)]
    assert [s["reason"] for s in skipped] == ["unknown extension .doc"]


def test_metadata_csv_marks_excerpts_and_refuses_unknown_values(tmp_path):
    from pipeline.corpus.inputs import discover_inputs

    for name in ("a", "b", "c", "d"):
        write_wav(tmp_path / f"{name}.wav", tone(2.5, 16000))
    (tmp_path / "metadata.csv").write_text("path,genre,excerpt\na.wav,g,yes\nb.wav,g,\nc.wav,g,FALSE\nd.wav,g,maybe\n")
    skipped, excerpts = [], set()
    inputs = discover_inputs(tmp_path, skipped, excerpts)
    assert [a.name for a, _, _ in inputs] == ["a.wav", "b.wav", "c.wav"]
    assert excerpts == {tmp_path / "a.wav"}
    assert [(Path(s["path"]).name, s["reason"]) for s in skipped] == [
        ("d.wav", "line 5: excerpt must be true or false, not 'maybe'")]


def test_hashes_and_ids(tmp_path):
    p = tmp_path / "a b.wav"
    p.write_bytes(b"hello")
    assert pp.file_hash(p) == hashlib.sha256(b"hello").hexdigest()
    assert pp.settings_hash(D) == pp.settings_hash(load_config(None).data)
    assert pp.settings_hash(D) != pp.settings_hash(load_config("base").data.__class__(trim_db=30.0))
    tid = pp.track_id(p, "../../etc 'x'", "abc")
    assert "/" not in tid and ".." not in tid and tid.startswith("etc-x-a-b-")
    assert pp.track_id(p, "g1", "abc") != pp.track_id(p, "g2", "abc")


# ----------------------------------------------------------------------------- alignment


def test_tier_alignment(tmp_path):
    x = tone(3.0, 16000) * np.linspace(0.2, 1.0, 48000, dtype=np.float32)
    write_wav(tmp_path / "g/a.wav", x)
    rec = pp.preprocess_file(tmp_path / "g/a.wav", "g", None, tmp_path / "out", D)
    tiers = {r: load_npy(tmp_path / "out" / rec["tiers"][str(r)]) for r in D.rates}
    r0, rk = D.rates[0], D.rates[-1]
    n0 = len(tiers[r0])
    assert n0 % (r0 // D.roll_fps) == 0
    for r in D.rates:
        assert len(tiers[r]) == n0 * r // r0 == rec["samples"][str(r)]
        # every tier is the fine tier's codes decoded, resampled and re-encoded (DESIGN 2)
        expected = mulaw_encode(resample(mulaw_decode(tiers[rk]), rk, r))
        np.testing.assert_array_equal(tiers[r], expected)
    assert rec["seconds"] == n0 / r0


def test_roll_alignment_keeps_midi_timeline(tmp_path):
    # silence for 0.5 s, then sound; the score's first note starts at 0.5 s too
    x = np.concatenate([np.zeros(8000, np.float32), tone(2.5, 16000)])
    write_wav(tmp_path / "g/a.wav", x)
    write_midi(tmp_path / "g/a.mid", [(60, 0.5, 1.0, 100), (67, 1.25, 2.0, 70)])
    rec = pp.preprocess_file(tmp_path / "g/a.wav", "g", tmp_path / "g/a.mid", tmp_path / "out", D)
    roll = load_npy(tmp_path / "out" / rec["roll"])
    n0 = rec["samples"][str(D.rates[0])]
    assert roll.dtype == np.uint8 and roll.shape == (2, 128, n0 * D.roll_fps // D.rates[0])
    assert np.flatnonzero(roll[0, 60]).tolist() == list(range(50, 100))
    assert np.flatnonzero(roll[1, 60]).tolist() == [50] and roll[1, 60, 50] == 100
    assert np.flatnonzero(roll[0, 67]).tolist() == list(range(125, 200))
    fine = mulaw_decode(load_npy(tmp_path / "out" / rec["tiers"]["16000"]))
    first = np.flatnonzero(np.abs(fine) > 0.01)[0]
    assert abs(first - 8000) < 16  # the lead silence was kept: audio and roll share one timeline
    # without MIDI, the same audio is trimmed at the start
    rec2 = pp.preprocess_file(tmp_path / "g/a.wav", "h", None, tmp_path / "out", D)
    assert rec2["roll"] is None and rec2["seconds"] < rec["seconds"] - 0.3


def test_excerpts_are_marked_in_the_manifest(tmp_path):
    """A track whose MIDI was cut (``crop_midi`` marks it) or whose audio was cropped at ``max_seconds`` is an
    excerpt; a whole piece is not; the score tier reads its roll without an END."""
    from pipeline.corpus.midi import crop_midi
    from pipeline.training.score_tier import split_pieces

    write_wav(tmp_path / "g/whole.wav", tone(3.0, 16000))
    write_midi(tmp_path / "g/whole.mid", [(60, 0.0, 1.0, 100), (67, 1.0, 2.5, 70)])
    write_wav(tmp_path / "g/cut.wav", tone(3.0, 16000))
    write_midi(tmp_path / "g/long.mid", [(60, 0.0, 1.0, 100), (67, 1.0, 2.5, 70), (64, 2.5, 8.0, 90)])
    crop_midi(mido.MidiFile(str(tmp_path / "g/long.mid")), 3.0).save(str(tmp_path / "g/cut.mid"))
    write_wav(tmp_path / "g/long.wav", tone(5.0, 16000))
    short = dataclasses.replace(D, max_seconds=4.0)
    recs = {n: pp.preprocess_file(tmp_path / f"g/{n}.wav", "g", tmp_path / f"g/{m}.mid", tmp_path / "out", d)
            for n, m, d in (("whole", "whole", D), ("cut", "cut", D), ("long", "whole", short))}
    assert {n: r["excerpt"] for n, r in recs.items()} == {"whole": False, "cut": True, "long": True}
    written = write_dataset(tmp_path / "out", list(recs.values()), [], D)
    assert written["report"]["counts"]["excerpts"] == 2  # said in report.json
    for t in written["manifest"]["tracks"]:
        t["split"] = "train"
    pieces = {p.source: p for p in split_pieces(tmp_path / "out", written["manifest"], "train", D.roll_fps)}
    ended = {n: pieces[r["id"]].ended for n, r in recs.items()}
    assert ended == {"whole": True, "cut": False, "long": False}


# ----------------------------------------------------------------------------- splits


def fake_tracks(counts: dict[str, int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"{g}-{i}", "genre": g, "hash": "%064x" % rng.getrandbits(256), "seconds": 10.0}
            for g, n in counts.items() for i in range(n)]


def test_split_deterministic_and_order_free():
    tracks = fake_tracks({"a": 20, "b": 7, "c": 2})
    s1 = assign_splits(tracks, (0.8, 0.1, 0.1), seed=0)
    shuffled = tracks[:]
    random.Random(5).shuffle(shuffled)
    assert assign_splits(shuffled, (0.8, 0.1, 0.1), seed=0) == s1
    assert assign_splits(tracks, (0.8, 0.1, 0.1), seed=1) != s1
    assert set(s1) == {t["id"] for t in tracks}


@pytest.mark.parametrize("counts", [{"a": 3}, {"a": 1, "b": 1, "c": 1}, {"a": 3, "b": 4, "c": 1, "d": 2},
                                    {"a": 50, "b": 3}, {"a": 2, "b": 2}])
def test_split_properties(counts):
    tracks = fake_tracks(counts)
    splits = assign_splits(tracks, (0.8, 0.1, 0.1), seed=3)
    assert set(splits.values()) == {"train", "valid", "test"}  # >= 3 tracks: every split non-empty
    for g, n in counts.items():
        got = {splits[t["id"]] for t in tracks if t["genre"] == g}
        if n >= 3:
            assert got == {"train", "valid", "test"}, (g, got)


def test_split_fractions_roughly_kept():
    splits = assign_splits(fake_tracks({"a": 100}), (0.8, 0.1, 0.1), seed=0)
    assert [list(splits.values()).count(s) for s in ("train", "valid", "test")] == [80, 10, 10]
    assert assign_splits(fake_tracks({"a": 2}), (0.8, 0.1, 0.1)) == {"a-0": "train", "a-1": "train"}
    assert assign_splits([], (0.8, 0.1, 0.1)) == {}


# ----------------------------------------------------------------------------- manifest


def test_manifest_contents(bad_run):
    raw, out, expect, written = bad_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == written["manifest"]
    assert manifest["version"] == 1 and manifest["rates"] == list(D.rates)
    assert manifest["classes"] == 256 and manifest["roll_fps"] == D.roll_fps
    assert manifest["genres"] == sorted(manifest["genres"])
    assert manifest["config"]["min_seconds"] == D.min_seconds
    for t in manifest["tracks"]:
        assert list(t) == list(MANIFEST_TRACK_KEYS)
        assert manifest["genres"][t["genre_id"]] == t["genre"]
        assert t["split"] in ("train", "valid", "test")
        assert Path(t["source"]).is_absolute() and t["hash"] == pp.file_hash(t["source"])
        assert t["tiers"] == {str(r): f"tiers/{r}/{t['id']}.npy" for r in D.rates}
        assert (t["roll"] is None) == (t["midi"] is None)
        assert t["seconds"] == t["samples"]["2000"] / 2000
    scored = [t for t in manifest["tracks"] if t["roll"]]
    assert len(scored) == 1 and scored[0]["roll"] == f"rolls/{scored[0]['id']}.npy"
    report = json.loads((out / "report.json").read_text())
    total = sum(t["seconds"] for t in manifest["tracks"]) / 3600
    assert report["hours"]["total"] == pytest.approx(total)
    assert sum(report["hours"]["per_split"].values()) == pytest.approx(total)
    assert set(report["hours"]["per_genre"]) == set(manifest["genres"])


def test_write_dataset_keeps_existing_files(tmp_path):
    write_wav(tmp_path / "raw/g/a.wav", tone(2.5, 16000))
    rec = pp.preprocess_file(tmp_path / "raw/g/a.wav", "g", None, tmp_path / "out", D)
    (tmp_path / "out/tiers/2000/old-track.npy").write_bytes(b"kept")
    write_dataset(tmp_path / "out", [rec], [], D)
    write_dataset(tmp_path / "out", [], [{"path": "x", "genre": None, "reason": "r"}], D)
    assert (tmp_path / "out/tiers/2000/old-track.npy").read_bytes() == b"kept"
    assert (tmp_path / "out" / rec["tiers"]["2000"]).is_file()


def test_ids_and_split_do_not_depend_on_the_corpus_location(tmp_path):
    """The same files under two different folders give the same track ids and the same split."""
    from pipeline.config import DataConfig

    sr = 16000
    t = np.arange(3 * sr) / sr
    records = []
    for where in ("first", "second/deeper"):
        raw = tmp_path / where / "raw"
        for i in range(4):
            (raw / "drone").mkdir(parents=True, exist_ok=True)
            tone = (0.4 * np.sin(2 * np.pi * (100 + 30 * i) * t)).astype(np.float32)
            sf.write(raw / "drone" / f"take{i}.wav", tone, sr)
        inputs, skipped = discover(raw)
        tracks, bad = pp.process_all(inputs, tmp_path / where / "out", DataConfig())
        assert not skipped and not bad
        records.append(tracks)
    ids = [sorted(r["id"] for r in tracks) for tracks in records]
    assert ids[0] == ids[1]
    assert assign_splits(records[0]) == assign_splits(records[1])
