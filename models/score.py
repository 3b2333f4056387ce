"""Score-informed linear prediction: per-frame predictor taps synthesised from the sounding notes.

A stage that reads the piano roll can predict its next sample with a linear predictor whose
poles sit at the harmonics of the notes sounding now (source-filter thinking, as in NSF/DDSP,
but phase-free).  For roll frame g with note velocities v_p in [0, 1] (0 = silent), the autocorrelation of
a harmonic excitation (harmonics h = 1, 2, ... of every sounding pitch below ``0.95 * rate / 2``,
amplitude ``h ** -rolloff``) is known in closed form, whatever the phases:

    r_g(tau) = sum_p v_p^2 * K[p, tau],   K[p, tau] = sum_h h^(-2 rolloff) cos(2 pi h f_p tau / rate)

times a Gaussian lag window (``bandwidth_hz``: widens each spectral line, tolerating detuning),
with ``floor`` of white noise added at lag 0.  Levinson-Durbin turns r_g into taps c_g (order P):
the prediction error filter then has zeros at the notes' harmonics, whatever their amplitudes
and phases in the real audio, and the synthesis filter driven by a small residual rings at them
(harmonic lines at the notes' pitches in generated audio).

Stage 0 blends them with its global own-past taps (``LinearPath``).  A stage with a tier below
already predicts the band the tier below holds; there the taps predict the residual of its linear
part from the past residuals (e[t] = dec(x[t]) - mu_lin[t]): the harmonics above the tier below's
Nyquist, which the tier below cannot hold, ring on in that residual (a pitch predictor after the
short-term one, as in CELP speech codecs).  See ``Stage.forward``.
The taps depend only on the roll (and, with a learned spectral envelope per genre, on the genre), so they are
computed for the whole piece or for any chunk alike (exact streaming).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from models.roll import PITCHES

N_PITCHES = PITCHES  # the roll's sounding layer: rows [0, N_PITCHES) of the stage's roll input
GATE_INIT = 1.0  # initial blend logit: sigmoid(1) = 0.73 of the score taps where notes sound
# initial share of the residual prediction in a stage with a tier below: sigmoid(0) = 0.5, near the
# best single gain measured on the demo's validation pieces at 8 kHz (0.53 at 128 taps)
RESIDUAL_GATE_INIT = 0.0
# the learned envelope's parameters are log powers / ENVELOPE_GAIN: Adam's steps of about the learning rate
# then move a knot by about 8 x lr in log power, so that a stage's few hundred steps can reshape it by dB
ENVELOPE_GAIN = 8.0


def top_hz(rate: int) -> float:
    """The highest frequency the taps ring at: 0.95 of the Nyquist frequency."""
    return 0.95 * rate / 2.0


def knot_frequencies(rate: int, knots: int) -> np.ndarray:
    """(knots,) Hz: the learned envelope's knots, evenly spaced from 0 to ``top_hz``."""
    return np.linspace(0.0, top_hz(rate), knots)


