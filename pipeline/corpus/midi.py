"""MIDI in the pipeline: notes with a full tempo map, piano rolls, and FluidSynth rendering.

Rules
- Times are seconds from the start of the file, through every ``set_tempo`` in any track
  (type 0 and 1 files; a type 2 file is read as if its tracks were simultaneous).
- ``note_on`` with velocity 0 is a note-off.  Repeated notes of the same pitch on a channel
  are matched first-in first-out.
- Sustain pedal (CC64 >= 64 down, per channel): a note released while the pedal is down
  sounds on until the pedal comes up, or until the same pitch is struck again.
- Channel 9 (GM drums, 0-based) gives ``is_drum=True``; ``piano_roll`` leaves drums out
  unless ``include_drums=True`` (a drum's "pitch" is an instrument, not a pitch).
- Notes still sounding at the end of the file end at the file's last event.
- SMPTE time division (the header's top bit set): ticks are ``1 / (frames per second * ticks per
  frame)`` s and ``set_tempo`` is ignored, as the standard says.
- An excerpt (the start of a longer piece, e.g. cut by ``crop_midi``) carries a ``marker`` meta
  message ``EXCERPT_MARKER`` at its cut: its end is not the piece's end (``is_excerpt``), so the
  score tier neither learns an end of piece nor a piece length from it.
- Hostile files give one ``MidiError`` line, in bounded time and memory: larger than
  ``MAX_BYTES``, ticks per beat 0, more than ``MAX_NOTES`` notes, or notes reaching past
  ``MAX_SECONDS`` (a corrupt delta time or tempo; a piano roll of that length would not fit).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import mido
import numpy as np
import soundfile as sf

from models.roll import PITCHES, ROLL_FPS, VELOCITY_MAX, empty_roll
from pipeline.corpus.audio import AudioError, load_audio, peak_normalise, to_mono
from pipeline.errors import InputError
from pipeline.io import atomic_path, check_readable

if TYPE_CHECKING:
    import mido

DRUM_CHANNEL = 9  # GM percussion, 0-based
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/local/share/soundfonts",
                  "~/.local/share/soundfonts")
PREFERRED_SOUNDFONTS = ("FluidR3_GM.sf2", "default-GM.sf2", "TimGM6mb.sf2")
MAX_BYTES = 4 * 1024 * 1024  # parsed by mido in ~10 s and ~0.6 GB here; real scores are far smaller
MAX_NOTES = 200_000
MAX_SECONDS = 3 * 3600.0  # a (2, 128, F) roll at 100 fps of this length is 276 MB
EXCERPT_MARKER = "strata: excerpt"  # a marker meta message's text at the cut of a cropped piece


class MidiError(InputError):
    """A MIDI input (or the tools to render it) that cannot be used: ``"<path>: <reason>"``."""


@dataclass(frozen=True)
class Note:
    """One note; times in seconds."""

    pitch: int  # MIDI key 0..127 (drum instrument when is_drum)
    start: float  # s
    end: float  # s
    velocity: int  # 1..127
    program: int  # GM program 0..127 in force at the onset
    channel: int  # 0..15
    is_drum: bool

    @property
    def start_s(self) -> float:
        return self.start

    @property
    def end_s(self) -> float:
        return self.end


# ----------------------------------------------------------------------------- reading


def _open_midi(path: str | Path) -> "mido.MidiFile":
    path = Path(path)
    check_readable(path, MidiError)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise MidiError(path, f"{size / 2**20:.1f} MB is larger than the {MAX_BYTES // 2**20} MB limit of a score")
    try:
        mid = mido.MidiFile(str(path), clip=True)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError, ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MidiError(path, f"cannot parse MIDI ({reason})") from None
    division = mid.ticks_per_beat
    if division & 0x8000:
        if _smpte_tick_seconds(division) is None:
            raise MidiError(path, f"SMPTE time division 0x{division:04x} has no frame rate or 0 ticks per frame")
    elif division <= 0:
        raise MidiError(path, "ticks per beat is 0 in the header (no time base)")
    return mid


def _smpte_tick_seconds(division: int) -> float | None:
    """Seconds per tick of an SMPTE division (top bit set), None when it is not one or is invalid."""
    if not division & 0x8000:
        return None
    fps = 256 - (division >> 8)  # the high byte is -fps in two's complement: 24, 25, 29 (29.97), 30
    ticks = division & 0xFF
    if fps <= 0 or ticks == 0:
        return None
    return 1.0 / ((29.97 if fps == 29 else fps) * ticks)


def _timed_messages(mid: "mido.MidiFile") -> Iterable[tuple[float, "mido.Message"]]:
    """All messages of all tracks in tick order, with their time in seconds (tempo map)."""
    tempo = 500000  # us per beat until the first set_tempo
    seconds, last_tick = 0.0, 0
    tick = 0
    smpte = _smpte_tick_seconds(mid.ticks_per_beat)
    for msg in mido.merge_tracks(mid.tracks, skip_checks=True):
        tick += msg.time
        if smpte is not None:
            seconds = tick * smpte
        else:
            seconds += (tick - last_tick) * tempo / (mid.ticks_per_beat * 1e6)
        last_tick = tick
        if msg.type == "set_tempo":
            tempo = msg.tempo
        yield seconds, msg


def notes_from_midi(mid: "mido.MidiFile") -> list[Note]:
    """Notes of an opened ``mido.MidiFile`` (rules in the module docstring), sorted by onset."""
    program = [0] * 16
    pedal = [False] * 16
    sounding: dict[tuple[int, int], deque] = defaultdict(deque)  # (ch, pitch) -> (start, vel, prog)
    held: dict[tuple[int, int], list] = defaultdict(list)  # released under the pedal
    notes: list[Note] = []
    t_end = 0.0

    def emit(ch: int, pitch: int, start: float, vel: int, prog: int, end: float) -> None:
        notes.append(Note(pitch, start, max(end, start), vel, prog, ch, ch == DRUM_CHANNEL))

    def release_held(ch: int, pitch: int | None, t: float) -> None:
        keys = [k for k in held if k[0] == ch and (pitch is None or k[1] == pitch)]
        for key in keys:
            for start, vel, prog in held.pop(key):
                emit(ch, key[1], start, vel, prog, t)

    for t, msg in _timed_messages(mid):
        t_end = t
        kind = msg.type
        if kind == "program_change":
            program[msg.channel] = msg.program
        elif kind == "note_on" and msg.velocity > 0:
            release_held(msg.channel, msg.note, t)  # re-striking ends the pedalled copy
            sounding[(msg.channel, msg.note)].append((t, msg.velocity, program[msg.channel]))
        elif kind in ("note_off", "note_on"):
            queue = sounding.get((msg.channel, msg.note))
            if not queue:
                continue  # a stray note-off
            start, vel, prog = queue.popleft()
            if pedal[msg.channel]:
                held[(msg.channel, msg.note)].append((start, vel, prog))
            else:
                emit(msg.channel, msg.note, start, vel, prog, t)
        elif kind == "control_change" and msg.control == 64:
            down = msg.value >= 64
            if pedal[msg.channel] and not down:
                release_held(msg.channel, None, t)
            pedal[msg.channel] = down
    for (ch, pitch), queue in list(sounding.items()) + list(held.items()):
        for start, vel, prog in queue:
            emit(ch, pitch, start, vel, prog, t_end)
    notes.sort(key=lambda n: (n.start, n.channel, n.pitch, n.end))
    return notes


def read_midi(path: str | Path) -> list[Note]:
    """Notes of a MIDI file; ``MidiError`` for unreadable or corrupt files and for "no notes"."""
    return read_score(path)[0]


def read_score(path: str | Path) -> tuple[list[Note], bool]:
    """(notes, excerpt) of a MIDI file, parsed once: ``read_midi``'s notes and errors, and ``is_excerpt``."""
    mid = _open_midi(path)
    n_on = sum(1 for track in mid.tracks for m in track if m.type == "note_on" and m.velocity > 0)
    if n_on > MAX_NOTES:
        raise MidiError(path, f"{n_on} notes, more than the {MAX_NOTES} a score may have")
    notes = notes_from_midi(mid)
    if not notes:
        raise MidiError(path, "no notes")
    end = max(n.end for n in notes)
    if not end <= MAX_SECONDS:  # also NaN
        raise MidiError(path, f"notes reach {end / 3600:.1f} h, past the {MAX_SECONDS / 3600:g} h limit "
                        f"(a corrupt delta time or tempo?)")
    return notes, _marked_excerpt(mid)


