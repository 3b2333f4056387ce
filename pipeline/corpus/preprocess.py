"""Raw audio (+ optional MIDI, genre) -> dataset folder (DESIGN 1, 7).  No Prefect here.

Steps per file (``preprocess_file``): hash -> decode, mono, resample to the finest rate, trim,
crop, normalise (``pipeline.corpus.audio.prepare_audio``) -> aligned mu-law tiers -> piano roll.
Inputs come from ``pipeline.corpus.inputs.discover``; then ``pipeline.corpus.manifest.write_dataset`` assigns
the splits and writes ``manifest.json`` and ``report.json``.

Policies (also written into ``report.json`` under ``"policies"``):

- Short files: a track shorter than ``data.min_seconds`` after trimming is skipped.  The rule
  uses the data settings only, so a dataset does not depend on the stages' crop sizes; the
  ``tiny`` preset's ``min_seconds`` (2 s) equals its training crop (4000 samples at 2 kHz), and
  the dataset loader skips tracks shorter than a stage's context + crop, with a clear error
  when every track is.
- MIDI: a MIDI file that cannot be read, or has no notes, skips the whole track with the
  reason (a wrong or empty score is worse for training than no track).
- Estimated scores: a track without a MIDI file gets a roll estimated from its (trimmed) audio
  by ``pipeline.corpus.transcribe`` (``preprocess.estimate_scores``, ``roll_source: "estimated"``).
  When the estimate fails or finds no note, the track keeps its tiers with ``"roll": null`` and
  the reason goes to ``report.json`` (``no_roll``); estimation never stops a batch.
- Tracks with a MIDI score keep their timeline: the leading silence is not trimmed, so roll
  frame f stays aligned with audio time ``f / roll_fps`` (the trim would shift the audio
  against the score).  Tracks without MIDI are trimmed at both ends.
- Track ids are made here: ``<genre slug>-<name slug>-<8 hex>``; the hash covers the genre,
  the source path and the content, so two copies of one file in two genres get two ids.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.roll import ROLL_SHAPE
from pipeline.config import DataConfig, config_to_dict
from pipeline.corpus.audio import AudioError, make_tiers, prepare_audio
from pipeline.corpus.inputs import skip_entry
from pipeline.corpus.manifest import MANIFEST_VERSION
from pipeline.corpus.midi import MidiError, piano_roll, read_score
from pipeline.corpus.transcribe import estimate_roll
from pipeline.errors import PreprocessError, StrataError
from pipeline.io import atomic_save_npy

# ----------------------------------------------------------------------------- hashing and ids


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def settings_hash(data_cfg: DataConfig) -> str:
    """sha256 of the preprocessing settings (the data config) plus the manifest version."""
    text = json.dumps({"data": config_to_dict(data_cfg), "version": MANIFEST_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def slug(text: str, max_len: int = 40) -> str:
    """A safe file-name piece: ASCII letters, digits, '.', '_' and '-' only (never empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip("-._").lower()
    return s[:max_len].strip("-._") or "x"


def track_id(audio_path: str | Path, genre: str, content_hash: str) -> str:
    """Program-made id ``<genre>-<name>-<8 hex>``, safe as a file name.

    It depends on the genre, the file's name and its content, never on where the corpus lies,
    so the same corpus in another folder gets the same ids (and so the same split).
    """
    p = Path(audio_path)
    key = f"{genre}\0{p.name}\0{content_hash}"
    return f"{slug(genre, 24)}-{slug(p.stem)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def track_files(track: str, data_cfg: DataConfig, has_roll: bool) -> dict[str, Any]:
    """Relative output paths of a track: {"tiers": {rate: path}, "roll": path | None}."""
    tiers = {str(r): f"tiers/{r}/{track}.npy" for r in data_cfg.rates}
    return {"tiers": tiers, "roll": f"rolls/{track}.npy" if has_roll else None}


def outputs_exist(out_dir: str | Path, record: dict) -> bool:
    """True when every file a track record names exists under ``out_dir``."""
    out = Path(out_dir)
    paths = list(record.get("tiers", {}).values()) + ([record["roll"]] if record.get("roll") else [])
    return bool(paths) and all((out / p).is_file() for p in paths)


# ----------------------------------------------------------------------------- one file


def preprocess_file(
    audio_path: str | Path, genre: str, midi_path: str | Path | None, out_dir: str | Path, data_cfg: DataConfig,
    estimate: str | None = None,
) -> dict[str, Any]:
    """Turn one raw file into tier files (+ roll); return its track record.

    ``estimate``: the transcription method (``pipeline.corpus.transcribe.METHODS``) that gives a track
    without MIDI its roll; None: no estimation (``PreprocessConfig.estimator``).
    The record has the manifest keys except ``split`` and ``genre_id``, plus ``"info"``
    (source rate, channels, cropping) for the report and ``"no_roll"`` (why an estimate gave no roll).
    Bad input raises ``AudioError`` or
    ``PreprocessError`` (both ``StrataError``); transient I/O failures raise ``OSError``.
    """
    audio_path, out = Path(audio_path), Path(out_dir)
    rates = sorted(data_cfg.rates)
    before = _identity(audio_path)
    content = _hash_input(audio_path)
    notes, cut_score = _read_notes(Path(midi_path)) if midi_path is not None else (None, False)
    audio, info = _prepare(audio_path, data_cfg, keep_start=notes is not None)  # (n_K,) at r_K
    if _identity(audio_path) != before:  # the tiers would not be the content the hash (and the cache) names
        raise PreprocessError(audio_path, "the file changed while it was being read; rerun when it is complete")
    tiers = make_tiers(_crop_for_roll(audio, rates[-1], data_cfg.roll_fps), rates, data_cfg.mu_bits)
    n0 = len(tiers[rates[0]])
    _check_alignment(audio_path, tiers, rates, data_cfg.min_seconds)
    track = track_id(audio_path, genre, content)
    n_frames = n0 * data_cfg.roll_fps // rates[0]
    source, no_roll = ("midi", None) if notes is not None else (None, None)
    if notes is not None:
        roll = _roll(notes, data_cfg.roll_fps, n_frames)
    elif estimate is not None:
        fine = audio[: n0 * rates[-1] // rates[0]]  # (n_K,) the tiers' span
        roll, no_roll = estimated_roll(fine, rates[-1], data_cfg.roll_fps, n_frames, estimate)
        source = None if roll is None else "estimated"
    else:
        roll = None
    files = track_files(track, data_cfg, has_roll=roll is not None)
    _write_outputs(out, files, tiers, roll)
    return {
        "id": track,
        "genre": genre,
        "seconds": n0 / rates[0],
        "source": str(audio_path.absolute()),
        "hash": content,
        "midi": None if midi_path is None else str(Path(midi_path).absolute()),
        "tiers": files["tiers"],
        "samples": {str(r): int(len(tiers[r])) for r in rates},
        "roll": files["roll"],
        "roll_source": source,
        # the start of a longer piece (its MIDI says so, or the audio was cropped): its end is not the piece's
        "excerpt": bool(info.get("cropped")) or cut_score,
        "no_roll": no_roll,
        "info": info,
    }


def _identity(path: Path) -> tuple | None:
    """(inode, size, mtime) of a file, None when it cannot be stat'ed (reported by ``_hash_input``)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _hash_input(path: Path) -> str:
    """Content hash; missing, non-file and unreadable inputs become ``AudioError``."""
    if not path.exists():
        raise AudioError(path, "file not found" + (" (dangling link)" if path.is_symlink() else ""))
    if not path.is_file():
        raise AudioError(path, "not a file")
    try:
        return file_hash(path)
    except PermissionError:
        raise AudioError(path, "permission denied") from None


def _prepare(path: Path, d: DataConfig, keep_start: bool) -> tuple[np.ndarray, dict]:
    """Decoded mono float32 at the finest rate; ``keep_start`` disables the trim (MIDI timeline)."""
    top_db = math.inf if keep_start else d.trim_db  # threshold 0: every frame counts as sound
    audio, info = prepare_audio(path, max(d.rates), d.peak, top_db, d.min_seconds, d.max_seconds)
    return audio, dict(info, trimmed=not keep_start)


def _crop_for_roll(audio: np.ndarray, rate_fine: int, roll_fps: int) -> np.ndarray:
    """Crop the tail to whole roll frames, so n_0 * roll_fps / r_0 is an integer."""
    step = rate_fine // roll_fps  # a multiple of r_K / r_0 too (every rate is a multiple of roll_fps)
    return audio[: len(audio) - len(audio) % step]


def _check_alignment(path: Path, tiers: dict[int, np.ndarray], rates: Sequence[int], min_seconds: float) -> None:
    n0 = len(tiers[rates[0]])
    if n0 / rates[0] < min_seconds:
        raise PreprocessError(path, f"too short: {n0 / rates[0]:.2f} s < {min_seconds:.1f} s")
    for r in rates:
        if len(tiers[r]) * rates[0] != n0 * r:
            raise AssertionError(f"tier {r} has {len(tiers[r])} samples, expected {n0 * r // rates[0]}")


def _read_notes(midi_path: Path) -> tuple[list, bool]:
    """(notes, marked as an excerpt) of a MIDI file; unreadable or note-less files raise ``PreprocessError``."""
    if not midi_path.is_file():
        raise PreprocessError(midi_path, "MIDI file not found")
    try:
        notes, excerpt = read_score(midi_path)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        if reason == "no notes":
            raise PreprocessError(midi_path, "MIDI has no notes, track skipped") from None
        raise PreprocessError(midi_path, f"bad MIDI, track skipped ({reason})") from None
    except PermissionError:
        raise PreprocessError(midi_path, "MIDI permission denied, track skipped") from None
    if not any(not n.is_drum for n in notes):
        raise PreprocessError(midi_path, "MIDI has no pitched notes (drums only), track skipped")
    return notes, excerpt


def estimated_roll(audio: np.ndarray, rate: int, fps: int, n_frames: int,
                   method: str) -> tuple[np.ndarray | None, str | None]:
    """(roll (2, 128, n_frames), None) estimated from ``audio``, or (None, reason) when the
    estimate fails or finds no note: never raises for a bad estimate (a batch goes on)."""
    try:
        roll = estimate_roll(audio, rate, fps, method, n_frames=n_frames)  # (2, 128, F) uint8
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any estimator failure leaves the track without a roll
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return None, f"score estimation ({method}) failed: {reason}"
    if not roll[0].any():
        return None, f"score estimation ({method}) found no note"
    return roll, None


def _roll(notes: list, fps: int, n_frames: int) -> np.ndarray:
    roll = piano_roll(notes, fps=fps, n_frames=n_frames)  # (2, 128, F) uint8
    assert roll.shape == (*ROLL_SHAPE, n_frames), roll.shape
    return roll


def _write_outputs(out: Path, files: dict, tiers: dict[int, np.ndarray], roll: np.ndarray | None) -> None:
    """Write every file atomically; on failure remove this track's files written so far."""
    written: list[Path] = []
    try:
        for r, rel in files["tiers"].items():
            atomic_save_npy(out / rel, tiers[int(r)])  # (n_k,) uint8
            written.append(out / rel)
        if roll is not None:
            atomic_save_npy(out / files["roll"], roll)  # (2, 128, F) uint8
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- the loop


def skip_record(audio_path: str | Path, genre: str | None, error: BaseException) -> dict:
    """A report entry for a file that failed with ``error``."""
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, StrataError):
        reason = f"I/O error: {error.strerror or error}"
    elif getattr(error, "path", None) not in (None, str(audio_path)):  # e.g. the MIDI file
        reason = f"{Path(error.path).name}: {reason}"
    return skip_entry(audio_path, genre, reason)


def process_all(
    inputs: Sequence[tuple[Path, str, Path | None]], out_dir: str | Path, data_cfg: DataConfig,
    estimate: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """Sequential, Prefect-free loop over ``inputs``: (track records, skip records)."""
    tracks, skipped = [], []
    for audio, genre, midi in inputs:
        try:
            tracks.append(preprocess_file(audio, genre, midi, out_dir, data_cfg, estimate))
        except (StrataError, OSError) as e:
            skipped.append(skip_record(audio, genre, e))
    return tracks, skipped
