"""The notes of an audio signal: the one owner of "notes of this audio" (DESIGN 1).

Two estimators (``METHODS``):

- ``"basic-pitch"`` (the default): Spotify's basic-pitch (Bittner et al., ICASSP 2022), a small
  polyphonic, instrument-agnostic transcription network.  Its ONNX model ships in the
  ``basic-pitch`` wheel and runs through ``onnxruntime``; TensorFlow is never imported (the wheel
  is installed with ``--no-deps``, see the Makefile).  The model is loaded once per process.
- ``"cqt"``: the project's own baseline: per constant-Q frame (one bin per semitone), the local
  maxima within ``top_db`` of the frame's loudest, at most ``max_notes``; runs of frames become
  notes.  Octave and harmonic confusions are common: it is an estimate, not a transcription.

Users of the notes: estimated rolls of tracks without MIDI at preprocess (``estimate_roll``),
the score of an audio prompt held into its continuation (``prompt_roll``), re-synthesis without
MIDI, and note F1 in ``strata assess`` and ``bench/transcription.py`` (``note_f1``, mir_eval).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from models.roll import empty_roll
from pipeline.config import TRANSCRIPTION_METHODS
from pipeline.corpus.audio import resample
from pipeline.corpus.midi import Note, piano_roll
from pipeline.errors import InputError

METHODS = TRANSCRIPTION_METHODS  # declared in the base, where configs are checked
DEFAULT_METHOD = "basic-pitch"
MIDI_LO, MIDI_HI = 24, 108  # C1 .. B7: the CQT's semitone bins
HOP = 512  # CQT hop at the analysis rate
BP_OVERLAP_FRAMES = 30  # basic-pitch's window overlap in model frames (as its own inference)
BP_BATCH = 8  # windows per ONNX call (2 s each)
BP_THRESHOLDS = {"onset": 0.5, "frame": 0.3, "min_note_ms": 127.7}  # basic-pitch's defaults


class TranscriptionError(InputError):
    """Audio whose notes cannot be estimated, or an estimator that is not installed."""


# ----------------------------------------------------------------------------- public API


def estimate_notes(audio: np.ndarray, sr: int, method: str = DEFAULT_METHOD) -> list[Note]:
    """Notes of mono ``audio`` (n,) at ``sr`` Hz, sorted by onset (``Note`` of pipeline/corpus/midi.py:
    ``start``/``end`` in s, ``pitch``, ``velocity``; program 0, channel 0).  Silence gives []."""
    x = _check_audio(audio, sr, method)
    if x.size == 0 or not np.any(x):
        return []
    notes = _basic_pitch_notes(x, sr) if method == "basic-pitch" else _cqt_notes(x, sr)
    return sorted(notes, key=lambda n: (n.start, n.pitch))


def estimate_roll(audio: np.ndarray, sr: int, fps: int, method: str = DEFAULT_METHOD,
                  n_frames: int | None = None) -> np.ndarray:
    """uint8 roll (2, 128, F) of the estimated notes in ``piano_roll``'s format (pipeline/corpus/midi.py);
    ``F`` defaults to the audio's whole frames, ``len(audio) * fps // sr``."""
    if n_frames is None:
        n_frames = int(np.asarray(audio).shape[-1]) * fps // sr
    return piano_roll(estimate_notes(audio, sr, method), fps=fps, n_frames=n_frames)  # (2, 128, F)


def note_f1(ref: Sequence[Note], est: Sequence[Note], onset_tolerance: float = 0.05,
            pitch_class: bool = False) -> dict[str, float]:
    """Note precision, recall and F1 (mir_eval, onsets within ``onset_tolerance`` s, offsets
    ignored, pitch within a quarter tone); ``pitch_class`` folds every note into one octave.
    Drums are left out.  No reference note or no estimated note gives 0 for all three."""
    import warnings

    # local: keeps mir_eval out of `import pipeline.corpus.transcribe` until this runs
    import mir_eval

    def arrays(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray]:
        kept = [n for n in notes if not n.is_drum]
        pitch = np.array([(60 + n.pitch % 12) if pitch_class else n.pitch for n in kept], float)
        iv = np.array([[n.start, max(n.end, n.start + 1e-3)] for n in kept], float).reshape(-1, 2)
        return iv, 440.0 * 2 ** ((pitch - 69) / 12)

    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    if len(rp) == 0 or len(ep) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ri, rp, ei, ep, onset_tolerance=onset_tolerance, offset_ratio=None)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def prompt_roll(audio: np.ndarray, rate: int, fps: int, prompt_frames: int, total_frames: int,
                hold_seconds: float, tail_seconds: float = 0.25, method: str = DEFAULT_METHOD) -> np.ndarray:
    """uint8 roll (2, 128, total_frames): the prompt's estimated notes over its first
    ``prompt_frames`` frames, then the notes sounding in most of its last ``tail_seconds`` held for
    ``hold_seconds`` (no new onset): the continuation starts from the prompt's harmony."""
    roll = empty_roll(total_frames)
    est = estimate_roll(audio, rate, fps, method, n_frames=prompt_frames)  # (2, 128, prompt_frames)
    take = min(prompt_frames, total_frames)
    roll[:, :, :take] = est[:, :, :take]
    tail = est[0, :, max(0, prompt_frames - max(1, int(round(tail_seconds * fps)))):]  # (128, n_tail)
    if tail.shape[1] == 0:
        return roll
    held = np.where((tail > 0).mean(axis=1) >= 0.5, tail.max(axis=1), 0).astype(np.uint8)  # (128,)
    end = min(total_frames, prompt_frames + int(round(hold_seconds * fps)))
    roll[0, :, prompt_frames:end] = held[:, None]
    return roll


