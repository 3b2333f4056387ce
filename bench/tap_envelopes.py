"""Do the score taps need the instrument's timbre?  Fixed 1/h harmonics against envelopes fitted per genre.

The score taps (``models/score.py``) give harmonic h of every sounding note the weight h^-2 (power) in the
autocorrelation that Levinson-Durbin turns into taps.  Issue 21's "learned timbre" lever would set those
weights from the instrument's spectral envelope instead.  Before building it, this measures what the
weights are worth where it matters, the taps' prediction gain on held-out audio:

- per genre, a spectral envelope E(band) fitted on the training split: the audio's band power (quarter
  octaves) over the power a unit-weight harmonic model of the roll puts there, summed over frames with notes;
- taps for each roll frame of the test split from (a) the 1/h rolloff, (b) the envelope of all genres,
  (c) the genre's own envelope; the prediction gain 10 log10(sum x^2 / sum e^2) over the samples of frames
  with notes, the taps alone (no network, no own-past path), at each ``--rate``.

    python bench/tap_envelopes.py --data demo_final/data --json docs/results/tap_envelopes.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)

FPS = 100
BANDS_PER_OCTAVE = 4
LOWEST_HZ = 20.0
FLOOR = 1e-3  # the score taps' white floor (models/config.py ScoreConfig.floor)
BANDWIDTH_HZ = 1.0


class Harmonics:
    """Every MIDI pitch's harmonics below 0.95 Nyquist at ``rate``, and the quarter-octave band of each."""

    def __init__(self, rate: int):
        from models.score import N_PITCHES

        self.rate = rate
        nyquist = 0.95 * rate / 2
        f0 = 440.0 * 2.0 ** ((np.arange(N_PITCHES) - 69) / 12.0)
        self.edges = np.geomspace(LOWEST_HZ, nyquist, int(np.log2(nyquist / LOWEST_HZ) * BANDS_PER_OCTAVE) + 1)
        self.n_bands = len(self.edges) - 1
        h = np.arange(1, int(nyquist / f0.min()) + 2)
        self.freq = h[None, :] * f0[:, None]  # (128, H)
        self.number = np.broadcast_to(h[None, :], self.freq.shape)
        self.band = np.searchsorted(self.edges, self.freq) - 1
        self.valid = (self.freq < nyquist) & (self.band >= 0) & (self.band < self.n_bands)
        self.count = np.zeros((N_PITCHES, self.n_bands))  # harmonics of pitch p in band b
        for p in range(N_PITCHES):
            np.add.at(self.count[p], self.band[p][self.valid[p]], 1)

    def kernel(self, power: np.ndarray, order: int) -> np.ndarray:
        """(128, order + 1): the lag-windowed autocorrelation of each pitch's harmonics with ``power`` (128, H)."""
        lag = np.arange(order + 1)
        k = np.zeros((self.freq.shape[0], order + 1))
        for j in range(self.freq.shape[1]):
            ok = self.valid[:, j]
            k[ok] += power[ok, j, None] * np.cos(2 * np.pi * self.freq[ok, j, None] * lag / self.rate)
        return k * np.exp(-0.5 * (2 * np.pi * BANDWIDTH_HZ * lag / self.rate) ** 2)

    def envelope_power(self, envelope: np.ndarray) -> np.ndarray:
        """(128, H): each harmonic's power read from a band envelope (n_bands,)."""
        w = np.zeros(self.freq.shape)
        w[self.valid] = envelope[self.band[self.valid]]
        return w