def is_excerpt(path: str | Path) -> bool:
    """Whether a MIDI file is marked as the start of a longer piece (``EXCERPT_MARKER``, written by
    ``crop_midi`` where it cut notes off); unreadable files raise ``MidiError`` as ``read_midi`` does."""
    return _marked_excerpt(_open_midi(path))


def _marked_excerpt(mid: "mido.MidiFile") -> bool:
    return any(m.type == "marker" and m.text == EXCERPT_MARKER for track in mid.tracks for m in track)


def midi_duration(path: str | Path) -> float:
    """Seconds from the start of the file to the end of its last note."""
    return max(n.end for n in read_midi(path))


# ----------------------------------------------------------------------------- piano roll


def time_to_frame(t: float, fps: int) -> int:
    """Frame holding time ``t`` s: ``floor(t * fps + 1e-9)``."""
    return int(math.floor(t * fps + 1e-9))


def piano_roll(
    notes: Sequence[Note], fps: int = ROLL_FPS, n_frames: int | None = None, include_drums: bool = False
) -> np.ndarray:
    """uint8 ``(2, 128, F)``: [0] velocity while a note sounds, [1] velocity on its onset frame.

    A note sounds in frames ``[frame(start), frame(end))``, at least its onset frame.  Where
    notes overlap the louder velocity wins.  ``F`` defaults to the end of the last note;
    ``n_frames`` crops or zero-pads to a fixed length.  Drums are left out by default.
    """
    kept = [n for n in notes if include_drums or not n.is_drum]
    spans = [(time_to_frame(n.start, fps), time_to_frame(n.end, fps), n) for n in kept]
    spans = [(on, max(off, on + 1), n) for on, off, n in spans]
    if n_frames is None:
        n_frames = max((off for _, off, _ in spans), default=0)
    roll = empty_roll(n_frames)  # (2, pitch, frame)
    for on, off, n in spans:
        if on >= n_frames or not 0 <= n.pitch < PITCHES:
            continue
        vel = np.uint8(min(max(n.velocity, 1), VELOCITY_MAX))
        seg = roll[0, n.pitch, on:off]
        np.maximum(seg, vel, out=seg)
        roll[1, n.pitch, on] = max(roll[1, n.pitch, on], vel)
    return roll


