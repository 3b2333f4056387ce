"""models/score.py: score-informed linear prediction from the roll, and a stage that uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import Stage
from models.score import ScoreTaps, harmonic_kernel, levinson
from tests.helpers_models import FPS, GENRES, inputs, randomize_biases, stage_cfg as small_cfg  # noqa: F401

RATE = 2000


def roll_of(pitches: dict[int, float], frames: int) -> torch.Tensor:
    """(1, 256, F) roll with the given pitches sounding (velocity / 127) in every frame."""
    r = torch.zeros(1, 256, frames)
    for p, v in pitches.items():
        r[0, p] = v
    return r


def test_levinson_solves_the_normal_equations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000)
    x = np.convolve(x, [1.0, 0.6, -0.3, 0.2], mode="same")
    r = np.array([x[: len(x) - k] @ x[k:] for k in range(9)]) / len(x)
    toeplitz = np.array([[r[abs(i - j)] for j in range(8)] for i in range(8)])
    want = np.linalg.solve(toeplitz, r[1:])
    got = levinson(torch.tensor(r)[None], 8)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_taps_predict_the_notes_whatever_their_phases_and_amplitudes():
    """A chord's harmonics with random phases and an unknown timbre: the score taps cancel them."""
    rng = np.random.default_rng(1)
    n = 4000
    t = np.arange(n) / RATE
    chord = {57: 0.8, 64: 0.6, 69: 0.7}  # A3, E4, A4
    x = np.zeros(n)
    for p in chord:
        f0 = 440.0 * 2 ** ((p - 69) / 12)
        for h in range(1, int(900 / f0) + 1):
            x += rng.uniform(0.1, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    x = 0.5 * x / np.abs(x).max()
    st = ScoreTaps(32, RATE, FPS, bandwidth_hz=1.0)
    taps, on = st.sample_taps(roll_of(chord, n * FPS // RATE), None, 0, n, 1, torch.float64)
    u = torch.tensor(np.concatenate([[0.0], x[:-1]]))[None]
    resid = x - ScoreTaps.apply(u, taps)[0].numpy()
    assert bool(on.all())
    wrong, _ = st.sample_taps(roll_of({58: 0.8, 65: 0.6, 70: 0.7}, n * FPS // RATE), None, 0, n, 1, torch.float64)
    resid_wrong = x - ScoreTaps.apply(u, wrong)[0].numpy()
    tail = slice(100, None)  # past the first P samples
    assert np.var(resid[tail]) < 0.01 * np.var(x[tail])  # > 20 dB below the signal
    assert np.var(resid_wrong[tail]) > 10 * np.var(resid[tail])  # the pitches matter


def test_chunks_equal_the_whole_and_masks_turn_it_off():
    g = torch.Generator().manual_seed(0)
    roll = (torch.rand(2, 256, 30, generator=g) > 0.9).float() * 0.8
    roll[1, :, 10:14] = 0  # silent frames
    st = ScoreTaps(16, RATE, FPS)
    full, on = st.sample_taps(roll, None, 0, 700, 2, torch.float64)  # 35 frames: 5 past the roll's end
    part, on_part = st.sample_taps(roll, None, 230, 470, 2, torch.float64)
    torch.testing.assert_close(part, full[:, 230:470], rtol=0, atol=1e-12)
    assert torch.equal(on_part, on[:, 230:470])
    assert not on[1, 200:280].any() and not on[:, 600:].any()  # silence, past the end: off
    assert (full[1, 200:280] == 0).all()
    dropped, on_d = st.sample_taps(roll, torch.tensor([True, False]), 0, 700, 2, torch.float64)
    assert not on_d[0].any() and torch.equal(on_d[1], on[1]) and (dropped[0] == 0).all()


def test_crossfade_mixes_the_last_frames_taps_into_the_new_frames_first_samples():
    """Where the notes change, the taps pass linearly from the old frame's to the new one's over ``fade`` samples
    (weight (p + 1) / (fade + 1) at the new frame's sample p), and chunks of any bounds equal the whole."""
    roll = torch.cat([roll_of({57: 0.8}, 3), roll_of({64: 0.6}, 3), roll_of({}, 2), roll_of({69: 0.7}, 2)], -1)
    plain = ScoreTaps(16, RATE, FPS)
    faded = ScoreTaps(16, RATE, FPS, crossfade_ms=4.0)  # 8 samples of the 20 in a frame at 2 kHz
    assert faded.fade == 8 and ScoreTaps(16, RATE, FPS, crossfade_ms=50.0).fade == plain.hop  # at most a frame
    n = 12 * plain.hop  # two frames past the roll's end
    a, on_a = plain.sample_taps(roll, None, 0, n, 1, torch.float64)
    b, on_b = faded.sample_taps(roll, None, 0, n, 1, torch.float64)
    hop = plain.hop
    for frame in range(12):  # new frame's first 8 samples mixed, the rest the frame's own taps
        for p in range(hop):
            t = frame * hop + p
            w = min((p + 1) / 9, 1.0)
            before = a[0, t - hop] if frame else torch.zeros_like(a[0, t])  # before the roll: off
            on_before = on_a[0, t - hop] if frame else 0.0
            torch.testing.assert_close(b[0, t], before + w * (a[0, t] - before), rtol=0, atol=1e-12)
            assert abs(float(on_b[0, t]) - (on_before + w * (float(on_a[0, t]) - on_before))) < 1e-12
    assert float(on_b[0, 6 * hop + 3]) == pytest.approx(1 - 4 / 9)  # notes off: the mask fades out too
    assert not torch.equal(a, b) and (b[0, 11 * hop - 1] == 0).all() and (b[0, 10 * hop + 8:] == 0).all()
    for t0, t1 in ((0, 7), (7, 45), (45, 61), (60, 200), (199, n)):  # chunk bounds inside and at frame edges
        part, on_part = faded.sample_taps(roll, None, t0, t1, 1, torch.float64)
        torch.testing.assert_close(part, b[:, t0:t1], rtol=0, atol=1e-12)
        torch.testing.assert_close(on_part, on_b[:, t0:t1], rtol=0, atol=1e-12)


def test_kernel_is_the_sum_over_each_pitchs_harmonics_and_is_cached_read_only():
    """``harmonic_kernel`` (vectorised over (pitch, harmonic) pairs) is the closed form of the module docstring,
    summed pitch by pitch and harmonic by harmonic here (1e-12), and a second call returns the cached array,
    which cannot be written to."""
    order, rate, bw, rolloff, lowest = 16, 8000, 2.0, 0.7, 1000.0
    tau = np.arange(order + 1)
    top = 0.95 * rate / 2
    want = np.zeros((128, order + 1))
    for p in range(128):
        f0 = 440.0 * 2.0 ** ((p - 69) / 12.0)
        h = 1
        while h * f0 < top:
            if h * f0 >= lowest:
                want[p] += h ** (-2 * rolloff) * np.cos(2 * np.pi * h * f0 * tau / rate)
            h += 1
    want *= np.exp(-0.5 * (2 * np.pi * bw * tau / rate) ** 2)
    got = harmonic_kernel(order, rate, bw, rolloff, lowest)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    assert harmonic_kernel(order, rate, bw, rolloff, lowest) is got and not got.flags.writeable


def test_kernel_keeps_harmonics_below_nyquist():
    k = harmonic_kernel(8, RATE, 0.0, 1.0)
    f0 = 440.0 * 2 ** ((100 - 69) / 12)  # ~2.8 kHz: no harmonic below 950 Hz
    assert f0 > 0.95 * RATE / 2 and np.all(k[100] == 0)
    assert k[69, 0] == pytest.approx(sum(h ** -2.0 for h in range(1, 3)))  # 440 and 880 Hz


def test_taps_from_lowest_hz_leave_the_lower_harmonics_alone():
    """lowest_hz 1000 at 8 kHz: the prediction error filter of A4 nulls its harmonics from 1320 Hz up and leaves
    440 and 880 Hz, which the full set nulls too."""
    rate, order = 8000, 128
    k = harmonic_kernel(order, rate, 1.0, 1.0, lowest_hz=1000.0)
    assert k[69, 0] == pytest.approx(sum(h ** -2.0 for h in range(3, 9)))  # 1320 .. 3520 Hz
    roll = roll_of({69: 0.8}, 2)

    def error_gain_db(st: ScoreTaps, hz: float) -> float:  # |1 - sum c_i e^{-j w i}| in dB
        taps, _ = st.sample_taps(roll, None, 0, 1, 1, torch.float64)
        c = taps[0, 0].numpy()
        w = 2 * np.pi * hz / rate
        return 20 * np.log10(abs(1 - np.sum(c * np.exp(-1j * w * np.arange(1, order + 1)))))

    high, full = ScoreTaps(order, rate, 100, lowest_hz=1000.0), ScoreTaps(order, rate, 100)
    assert error_gain_db(high, 1320.0) < -15 and error_gain_db(full, 1320.0) < -15
    assert error_gain_db(full, 440.0) < -15 and error_gain_db(full, 880.0) < -15
    assert error_gain_db(high, 440.0) > -3 and error_gain_db(high, 880.0) > -3


def chord_codes(n: int, chord: dict[int, float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mu-law codes (1, n) of a chord with random harmonic phases and amplitudes, and its roll."""
    from pipeline.corpus.audio import mulaw_encode

    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = np.zeros(n)
    for p in chord:
        f0 = 440.0 * 2 ** ((p - 69) / 12)
        for h in range(1, int(900 / f0) + 1):
            x += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
    x = 0.6 * x / np.abs(x).max() + 0.003 * rng.standard_normal(n)
    return torch.tensor(mulaw_encode(x, 8), dtype=torch.int64)[None], roll_of(chord, n * FPS // RATE)


def test_stage_with_score_taps_codes_a_chord_in_fewer_bits():
    """Stage 0's global taps fitted on one chord; on another chord, the score taps from the roll
    predict it, and dropping the roll (the "without roll" ablation) falls back to the global taps."""
    from models.predictor import lstsq_init

    torch.manual_seed(0)
    cfg = small_cfg(rate=RATE, use_roll=True, linear_order=32, adaptive_scale=True, score={"enabled": True})
    st = Stage(cfg, index=0, n_genres=GENRES, roll_fps=FPS, classes=256).eval()
    fit, _ = chord_codes(6000, {55: 0.7, 62: 0.6, 67: 0.8})
    lstsq_init(st, [fit[0].numpy()])
    x, roll = chord_codes(6000, {57: 0.7, 60: 0.6, 64: 0.8}, seed=1)
    with torch.no_grad():
        lp = lambda drop: torch.log_softmax(st(x, roll=roll, drop_roll=drop), 1)  # noqa: E731
        bits = {d: float(-lp(torch.tensor([d])).gather(1, x[:, None]).mean() / np.log(2)) for d in (False, True)}
    assert bits[False] < bits[True] - 0.5, bits


def test_fine_stage_predicts_the_harmonics_its_tier_below_cannot_hold():
    """Stage 1 (8 kHz over a 2 kHz tier) with score taps on its linear part's residual: a chord whose
    harmonics reach 3.5 kHz, most of them above the tier below's Nyquist.  Fitted by least squares
    on one chord and scored on another, the roll saves bits; dropped, the residual taps are off."""
    import librosa

    from models.predictor import lstsq_init
    from pipeline.corpus.audio import mulaw_encode

    rate, factor = 8000, 4

    def piece(chord: dict[int, float], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        n = 16000
        t = np.arange(n) / rate
        x = np.zeros(n)
        for p in chord:
            f0 = 440.0 * 2 ** ((p - 69) / 12)
            for h in range(1, int(3500 / f0) + 1):
                x += rng.uniform(0.3, 1.0) / h ** 0.5 * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
        x = 0.6 * x / np.abs(x).max() + 0.002 * rng.standard_normal(n)
        below = librosa.resample(x, orig_sr=rate, target_sr=rate // factor)[: n // factor]
        codes = torch.tensor(mulaw_encode(x, 8), dtype=torch.int64)[None]
        below_codes = torch.tensor(mulaw_encode(np.clip(below, -1, 1), 8), dtype=torch.int64)[None]
        return codes, below_codes, roll_of(chord, n * FPS // rate)

    torch.manual_seed(0)
    cfg = small_cfg(rate=rate, use_roll=True, use_tier_below=True, linear_order=32, adaptive_scale=True,
                    score={"enabled": True, "order": 128})
    st = Stage(cfg, index=1, n_genres=GENRES, factor=factor, roll_fps=FPS, classes=256).eval()
    assert st.score_on_residual and st.score.order == 128
    fit, fit_below, _ = piece({55: 0.7, 62: 0.6, 67: 0.8}, 0)
    lstsq_init(st, [fit[0].numpy()], [fit_below[0].numpy()])
    x, below, roll = piece({57: 0.7, 60: 0.6, 64: 0.8}, 1)
    with torch.no_grad():
        def bits(drop: bool) -> float:
            lp = torch.log_softmax(st(x, below=below, roll=roll, drop_roll=torch.tensor([drop])), 1)
            return float(-lp.gather(1, x[:, None])[..., 1000:].mean() / np.log(2))
        with_roll, without = bits(False), bits(True)
    assert with_roll < without - 0.3, (with_roll, without)


def test_stage_zero_score_order_must_match_its_linear_order():
    cfg = small_cfg(rate=RATE, use_roll=True, linear_order=32, score={"enabled": True, "order": 64})
    with pytest.raises(ValueError, match="score.order 64 must equal linear_order 32"):
        Stage(cfg, index=0, n_genres=GENRES, roll_fps=FPS, classes=256)


def test_envelope_basis_splits_the_kernel_and_starts_at_the_fixed_taps():
    from models.score import envelope_basis

    k = harmonic_kernel(64, 8000, 1.0, 1.0, lowest_hz=1000.0)
    b = envelope_basis(64, 8000, 1.0, 1.0, 1000.0, knots=9)
    np.testing.assert_allclose(b.sum(0), k, rtol=0, atol=1e-12)
    fixed = ScoreTaps(64, 8000, FPS, lowest_hz=1000.0)
    timbre = ScoreTaps(64, 8000, FPS, lowest_hz=1000.0, timbre_knots=9, n_genres=2)
    roll = roll_of({60: 0.8, 64: 0.5, 67: 0.6}, 4)
    want, _ = fixed.sample_taps(roll, None, 0, 320, 1, torch.float64)
    got, _ = timbre.sample_taps(roll, None, 0, 320, 3, torch.float64, genre=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(got, want.expand(3, -1, -1), rtol=0, atol=1e-9)  # zero envelope: 1 / h
    with torch.no_grad():
        timbre.envelope[1, 4] = 0.5  # genre 1: +17 dB at the middle knot
    got, _ = timbre.sample_taps(roll, None, 0, 320, 3, torch.float64, genre=torch.tensor([0, 1, 2]))
    assert (got[1] - want[0]).abs().max() > 1e-2  # genre 1's taps change, the others' do not
    torch.testing.assert_close(got[[0, 2]], want.expand(2, -1, -1), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="2 or more"):
        envelope_basis(8, 8000, 1.0, 1.0, 0.0, knots=1)


def fit_per_genre(st: ScoreTaps, roll: torch.Tensor, audio: dict[int, torch.Tensor], n: int) -> None:
    """Train ``st``'s learned parameters (envelope, line width) by the taps' log prediction error on each genre's
    audio (genre id -> (1, n)), 60 Adam steps at lr 0.02, the first 100 samples of each left out."""
    opt = torch.optim.Adam(st.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        loss = 0.0
        for g, x in audio.items():
            taps, _ = st.sample_taps(roll, None, 0, n, 1, torch.float64, genre=torch.tensor([g]))
            u = torch.nn.functional.pad(x, (1, 0))[:, :-1]
            loss = loss + ((x - ScoreTaps.apply(u, taps))[:, 100:] ** 2).mean().log()
        loss.backward()
        opt.step()


def test_learned_envelope_hears_each_genres_timbre():
    """Two genres play the same notes with opposite timbres (bright: harmonics rising to 1 kHz; dark: falling
    fast).  Trained by the taps' prediction error alone, each genre's envelope tilts its own way."""
    rng = np.random.default_rng(0)
    n, knots = 4000, 6
    t = np.arange(n) / RATE
    chord = {45: 0.8, 52: 0.7}  # A2, E3: harmonics every 110 / 165 Hz up to 950 Hz
    roll = roll_of(chord, n * FPS // RATE)

    def play(power: float) -> torch.Tensor:
        x = np.zeros(n)
        for p in chord:
            f0 = 440.0 * 2 ** ((p - 69) / 12)
            for h in range(1, int(900 / f0) + 1):
                x += h ** power * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi))
        x = x / np.abs(x).max() + 0.01 * rng.standard_normal(n)
        return torch.tensor(x)[None]

    audio = {0: play(1.0), 1: play(-2.5)}  # genre 0 bright, genre 1 dark
    st = ScoreTaps(32, RATE, FPS, floor=1e-2, timbre_knots=knots, n_genres=2)
    fit_per_genre(st, roll, audio, n)
    db = st.envelope_db().numpy()  # (3, knots)
    tilt = db[:, -2] - db[:, 1]  # upper knot minus lower knot, dB
    assert tilt[0] > tilt[1] + 6.0, db  # the bright genre's envelope rises against the dark one's
    assert np.all(db[2] == 0.0)  # "no genre" saw no audio: untouched
    shared = ScoreTaps(32, RATE, FPS, floor=1e-2, timbre_knots=knots, n_genres=2, per_genre=False)
    assert shared.envelope.shape == (1, knots)
    with torch.no_grad():
        shared.envelope.copy_(st.envelope[:1])  # the bright genre's envelope, for every genre
    bright, _ = st.sample_taps(roll, None, 0, 200, 1, torch.float64, genre=torch.tensor([0]))
    for g in (0, 1, None):
        ids = None if g is None else torch.tensor([g])
        got, _ = shared.sample_taps(roll, None, 0, 200, 1, torch.float64, genre=ids)
        torch.testing.assert_close(got, bright, rtol=0, atol=1e-12)


def test_learned_line_width_hears_each_genres_vibrato():
    """Two genres play the same notes, one with a 6 Hz vibrato of a third of a semitone (its partials spread over tens
    of Hz), one steady.  Trained by the taps' prediction error alone, the vibrato genre's lines widen past the steady
    genre's; "no genre" saw no audio and keeps the start's width; at the start the taps are the fixed ones."""
    rng = np.random.default_rng(0)
    n = 6000
    t = np.arange(n) / RATE
    chord = {57: 0.8, 64: 0.7}  # A3, E4
    roll = roll_of(chord, n * FPS // RATE)
    fixed = ScoreTaps(32, RATE, FPS, floor=1e-2)
    st = ScoreTaps(32, RATE, FPS, floor=1e-2, n_genres=2, learned_bandwidth=True)
    for g in (0, 1, None):
        ids = None if g is None else torch.tensor([g])
        torch.testing.assert_close(st.sample_taps(roll, None, 0, 200, 1, torch.float64, genre=ids)[0],
                                   fixed.sample_taps(roll, None, 0, 200, 1, torch.float64)[0], rtol=0, atol=1e-9)

    def play(depth_semitones: float) -> torch.Tensor:
        x = np.zeros(n)
        for p in chord:
            f0 = 440.0 * 2 ** ((p - 69) / 12)
            for h in range(1, int(900 / f0) + 1):
                f = h * f0 * 2 ** (depth_semitones / 12 * np.sin(2 * np.pi * 6.0 * t))  # instantaneous Hz
                x += np.sin(2 * np.pi * np.cumsum(f) / RATE + rng.uniform(0, 2 * np.pi)) / h
        return torch.tensor(x / np.abs(x).max() + 0.003 * rng.standard_normal(n))[None]

    audio = {0: play(0.33), 1: play(0.0)}
    fit_per_genre(st, roll, audio, n)
    width = st.line_width_hz().numpy()  # (3,) Hz
    assert width[0] > 2.0 * width[1], width  # the vibrato genre's lines at least twice as wide
    assert width[2] == pytest.approx(1.0, abs=1e-12)  # "no genre": untouched
    with pytest.raises(ValueError, match="bandwidth_hz > 0"):
        ScoreTaps(32, RATE, FPS, bandwidth_hz=0.0, learned_bandwidth=True)


def test_a_stage_that_does_not_read_the_genre_keeps_to_its_no_genre_timbre():
    """Trained on the "no genre" row alone, such a stage must sample with it whatever genre the cascade passes."""
    cfg = small_cfg(rate=RATE, use_roll=True, use_genre=False, linear_order=32, adaptive_scale=True,
                    score={"enabled": True, "timbre_knots": 4})
    st = Stage(cfg, index=0, n_genres=GENRES, roll_fps=FPS, classes=256).eval()
    with torch.no_grad():
        st.score.envelope.normal_(0, 0.3)  # every row different
    x, roll = chord_codes(600, {57: 0.7, 64: 0.6})
    with torch.no_grad():
        out = {g: st(x, roll=roll, genre=g) for g in (None, 0, 1)}
    assert torch.equal(out[0], out[None]) and torch.equal(out[1], out[None])
    assert torch.equal(st.timbre_ids(torch.tensor([0, 1]), 2, "cpu"), torch.full((2,), GENRES))