def _harmonics(rate: int, lowest_hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (pitch, harmonic) pair in the taps, as flat arrays (M,): MIDI pitch, harmonic number h = 1, 2, ..
    and frequency h f0 (Hz), for the harmonics from ``lowest_hz`` up to 0.95 of the Nyquist frequency; sorted
    by pitch, then h."""
    f0 = 440.0 * 2.0 ** ((np.arange(N_PITCHES) - 69) / 12.0)
    top = top_hz(rate)
    count = np.ceil(top / f0).astype(int) - 1  # (128,) harmonics h with h f0 < top
    pitch = np.repeat(np.arange(N_PITCHES), count)
    h = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + 1
    f = h * f0[pitch]
    keep = (f < top) & (f >= lowest_hz)
    return pitch[keep], h[keep], f[keep]


def _lag_window(order: int, rate: int, bandwidth_hz: float) -> np.ndarray:
    tau = np.arange(order + 1)
    return np.exp(-0.5 * (2.0 * np.pi * bandwidth_hz * tau / rate) ** 2)


def _sum_rows(index: np.ndarray, terms: np.ndarray, rows: int) -> np.ndarray:
    """(rows, L): the sum of ``terms`` (M, L) whose ``index`` (M,) is each row (np.add.at, by sorting)."""
    order = np.argsort(index, kind="stable")
    index, terms = index[order], terms[order]
    out = np.zeros((rows, terms.shape[1]))
    if len(index):
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        out[index[starts]] = np.add.reduceat(terms, starts, axis=0)
    return out


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=16)
def harmonic_kernel(order: int, rate: int, bandwidth_hz: float, rolloff: float, lowest_hz: float = 0.0) -> np.ndarray:
    """K (128, order + 1) float64, read-only (cached: every stage load asks again): lag-windowed autocorrelation
    of each MIDI pitch's harmonics (those from ``lowest_hz`` up)."""
    pitch, h, f = _harmonics(rate, lowest_hz)
    tau = np.arange(order + 1)
    terms = h[:, None] ** (-2.0 * rolloff) * np.cos(2.0 * np.pi * f[:, None] * tau / rate)  # (M, order + 1)
    return _read_only(_sum_rows(pitch, terms, N_PITCHES) * _lag_window(order, rate, bandwidth_hz))


@functools.lru_cache(maxsize=16)
def envelope_basis(order: int, rate: int, bandwidth_hz: float, rolloff: float, lowest_hz: float,
                   knots: int) -> np.ndarray:
    """B (knots, 128, order + 1) float64, read-only (cached): ``harmonic_kernel`` split among the
    ``knot_frequencies``, each harmonic's term shared between the two knots around it (linear interpolation), so
    that sum_n w_n B[n] is the kernel of harmonics whose power is multiplied by the spectral envelope through
    the knots' powers w_n, and sum_n B[n] = ``harmonic_kernel``."""
    if knots < 2:
        raise ValueError(f"envelope_basis: {knots} knots; need 2 or more")
    pitch, h, f = _harmonics(rate, lowest_hz)
    tau = np.arange(order + 1)
    pos = np.clip(f / top_hz(rate), 0.0, 1.0) * (knots - 1)  # (M,) fractional knot
    lo = np.minimum(pos.astype(int), knots - 2)
    frac = (pos - lo)[:, None]
    terms = h[:, None] ** (-2.0 * rolloff) * np.cos(2.0 * np.pi * f[:, None] * tau / rate)  # (M, order + 1)
    index = np.concatenate([lo * N_PITCHES + pitch, (lo + 1) * N_PITCHES + pitch])
    out = _sum_rows(index, np.concatenate([(1.0 - frac) * terms, frac * terms]), knots * N_PITCHES)
    return _read_only(out.reshape(knots, N_PITCHES, order + 1) * _lag_window(order, rate, bandwidth_hz))


def levinson(r: torch.Tensor, order: int) -> torch.Tensor:
    """Autocorrelations r (N, order + 1) -> taps a (N, order): x[t] ~ sum_i a[i-1] x[t-i].
    Out of place, so gradients flow to r (a learned spectral envelope)."""
    a = r.new_zeros(r.shape[0], 0)
    err = r[:, 0]
    for i in range(order):
        acc = r[:, i + 1] - (a * r[:, 1:i + 1].flip(1)).sum(1)
        k = acc / err.clamp_min(1e-12)
        a = torch.cat([a - k[:, None] * a.flip(1), k[:, None]], 1)
        err = err * (1.0 - k * k).clamp_min(1e-9)
    return a


class ScoreTaps(nn.Module):
    """Per-frame linear-prediction taps from the roll's note velocities.

    With ``timbre_knots`` > 0 the harmonics' powers are shaped by a learned spectral envelope per genre
    (row ``n_genres``: no genre; with ``per_genre`` false one row for all), through ``timbre_knots`` knots
    from 0 to the Nyquist frequency: the only parameters here, trained through Levinson-Durbin by the stage's
    loss; at zero (their start) the taps are the fixed ``h ** -rolloff`` ones.  Otherwise there are none.

    With ``crossfade_ms`` > 0 a frame's first ``fade`` samples (that many ms, at most a frame) mix the last frame's
    taps and mask with its own, the new frame's weight (p + 1) / (fade + 1) at its sample p: where the notes
    change, the taps do not switch at once (the new notes' taps applied to the old notes' past mispredict)."""

    def __init__(self, order: int, rate: int, roll_fps: int, bandwidth_hz: float = 1.0, floor: float = 1e-3,
                 rolloff: float = 1.0, lowest_hz: float = 0.0, timbre_knots: int = 0, n_genres: int = 0,
                 per_genre: bool = True, crossfade_ms: float = 0.0, learned_bandwidth: bool = False) -> None:
        super().__init__()
        if rate % roll_fps:
            raise ValueError(f"ScoreTaps: rate {rate} is not a multiple of roll_fps {roll_fps}")
        self.order, self.rate, self.roll_fps, self.floor = int(order), int(rate), int(roll_fps), float(floor)
        self.hop = self.rate // self.roll_fps  # stage samples per roll frame
        self.fade = min(int(round(float(crossfade_ms) * self.rate / 1000.0)), self.hop)  # samples; 0: switched
        self.n_genres = int(n_genres)
        self.per_genre = bool(per_genre)
        self.bandwidth_hz = float(bandwidth_hz)
        # a learned line width: the kernels without a lag window, each row's window applied in ``_kernels``
        window_hz = 0.0 if learned_bandwidth else self.bandwidth_hz
        if learned_bandwidth and not self.bandwidth_hz > 0:
            raise ValueError("ScoreTaps: a learned bandwidth starts from bandwidth_hz > 0")
        k = harmonic_kernel(self.order, self.rate, window_hz, float(rolloff), float(lowest_hz))
        self.kernel = torch.tensor(k, dtype=torch.float64)  # not a buffer: stays float64 under stage.to(dtype)
        rows = self.n_genres + 1 if self.per_genre else 1  # learned rows: per genre (row n_genres: no genre), or one
        self.envelope: nn.Parameter | None = None
        if timbre_knots:
            basis = envelope_basis(self.order, self.rate, window_hz, float(rolloff), float(lowest_hz),
                                   int(timbre_knots))
            self.basis = torch.tensor(basis, dtype=torch.float64)  # (N, 128, P + 1), not a buffer
            # log power at each knot / ENVELOPE_GAIN
            self.envelope = nn.Parameter(torch.zeros(rows, int(timbre_knots)))
        # log(line width / bandwidth_hz) / ENVELOPE_GAIN per row: how wide each partial is (a choir's chorus and
        # a violin's vibrato spread a partial over Hz, an organ's does not); None: bandwidth_hz for all
        self.line_width: nn.Parameter | None = nn.Parameter(torch.zeros(rows)) if learned_bandwidth else None

    @property
    def learned(self) -> bool:
        """Whether the taps have parameters (an envelope, a line width) that the stage's loss trains."""
        return self.envelope is not None or self.line_width is not None

    def line_width_hz(self) -> torch.Tensor:
        """The learned line width per row (n_genres + 1 or 1), Hz."""
        if self.line_width is None:
            raise ValueError("ScoreTaps: no learned line width (learned_bandwidth false)")
        return self.bandwidth_hz * torch.exp(ENVELOPE_GAIN * self.line_width.detach().double())

    def _rows(self, genre: torch.Tensor | None, device) -> torch.Tensor:
        """Learned rows (B,) for genre ids (B,) (None: the "no genre" row; one shared row without per_genre)."""
        ids = genre if genre is not None else torch.full((1,), self.n_genres, dtype=torch.long)
        if not self.per_genre:
            ids = torch.zeros_like(ids)
        return ids.to(device).long()

    def envelope_db(self) -> torch.Tensor:
        """The learned envelope in dB (n_genres + 1 or 1 shared row, knots): 10 log10 of each knot's power factor."""
        if self.envelope is None:
            raise ValueError("ScoreTaps: no learned envelope (timbre_knots 0)")
        return 10.0 / np.log(10.0) * ENVELOPE_GAIN * self.envelope.detach().double()

    def _kernels(self, genre: torch.Tensor | None, device) -> torch.Tensor:
        """(128, P + 1) without learned parameters, else (B, 128, P + 1) for genre ids (B,) (None: no genre)."""
        if not self.learned:
            return self.kernel.to(device)
        ids = self._rows(genre, device)
        if self.envelope is not None:
            w = torch.exp(ENVELOPE_GAIN * self.envelope.to(device, torch.float64))[ids]  # (B, N)
            kern = torch.einsum("bn,npk->bpk", w, self.basis.to(device))
        else:
            kern = self.kernel.to(device)[None]  # (1, 128, P + 1)
        if self.line_width is not None:  # each row's Gaussian lag window, as _lag_window
            width = self.bandwidth_hz * torch.exp(ENVELOPE_GAIN * self.line_width.to(device, torch.float64))[ids]
            tau = torch.arange(self.order + 1, device=device, dtype=torch.float64)
            window = torch.exp(-0.5 * (2.0 * np.pi * width[:, None] * tau / self.rate) ** 2)  # (B, P + 1)
            kern = kern * window[:, None, :]
        return kern

    def frame_taps(self, roll: torch.Tensor, genre: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """roll (B, 256, F) (velocities / 127 first, as the stage reads it), genre ids (B,) or None -> taps
        (B, F, P) float64, on (B, F) bool (notes sound).  A roll of batch 1 serves every genre row."""
        vel = roll[:, :N_PITCHES].to(torch.float64)  # (B, 128, F)
        kern = self._kernels(genre, vel.device)
        if kern.dim() == 2:
            r = torch.einsum("bpf,pk->bfk", vel * vel, kern)  # (B, F, P + 1), float64
        else:
            if vel.shape[0] != kern.shape[0]:
                vel = vel.expand(kern.shape[0], -1, -1)
            r = torch.einsum("bpf,bpk->bfk", vel * vel, kern)
        b, f = r.shape[:2]
        on = r[..., 0] > 0
        r = r.reshape(b * f, -1)
        r = torch.cat([r[:, :1] * (1.0 + self.floor) + 1e-12, r[:, 1:]], 1)
        taps = levinson(r, self.order).view(b, f, self.order)
        return torch.where(on[..., None], taps, torch.zeros_like(taps)), on

    def sample_taps(self, roll: torch.Tensor | None, drop: torch.Tensor | None, t0: int, t1: int,
                    batch: int, dtype, device=None, genre: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Taps and mask for stage samples [t0, t1): (B, T, P) and (B, T) float (1 = notes sound; between 0 and 1
        in a cross-fade, ``crossfade_ms``).

        Frames past the roll's end, a missing roll and dropped rows (drop (B,) bool) are off:
        zero taps, mask 0 (the stage then uses its global taps alone).  ``genre`` (B,) ids pick the
        learned rows (None: no genre).  Gradients flow only to the learned envelope and line width, when there are any.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.learned):
            return self._sample_taps(roll, drop, t0, t1, batch, dtype, device, genre)

    def _sample_taps(self, roll, drop, t0, t1, batch, dtype, device, genre):
        dev = device if device is not None else roll.device if roll is not None else torch.device("cpu")
        n = t1 - t0
        if roll is None or roll.shape[-1] == 0:
            return torch.zeros(batch, n, self.order, dtype=dtype, device=dev), torch.zeros(batch, n, dtype=dtype,
                                                                                           device=dev)
        g0, g1 = t0 // self.hop, -(-t1 // self.hop)
        lo = g0 - 1 if self.fade else g0  # with a crossfade, the frame before too (-1: before the roll, off)
        frames = roll.shape[-1]
        sub = roll[:, :, min(max(lo, 0), frames):min(g1, frames)].to(dev)
        taps, on = self.frame_taps(sub, genre)  # (B, G, P), (B, G)
        on = on.to(taps.dtype)
        if lo < 0:  # frame -1: off
            taps = torch.cat([taps.new_zeros(taps.shape[0], 1, self.order), taps], 1)
            on = torch.cat([on.new_zeros(on.shape[0], 1), on], 1)
        pad = (g1 - lo) - taps.shape[1]
        if pad > 0:  # past the roll's end: off
            taps = torch.cat([taps, taps.new_zeros(taps.shape[0], pad, self.order)], 1)
            on = torch.cat([on, on.new_zeros(on.shape[0], pad)], 1)
        t = torch.arange(t0, t1, device=dev)
        idx = t // self.hop - lo  # frame of each sample (>= 1 with a crossfade)
        taps_t, on_t = taps[:, idx], on[:, idx]
        if self.fade:  # the new frame's weight (p + 1) / (fade + 1) at its sample p < fade, then 1
            a = ((t % self.hop + 1).to(taps.dtype) / (self.fade + 1)).clamp(max=1.0)  # (T,)
            prev_taps, prev_on = taps[:, idx - 1], on[:, idx - 1]
            taps_t = prev_taps + a[:, None] * (taps_t - prev_taps)
            on_t = prev_on + a * (on_t - prev_on)
        taps, on = taps_t.to(dtype), on_t.to(dtype)
        if drop is not None:
            keep = (~drop.to(dev).bool()).to(dtype)[:, None]
            taps, on = taps * keep[..., None], on * keep
        return taps.expand(batch, -1, -1), on.expand(batch, -1)

    @staticmethod
    def apply(u: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        """u (B, T) = dec(shift(x)) (u[t] = dec(x[t-1])), taps (B, T, P) -> (B, T) sum_i c_i(t) dec(x[t-i])."""
        p = taps.shape[-1]
        lagged = torch.nn.functional.pad(u, (p - 1, 0)).unfold(-1, p, 1)  # (B, T, P): [..., k] = u[t-(P-1)+k]
        return (lagged * taps.flip(-1)).sum(-1)