# ----------------------------------------------------------------------------- editing


def set_program(mid: "mido.MidiFile", program: int) -> "mido.MidiFile":
    """Rewrite every non-drum ``program_change`` to ``program`` and add one at t=0 per used channel."""
    if not 0 <= program < 128:
        raise MidiError(None, f"GM program must be in 0..127, got {program}")
    out = mido.MidiFile(type=mid.type, ticks_per_beat=mid.ticks_per_beat)
    for track in mid.tracks:
        new = mido.MidiTrack()
        channels = sorted({m.channel for m in track if m.type == "note_on" and m.channel != DRUM_CHANNEL})
        for ch in channels:
            new.append(mido.Message("program_change", channel=ch, program=program, time=0))
        for msg in track:
            if msg.type == "program_change" and msg.channel != DRUM_CHANNEL:
                msg = msg.copy(program=program)
            new.append(msg)
        out.tracks.append(new)
    return out


def crop_midi(mid: "mido.MidiFile", seconds: float) -> "mido.MidiFile":
    """The first ``seconds`` of a file: later events dropped, notes and pedals closed at the cut.

    Rendering the result gives the audio of the first ``seconds`` (plus the release tail).  Where a
    note was cut off (struck at or after the cut, or sounding across it), the first track gets the
    ``EXCERPT_MARKER`` at the cut: the file is an excerpt, not a whole piece.
    """
    tempo_ticks = _seconds_to_ticks(mid)
    cut_tick = tempo_ticks(seconds)
    out = mido.MidiFile(type=mid.type, ticks_per_beat=mid.ticks_per_beat)
    cut_notes = False
    for track in mid.tracks:
        new, tick, last = mido.MidiTrack(), 0, 0
        on: dict[tuple[int, int], int] = defaultdict(int)
        pedal: set[int] = set()
        for i, msg in enumerate(track):
            tick += msg.time
            if msg.type == "end_of_track":
                continue
            if tick > cut_tick or (tick == cut_tick and msg.type == "note_on" and msg.velocity > 0):
                cut_notes = cut_notes or any(m.type == "note_on" and m.velocity > 0 for m in [msg, *track[i + 1:]])
                break
            new.append(msg.copy(time=tick - last))
            last = tick
            if msg.type == "note_on" and msg.velocity > 0:
                on[(msg.channel, msg.note)] += 1
            elif msg.type in ("note_on", "note_off") and on[(msg.channel, msg.note)] > 0:
                on[(msg.channel, msg.note)] -= 1
            elif msg.type == "control_change" and msg.control == 64:
                (pedal.add if msg.value >= 64 else pedal.discard)(msg.channel)
        closing = [mido.Message("note_off", channel=ch, note=p, velocity=0)
                   for (ch, p), k in sorted(on.items()) for _ in range(k)]
        cut_notes = cut_notes or bool(closing)
        closing += [mido.Message("control_change", channel=ch, control=64, value=0) for ch in sorted(pedal)]
        for i, msg in enumerate(closing):
            new.append(msg.copy(time=cut_tick - last if i == 0 else 0))
            last = cut_tick
        new.append(mido.MetaMessage("end_of_track", time=0))
        out.tracks.append(new)
    if cut_notes and out.tracks:  # at the cut in the first track (a type 1 file's tempo track: timing only)
        first, tick = out.tracks[0], 0
        for j, msg in enumerate(first):
            if msg.type == "end_of_track":
                first.insert(j, mido.MetaMessage("marker", text=EXCERPT_MARKER, time=max(0, cut_tick - tick)))
                first[j + 1] = first[j + 1].copy(time=0)
                break
            tick += msg.time
    return out


