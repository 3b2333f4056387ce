"""Bounded, seeded hostile-input cases and the worker that runs them (used by tests/faults and
``bench/faults.py``).

Every case is fed to the code a user's file reaches (MIDI: ``read_midi`` then ``piano_roll`` as
``strata generate --midi`` does; audio: ``prepare_audio`` as ``strata preprocess`` does) and ends in
one of: ``ok`` (it works), ``clear`` (one ``StrataError`` line naming the input), or a defect:
``traceback`` (any other exception), ``timeout`` (longer than the per-case bound), ``memory``
(over the worker's address-space limit), ``multiline`` (an error of more than one line).

``python -m tests.faults.fuzz midi|audio --cases N --seed S --json FILE`` runs them in a worker
with a memory limit and a per-case alarm; the parent bounds the whole run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

DEFECTS = ("traceback", "timeout", "memory", "multiline")


# ----------------------------------------------------------------------------- MIDI


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def smf(tracks: list[bytes], fmt: int = 1, division: int = 480) -> bytes:
    """A Standard MIDI File from raw track bodies (each without its MTrk header)."""
    head = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division & 0xFFFF)
    return head + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def events(*evs: tuple[int, bytes]) -> bytes:
    """Track body from (delta ticks, event bytes); end-of-track appended."""
    return b"".join(_vlq(d) + e for d, e in evs) + b"\x00\xff\x2f\x00"


def tempo(us: int) -> bytes:
    return b"\xff\x51\x03" + us.to_bytes(3, "big")


def valid_midis() -> list[tuple[str, bytes]]:
    """Small valid files the mutations start from (type 0 and 1, tempo changes, pedal, drums)."""
    melody = events((0, tempo(500000)), (0, b"\xc0\x00"), (0, b"\x90\x3c\x50"), (240, b"\x80\x3c\x00"),
                    (0, b"\x90\x40\x50"), (240, b"\x90\x40\x00"), (0, b"\xb0\x40\x7f"), (0, b"\x90\x43\x60"),
                    (480, b"\x80\x43\x00"), (10, b"\xb0\x40\x00"), (0, tempo(300000)), (0, b"\x90\x48\x40"),
                    (960, b"\x80\x48\x40"))
    bass = events((0, b"\x91\x24\x50"), (960, b"\x81\x24\x00"), (0, b"\x99\x24\x70"), (60, b"\x89\x24\x00"))
    return [("type0", smf([melody], fmt=0)), ("type1", smf([events((0, tempo(600000))), melody, bass])),
            ("running_status", smf([events((0, b"\x90\x3c\x50"), (100, b"\x3e\x50"), (100, b"\x3c\x00"),
                                            (0, b"\x3e\x00"))], fmt=0))]


def structural_midis() -> list[tuple[str, bytes]]:
    """Files that parse but are odd: each must work or give one clear line."""
    note = events((0, b"\x90\x3c\x50"), (480, b"\x80\x3c\x00"))
    many = b"".join(_vlq(1) + bytes([0x90, 36 + i % 60, 80]) + _vlq(1) + bytes([0x80, 36 + i % 60, 0])
                    for i in range(1_000_000)) + b"\x00\xff\x2f\x00"
    return [
        ("ticks_per_beat_0", smf([note], division=0)),
        ("smpte_division", smf([note], division=0xE728)),  # -25 fps, 40 ticks per frame
        ("smpte_30_drop", smf([note], division=0xE250)),
        ("type2", smf([note, note], fmt=2)),
        ("format_7", smf([note], fmt=7)),
        ("huge_delta", smf([events((0, b"\x90\x3c\x50"), (0x0FFFFFFF, b"\x80\x3c\x00"))])),
        ("huge_delta_slow_tempo", smf([events((0, tempo(0xFFFFFF)), (0, b"\x90\x3c\x50"),
                                              (0x0FFFFFFF, b"\x80\x3c\x00"))])),
        ("tempo_0", smf([events((0, tempo(0)), (0, b"\x90\x3c\x50"), (480, b"\x80\x3c\x00"))])),
        ("never_released", smf([events((0, b"\x90\x3c\x50"), (0, b"\x90\x40\x50"), (480, b"\xff\x01\x01x"))])),
        ("only_released", smf([events((0, b"\x80\x3c\x50"))])),
        ("no_tracks", smf([])),
        ("empty_track", smf([b""])),
        ("million_notes", smf([many], fmt=0)),
        ("drums_only", smf([events((0, b"\x99\x24\x50"), (480, b"\x89\x24\x00"))])),
        ("sysex", smf([events((0, b"\xf0\x05\x7e\x7f\x09\x01\xf7"), (0, b"\x90\x3c\x50"), (480, b"\x80\x3c\x00"))])),
        ("track_length_huge", b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk\xff\xff\xff\xf0" + note),
        ("header_length_huge", b"MThd\x7f\xff\xff\xff" + b"\x00" * 6),
        ("ntracks_65535", b"MThd" + struct.pack(">IHHH", 6, 1, 65535, 480) + b"MTrk" + struct.pack(">I", len(note))
         + note),
        ("not_midi", b"RIFF\x00\x00\x00\x00WAVEfmt "),
        ("empty_file", b""),
    ]


def midi_mutations(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` mutated valid files: byte flips, truncations, insertions, chunk-length rewrites."""
    rng = random.Random(seed)
    bases = valid_midis()
    out = []
    for i in range(n):
        name, data = bases[i % len(bases)]
        b = bytearray(data)
        kind = ("flip", "truncate", "insert", "length", "flip")[i % 5]
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == "truncate":
            del b[rng.randrange(1, len(b)):]
        elif kind == "insert":
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:  # a track or header length that lies
            at = data.find(b"MTrk") + 4 if rng.random() < 0.7 else 4
            b[at:at + 4] = struct.pack(">I", rng.choice([0, 1, 5, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)]))
        out.append((f"{name}-{kind}-{i}", bytes(b)))
    return out