def estimator_version(method: str | None) -> str:
    """What a cached estimate depends on: the method, its package version and settings ("none" for None)."""
    if method is None:
        return "none"
    if method == "basic-pitch":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"basic-pitch {version('basic-pitch')} {sorted(BP_THRESHOLDS.items())}"
        except PackageNotFoundError:
            return "basic-pitch (not installed)"
    return f"{method} hop {HOP} bins {MIDI_LO}-{MIDI_HI}"


# ----------------------------------------------------------------------------- checks


def _check_audio(audio: np.ndarray, sr: int, method: str) -> np.ndarray:
    if method not in METHODS:
        raise TranscriptionError(f"transcription method {method!r}: not one of {', '.join(METHODS)}")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise TranscriptionError(f"audio to transcribe: expected mono (n,) samples, got shape {x.shape}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise TranscriptionError(f"audio to transcribe: sample rate must be a positive integer, got {sr!r}")
    if not np.all(np.isfinite(x)):
        raise TranscriptionError("audio to transcribe: holds NaN or infinite samples")
    return x


# ----------------------------------------------------------------------------- basic-pitch


_MODEL_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()
_MODEL: dict = {}  # "session": the ONNX session, "module": basic_pitch


def basic_pitch_session():
    """The basic-pitch ONNX session, loaded once per process (thread-safe; one intra-op thread,
    so parallel preprocessing workers each use one core)."""
    with _MODEL_LOCK:
        if "session" not in _MODEL:
            _MODEL["session"] = _load_basic_pitch()
    return _MODEL["session"]


def _quiet_import_basic_pitch():
    """Import basic_pitch (once) without its import-time warnings about absent TensorFlow/CoreML/TFLite
    (which would also install a handler on the root logger)."""
    if "module" not in _MODEL:
        with _IMPORT_LOCK:  # taken inside _MODEL_LOCK by _load_basic_pitch, never the other way round
            if "module" not in _MODEL:
                _MODEL["module"] = _import_basic_pitch()
    return _MODEL["module"]


def _import_basic_pitch():
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        # local: keeps basic_pitch out of `import pipeline.corpus.transcribe` until this runs
        import basic_pitch.constants
        import basic_pitch.note_creation
    finally:
        logging.disable(previous)
        root.removeHandler(guard)
    return basic_pitch


def _load_basic_pitch():
    try:
        # local: keeps onnxruntime out of `import pipeline.corpus.transcribe` until this runs
        import onnxruntime as ort

        bp = _quiet_import_basic_pitch()
    except ImportError as e:
        raise TranscriptionError(f"basic-pitch transcription is not installed ({e}): run `make install`") from None
    path = Path(bp.__file__).parent / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise TranscriptionError(path, "basic-pitch's ONNX model is missing from its package")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def basic_pitch_activations(audio: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    """The model's frame-wise outputs {"note", "onset": (T, 88), "contour": (T, 264)} at its
    86 frames per second, windowed and unwrapped as basic-pitch's own inference does."""
    session = basic_pitch_session()
    c = _quiet_import_basic_pitch().constants
    x = resample(audio, int(sr), c.AUDIO_SAMPLE_RATE)  # (n,) at 22050 Hz
    n_orig = len(x)
    overlap = BP_OVERLAP_FRAMES * c.FFT_HOP
    hop = c.AUDIO_N_SAMPLES - overlap
    x = np.concatenate([np.zeros(overlap // 2, np.float32), x])
    starts = list(range(0, len(x), hop))
    outs: dict[str, list] = {"note": [], "onset": [], "contour": []}
    names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]
    for b in range(0, len(starts), BP_BATCH):
        windows = np.zeros((len(starts[b:b + BP_BATCH]), c.AUDIO_N_SAMPLES, 1), np.float32)  # (W, N, 1)
        for j, s in enumerate(starts[b:b + BP_BATCH]):
            seg = x[s:s + c.AUDIO_N_SAMPLES]
            windows[j, :len(seg), 0] = seg
        for k, v in zip(("note", "onset", "contour"), session.run(names, {"serving_default_input_2:0": windows})):
            outs[k].append(v)  # (W, 172, bins)
    half = BP_OVERLAP_FRAMES // 2
    n_frames = int(np.floor(n_orig * (c.ANNOTATIONS_FPS / c.AUDIO_SAMPLE_RATE)))
    result = {}
    for k, chunks in outs.items():
        out = np.concatenate(chunks)[:, half:-half, :]  # (W, T_w, bins)
        result[k] = out.reshape(-1, out.shape[2])[:n_frames]  # (T, bins)
    return result


def _basic_pitch_notes(audio: np.ndarray, sr: int) -> list[Note]:
    bp = _quiet_import_basic_pitch()
    c = bp.constants
    act = basic_pitch_activations(audio, sr)
    if act["note"].shape[0] == 0:
        return []
    min_len = int(np.round(BP_THRESHOLDS["min_note_ms"] / 1000 * (c.AUDIO_SAMPLE_RATE / c.FFT_HOP)))
    _, events = bp.note_creation.model_output_to_notes(
        act, onset_thresh=BP_THRESHOLDS["onset"], frame_thresh=BP_THRESHOLDS["frame"], min_note_len=min_len,
        include_pitch_bends=False, melodia_trick=True)
    return [Note(int(p), float(s), float(e), int(np.clip(round(127 * a), 1, 127)), 0, 0, False)
            for s, e, p, a, _ in events]


# ----------------------------------------------------------------------------- CQT baseline


def note_salience(audio: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Magnitude in dB per semitone (MIDI_LO..MIDI_HI-1) and CQT frame: ((P, N), seconds per frame)."""
    import warnings

    # local: keeps librosa out of `import pipeline.corpus.transcribe` until this runs
    import librosa

    nyq_pitch = int(np.floor(69 + 12 * np.log2(0.45 * rate / 440.0)))  # highest bin below ~Nyquist
    n_bins = max(12, min(MIDI_HI, nyq_pitch) - MIDI_LO)
    with warnings.catch_warnings():  # short prompts: librosa warns that its low octaves' filters are long
        warnings.simplefilter("ignore", UserWarning)
        c = np.abs(librosa.cqt(audio.astype(np.float32), sr=rate, hop_length=HOP, n_bins=n_bins,
                               bins_per_octave=12, fmin=librosa.midi_to_hz(MIDI_LO)))
    return librosa.amplitude_to_db(c, ref=1.0, top_db=None), HOP / rate


def frame_notes(db: np.ndarray, top_db: float, max_notes: int, floor_db: float = -60.0) -> np.ndarray:
    """(P, N) dB -> (P, N) velocity in 0..127: per frame, local maxima within top_db of the loudest."""
    vel = np.zeros(db.shape, np.uint8)
    peak = db.max(axis=0)  # (N,)
    is_max = np.zeros(db.shape, bool)
    is_max[1:-1] = (db[1:-1] >= db[:-2]) & (db[1:-1] >= db[2:])
    for j in range(db.shape[1]):
        if peak[j] < floor_db:
            continue
        cand = np.flatnonzero(is_max[:, j] & (db[:, j] >= peak[j] - top_db))
        cand = cand[np.argsort(db[cand, j])[::-1][:max_notes]]
        vel[cand, j] = np.clip(127 + 3 * (db[cand, j] - peak[j]), 1, 127).astype(np.uint8)
    return vel


def _cqt_notes(audio: np.ndarray, sr: int, top_db: float = 20.0, max_notes: int = 6,
               min_frames: int = 2) -> list[Note]:
    """Runs of at least ``min_frames`` CQT frames of one pitch (``frame_notes``) as notes."""
    db, frame_s = note_salience(audio, sr)
    vel = frame_notes(db, top_db, max_notes)  # (P, N)
    on = np.pad(vel > 0, ((0, 0), (1, 1)))  # (P, N + 2)
    notes = []
    for p, starts, ends in _runs(on):
        for a, b in zip(starts, ends):
            if b - a >= min_frames:
                notes.append(Note(MIDI_LO + p, a * frame_s, b * frame_s, int(vel[p, a:b].max()), 0, 0, False))
    return notes


def _runs(on: np.ndarray):
    """Per row of a zero-padded (P, N + 2) bool array: (row, run starts, run ends) in unpadded frames."""
    edges = np.diff(on.astype(np.int8), axis=1)  # (P, N + 1)
    for p in range(on.shape[0]):
        yield p, np.flatnonzero(edges[p] == 1), np.flatnonzero(edges[p] == -1)