def _seconds_to_ticks(mid: "mido.MidiFile"):
    """A function seconds -> tick (floor) through the file's tempo map."""
    smpte = _smpte_tick_seconds(mid.ticks_per_beat)
    if smpte is not None:
        return lambda s: int(math.floor(s / smpte + 1e-6))
    changes = [(0, 0.0, 500000)]  # (tick, seconds, tempo in force from there)
    tick, last_tick, seconds, tempo = 0, 0, 0.0, 500000
    for msg in mido.merge_tracks(mid.tracks, skip_checks=True):
        tick += msg.time
        if msg.type == "set_tempo":
            seconds += (tick - last_tick) * tempo / (mid.ticks_per_beat * 1e6)
            last_tick, tempo = tick, msg.tempo
            changes.append((tick, seconds, tempo))

    def to_tick(s: float) -> int:
        k, t0, tp = [c for c in changes if c[1] <= s][-1]
        return k + int(math.floor((s - t0) * mid.ticks_per_beat * 1e6 / tp + 1e-6))

    return to_tick


# ----------------------------------------------------------------------------- rendering


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """A General MIDI soundfont: ``explicit``, else ``$STRATA_SOUNDFONT``, else standard places."""
    for given, where in ((explicit, "soundfont"), (os.environ.get("STRATA_SOUNDFONT"), "STRATA_SOUNDFONT")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise MidiError(p, f"{where} not found")
            return p
    found: list[Path] = []
    for d in SOUNDFONT_DIRS:
        found += sorted(Path(d).expanduser().glob("*.sf[23]"))
    if not found:
        raise MidiError(None, "no soundfont found: install one (apt-get install fluid-soundfont-gm) "
                        "or set STRATA_SOUNDFONT to a .sf2 file")
    rank = {name: i for i, name in enumerate(PREFERRED_SOUNDFONTS)}
    return min(found, key=lambda p: (rank.get(p.name, len(rank)), str(p)))


def fluidsynth_program() -> str:
    """The ``fluidsynth`` executable; ``MidiError`` when it is not on the PATH."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise MidiError(None, "fluidsynth not found on PATH: install it (apt-get install fluidsynth)")
    return exe


def render_midi(
    midi_path: str | Path,
    wav_path: str | Path,
    sr: int = 16000,
    soundfont: str | Path | None = None,
    program: int | None = None,
    gain: float = 0.5,
    peak: float = 0.9,
    tail_seconds: float | None = 1.5,
) -> Path:
    """Render a MIDI file to a mono 16-bit WAV with the ``fluidsynth`` program.

    Sample 0 of the WAV is time 0 of the MIDI.  ``program`` replaces every non-drum instrument
    by that GM program.  The release/reverb tail is cut ``tail_seconds`` after the last note
    ends (``None`` keeps all of it).  The result is peak-normalised to ``peak`` and written
    atomically.  ``MidiError`` if the MIDI is unusable or
    fluidsynth / a soundfont is missing.
    """
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    exe = fluidsynth_program()
    font = find_soundfont(soundfont)
    mid = _open_midi(midi_path)
    notes = notes_from_midi(mid)
    if not notes:
        raise MidiError(midi_path, "no notes")
    with tempfile.TemporaryDirectory(prefix="strata-render-") as tmp:
        src = midi_path
        if program is not None:
            src = Path(tmp) / "program.mid"
            set_program(mid, program).save(str(src))
        raw = Path(tmp) / "raw.wav"
        cmd = [exe, "-ni", "-q", "-g", str(gain), "-r", str(sr), "-F", str(raw), str(font), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not raw.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MidiError(midi_path, f"fluidsynth failed ({tail[0][:200]})")
        try:
            x, got_sr = load_audio(raw)
            y = to_mono(x)  # (n,)
            if tail_seconds is not None:
                y = y[: int(round((max(n.end for n in notes) + tail_seconds) * got_sr))]
            y = peak_normalise(y, peak)
        except AudioError as e:
            raise MidiError(midi_path, f"rendered audio unusable ({e.reason})") from None
    with atomic_path(wav_path, suffix=".wav") as out:
        sf.write(str(out), y, got_sr, subtype="PCM_16", format="WAV")
    return wav_path
