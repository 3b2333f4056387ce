"""The timbre each stage learned: its score taps' spectral envelope per genre (``score.timbre_knots``).

For every stage of a run whose score taps have a learned envelope (``models/score.py``), the envelope in dB
at its knots, per genre and for "no genre".  With ``--measured`` (``bench/tap_envelopes.py``'s JSON: the
envelope of each genre's training audio, fitted per quarter-octave band against the roll) it also says
whether the stage learned the genres' differences: both envelopes are read at the bands inside the stage's
taps, each band's mean over the genres is taken out (what is left is how a genre differs from the others),
and the Pearson correlation of the learned against the measured differences is reported, over all
(genre, band) pairs, with the spread of each (standard deviation, dB).

    python bench/timbre_envelopes.py --run demo_sp/run_tb --measured docs/results/tap_envelopes.json \\
        --json docs/results/timbre_envelopes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, run_info  # noqa: E402  (bench/machine.py)


def learned_differences(learned_db: np.ndarray, hz: np.ndarray, measured_db: np.ndarray, edges: np.ndarray,
                        lowest_hz: float) -> dict:
    """Correlation of the learned (G, K) and measured (G, B) envelopes' differences between genres, at the
    measured bands' centres from ``lowest_hz`` up to the top knot."""
    centre = np.sqrt(edges[:-1] * edges[1:])
    use = (centre >= max(lowest_hz, hz[1])) & (centre <= hz[-1])
    if use.sum() < 2:
        return {"bands": int(use.sum()), "correlation": None}
    lrn = np.stack([np.interp(centre[use], hz, row) for row in learned_db])  # (G, B')
    mea = measured_db[:, use]
    lrn, mea = lrn - lrn.mean(0), mea - mea.mean(0)
    r = float(np.corrcoef(lrn.ravel(), mea.ravel())[0, 1])
    return {"bands": int(use.sum()), "correlation": round(r, 3), "learned_spread_db": round(float(lrn.std()), 2),
            "measured_spread_db": round(float(mea.std()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--measured", default=None, help="bench/tap_envelopes.py's JSON for the same corpus")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    from models.score import knot_frequencies
    from pipeline.run import load_run

    t0 = time.time()
    run = load_run(a.run, partial=True)
    measured = json.loads(Path(a.measured).read_text())["rates"] if a.measured else {}
    stages = {}
    for k, st in run.by_index().items():
        score = st.score
        if score is None or score.envelope is None:
            continue
        db = score.envelope_db().numpy()  # (G + 1, K)
        hz = knot_frequencies(score.rate, db.shape[1])
        names = [*run.genres, "no genre"] if score.per_genre else ["every genre"]
        out = {"rate": score.rate, "lowest_hz": float(run.cfg.stages[k].score.lowest_hz),
               "knots_hz": np.round(hz, 1).tolist(),
               "envelope_db": {n: np.round(row, 2).tolist() for n, row in zip(names, db)},
               "range_db": {n: round(float(np.ptp(row)), 2) for n, row in zip(names, db)}}
        m = measured.get(str(score.rate))
        if m is not None and score.per_genre and set(m["envelopes_db"]) == set(run.genres):
            mea = np.array([m["envelopes_db"][g] for g in run.genres])
            out["against_measured"] = learned_differences(db[:len(run.genres)], hz, mea,
                                                          np.array(m["band_edges_hz"]), out["lowest_hz"])
        stages[str(k)] = out
        print(k, out["range_db"], out.get("against_measured"), flush=True)
    if not stages:
        raise SystemExit(f"{a.run}: no stage has a learned timbre (score.timbre_knots)")
    res = {**run_info(argv and [sys.argv[0], *argv]), "machine": machine_info(), "stages": stages,
           "wall_seconds": round(time.time() - t0, 1)}
    from pipeline.io import atomic_write_json

    atomic_write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