def track(data: Path, t: dict, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(x float64 (N,), note velocities (128, F) in [0, 1]) of a track at ``rate``."""
    from models.roll import roll_input
    from models.score import N_PITCHES
    from pipeline.corpus.audio import mulaw_decode
    from pipeline.io import load_npy

    x = mulaw_decode(load_npy(data / t["tiers"][str(rate)])).astype(np.float64)
    return x, roll_input(load_npy(data / t["roll"]))[:N_PITCHES].astype(np.float64)


def band_power(x: np.ndarray, hm: Harmonics) -> np.ndarray:
    """(F, n_bands): power per band of Hann frames centred on each roll frame."""
    hop = hm.rate // FPS
    n_fft = 32 * hop
    frames = len(x) // hop
    xp = np.pad(x, (n_fft // 2, n_fft // 2))
    idx = np.arange(frames) * hop + hop // 2
    spec = np.abs(np.fft.rfft(np.stack([xp[i:i + n_fft] for i in idx]) * np.hanning(n_fft), axis=1)) ** 2
    b = np.searchsorted(hm.edges, np.fft.rfftfreq(n_fft, 1 / hm.rate)) - 1
    return np.stack([spec[:, b == k].sum(1) for k in range(hm.n_bands)], axis=1)


def fit_envelopes(data: Path, manifest: dict, hm: Harmonics) -> tuple[np.ndarray, np.ndarray]:
    """Per genre and pooled: band envelopes (G, n_bands), (n_bands,) from the training split."""
    genres = manifest["genres"]
    num, den = np.zeros((len(genres), hm.n_bands)), np.zeros((len(genres), hm.n_bands))
    for t in manifest["tracks"]:
        if t["split"] != "train" or not t.get("roll"):
            continue
        x, v = track(data, t, hm.rate)
        bp = band_power(x, hm)
        f = min(len(bp), v.shape[1])
        model = (v[:, :f] ** 2).T @ hm.count  # (F, n_bands): unit-weight harmonics
        on = model.sum(1) > 0
        g = genres.index(t["genre"])
        num[g] += bp[:f][on].sum(0)
        den[g] += model[on].sum(0)
    return num / np.maximum(den, 1e-12), num.sum(0) / np.maximum(den.sum(0), 1e-12)


def prediction_gain(x: np.ndarray, v: np.ndarray, kernel: np.ndarray, order: int, rate: int) -> tuple[float, float]:
    """(sum e^2, sum x^2) over the samples of frames with notes, e the taps' prediction error."""
    import torch

    from models.score import levinson

    hop = rate // FPS
    f = min(len(x) // hop, v.shape[1])
    r = (v[:, :f] ** 2).T @ kernel  # (F, order + 1)
    on = r[:, 0] > 0
    rr = torch.tensor(r)
    rr[:, 0] = rr[:, 0] * (1 + FLOOR) + 1e-12
    taps = levinson(rr, order).numpy()
    lagged = np.lib.stride_tricks.sliding_window_view(np.pad(x, (order, 0)), order)[:-1, ::-1]  # (N, P): x[t-1..]
    err = sig = 0.0
    for g in np.nonzero(on)[0]:
        t0, t1 = g * hop, (g + 1) * hop
        e = x[t0:t1] - lagged[t0:t1] @ taps[g]
        err += float(e @ e)
        sig += float(x[t0:t1] @ x[t0:t1])
    return err, sig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--rate", type=int, action="append", default=None, help="tier rates (default 2000 and 8000)")
    ap.add_argument("--order", type=int, default=128)
    a = ap.parse_args(argv)
    import torch

    from pipeline.corpus.dataset import load_manifest

    torch.set_num_threads(1)
    t0 = time.time()
    data = Path(a.data)
    manifest = load_manifest(data)
    genres = manifest["genres"]
    results = {}
    for rate in a.rate or [2000, 8000]:
        hm = Harmonics(rate)
        per_genre, pooled = fit_envelopes(data, manifest, hm)
        kernels = {"rolloff 1/h": lambda g: hm.kernel(hm.number ** -2.0, a.order),
                   "envelope, all genres": lambda g: hm.kernel(hm.envelope_power(pooled), a.order),
                   "envelope of the genre": lambda g: hm.kernel(hm.envelope_power(per_genre[g]), a.order)}
        cache: dict = {}
        sums = {name: {} for name in kernels}
        for t in manifest["tracks"]:
            if t["split"] != "test" or not t.get("roll"):
                continue
            x, v = track(data, t, rate)
            g = genres.index(t["genre"])
            for name, make in kernels.items():
                key = (name, g if name == "envelope of the genre" else None)
                if key not in cache:
                    cache[key] = make(g)
                e, s = prediction_gain(x, v, cache[key], a.order, rate)
                acc = sums[name].setdefault(t["genre"], [0.0, 0.0])
                acc[0] += e
                acc[1] += s
        env_db = {genres[g]: np.round(10 * np.log10(per_genre[g] / max(per_genre[g].max(), 1e-300) + 1e-12), 1).tolist()
                  for g in range(len(genres))}
        results[str(rate)] = {
            "band_edges_hz": np.round(hm.edges, 1).tolist(), "envelopes_db": env_db,
            "prediction_gain_db": {name: {gn: round(10 * np.log10(s / e), 2) for gn, (e, s) in per.items()}
                                   for name, per in sums.items()}}
        for name, per in results[str(rate)]["prediction_gain_db"].items():
            per["mean"] = round(float(np.mean(list(per.values()))), 2)
        print(rate, results[str(rate)]["prediction_gain_db"], flush=True)
    out = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "order": a.order,
           "rates": results, "wall_seconds": round(time.time() - t0, 1)}
    from pipeline.io import atomic_write_json

    atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