def run_midi(path: Path) -> None:
    """What ``strata generate --midi`` does with the file (preprocess reads it the same way)."""
    from pipeline.corpus.midi import piano_roll, read_midi

    notes = read_midi(path)
    piano_roll(notes, fps=100)


# ----------------------------------------------------------------------------- audio


def _wav(x: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def valid_audio() -> list[tuple[str, str, bytes]]:
    t = np.arange(16000 * 3) / 16000
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    st = np.stack([x, x[::-1]], axis=1)
    return [("wav16", ".wav", _wav(x, 16000)), ("wav_stereo", ".wav", _wav(st, 16000)),
            ("flac", ".flac", _wav(x, 16000, "PCM_16", "FLAC")), ("ogg", ".ogg", _wav(x, 16000, "VORBIS", "OGG")),
            ("wav_float", ".wav", _wav(x, 16000, "FLOAT"))]


def _riff(fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, block: int | None = None) -> bytes:
    block = block if block is not None else max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF,
                      block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def structural_audio() -> list[tuple[str, str, bytes]]:
    pcm = (np.sin(np.arange(48000) / 10) * 12000).astype("<i2").tobytes()
    return [
        ("rate_1hz", ".wav", _riff(1, 1, 1, 16, pcm)),
        ("rate_4ghz", ".wav", _riff(1, 1, 0xFFFFFFFF, 16, pcm)),
        ("rate_0", ".wav", _riff(1, 1, 0, 16, pcm)),
        ("channels_0", ".wav", _riff(1, 0, 16000, 16, pcm)),
        ("channels_1000", ".wav", _riff(1, 1000, 16000, 16, pcm)),
        ("channels_65535", ".wav", _riff(1, 65535, 16000, 16, pcm)),
        ("bits_0", ".wav", _riff(1, 1, 16000, 0, pcm)),
        ("bits_7", ".wav", _riff(1, 1, 16000, 7, pcm)),
        ("data_length_lies", ".wav", _riff(1, 1, 16000, 16, pcm)[:-len(pcm) // 2]),
        ("unknown_codec", ".wav", _riff(0x1234, 1, 16000, 16, pcm)),
        ("silence", ".wav", _riff(1, 1, 16000, 16, b"\x00" * 96000)),
        ("nan_float", ".wav", _riff(3, 1, 16000, 32, np.full(48000, np.nan, "<f4").tobytes())),
        ("inf_float", ".wav", _riff(3, 1, 16000, 32, np.full(48000, np.inf, "<f4").tobytes())),
        ("one_sample", ".wav", _riff(1, 1, 16000, 16, b"\x01\x00")),
        ("text_as_wav", ".wav", b"this is not audio\n" * 100),
        ("text_as_flac", ".flac", b"fLaC" + b"\x00" * 200),
        ("text_as_ogg", ".ogg", b"OggS" + b"\x00" * 200),
        ("empty", ".wav", b""),
    ]


def audio_mutations(n: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``n`` mutated valid files: header and body byte flips, truncations, insertions."""
    rng = random.Random(seed)
    bases = valid_audio()
    out = []
    for i in range(n):
        name, suffix, data = bases[i % len(bases)]
        b = bytearray(data)
        kind = ("header", "body", "truncate", "insert")[i % 4]
        if kind == "header":
            for _ in range(rng.randint(1, 6)):
                b[rng.randrange(min(64, len(b)))] = rng.randrange(256)
        elif kind == "body":
            for _ in range(rng.randint(1, 64)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == "truncate":
            del b[rng.randrange(1, len(b)):]
        else:
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        out.append((f"{name}-{kind}-{i}", suffix, bytes(b)))
    return out


def run_audio(path: Path) -> None:
    """What ``strata preprocess`` does with the file (16 kHz, 10-minute crop)."""
    from pipeline.corpus.audio import prepare_audio

    prepare_audio(path, 16000, max_seconds=600.0)


# ----------------------------------------------------------------------------- the worker


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def classify(fn, path: Path, seconds: float, expected: type[BaseException] | None = None) -> tuple[str, str]:
    """(outcome, detail) of ``fn(path)`` under a per-case alarm; ``expected``: the error type that
    counts as a clear refusal when it is one line (default ``StrataError``)."""
    from pipeline.errors import StrataError

    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        fn(path)
        return "ok", ""
    except expected or StrataError as e:
        text = str(e)
        if "\n" in text.strip():
            return "multiline", text[:300]
        return "clear", text[:300]
    except CaseTimeout:
        return "timeout", f"over {seconds:g} s"
    except MemoryError:
        return "memory", "MemoryError"
    except Exception as e:  # noqa: BLE001 - the defect being counted
        return "traceback", "".join(traceback.format_exception_only(type(e), e)).strip()[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def cases(kind: str, n: int, seed: int) -> list[tuple[str, str, bytes]]:
    if kind == "midi":
        return [(name, ".mid", b) for name, b in structural_midis() + midi_mutations(n, seed)]
    return structural_audio() + audio_mutations(n, seed)


def run_cases(kind: str, n: int, seed: int, per_case: float, progress: Path | None = None) -> dict:
    fn = run_midi if kind == "midi" else run_audio
    signal.signal(signal.SIGALRM, _alarm)
    counts: dict[str, int] = {}
    defects, slowest = [], (0.0, "")
    with tempfile.TemporaryDirectory(prefix=f"strata-fuzz-{kind}-") as d:
        for name, suffix, data in cases(kind, n, seed):
            path = Path(d) / f"{name}{suffix}"
            path.write_bytes(data)
            if progress:
                progress.write_text(name)
            t0 = time.perf_counter()
            outcome, detail = classify(fn, path, per_case)
            took = time.perf_counter() - t0
            slowest = max(slowest, (took, name))
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in DEFECTS:
                defects.append({"case": name, "outcome": outcome, "detail": detail})
            path.unlink()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "seed": seed, "cases": sum(counts.values()), "counts": counts, "defects": defects,
            "slowest_case": {"name": slowest[1], "seconds": round(slowest[0], 3)},
            "peak_rss_mb": round(peak_mb, 1)}


def run_worker(kind: str, n: int, seed: int, per_case: float = 10.0, mem_mb: int = 3072,
               timeout: float = 600.0) -> dict:
    """Run the cases in a child process (memory limit, per-case alarm, overall ``timeout``)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="strata-fuzz-") as d:
        out, progress = Path(d) / "out.json", Path(d) / "case"
        cmd = [sys.executable, "-m", "tests.faults.fuzz", kind, "--cases", str(n), "--seed", str(seed),
               "--per-case", str(per_case), "--mem-mb", str(mem_mb), "--json", str(out), "--progress", str(progress)]
        env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", STRATA_TORCH_THREADS="1")
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            case = progress.read_text() if progress.exists() else "?"
            return {"kind": kind, "seed": seed, "cases": 0, "counts": {"timeout": 1},
                    "defects": [{"case": case, "outcome": "timeout", "detail": f"worker over {timeout:g} s"}]}
        if proc.returncode != 0 or not out.exists():
            case = progress.read_text() if progress.exists() else "?"
            return {"kind": kind, "seed": seed, "cases": 0, "counts": {"crash": 1},
                    "defects": [{"case": case, "outcome": "crash",
                                 "detail": f"worker exit {proc.returncode}: {proc.stderr[-500:]}"}]}
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["midi", "audio"])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-case", type=float, default=10.0)
    ap.add_argument("--mem-mb", type=int, default=3072)
    ap.add_argument("--json", required=True)
    ap.add_argument("--progress")
    a = ap.parse_args(argv)
    import pipeline.corpus.audio  # noqa: F401 - import torch & co. before the memory limit
    import pipeline.corpus.midi  # noqa: F401

    limit = a.mem_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = run_cases(a.kind, a.cases, a.seed, a.per_case, Path(a.progress) if a.progress else None)
    result["memory_limit_mb"] = a.mem_mb
    result["per_case_limit_s"] = a.per_case
    Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
