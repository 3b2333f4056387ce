"""Compile and cache the numba code Strata runs, once, in one process (``make install`` runs it).

numba caches compiled functions beside their source, one file per signature and an index per
function.  Processes that compile the same function for the first time at once can each number
the signatures their own way, and the index then points a signature at another one's machine
code: seen here as a segfault in ``librosa.util.localmax`` (chroma diagnostics) after several
``strata`` processes had started on a fresh install at the same moment.  Compiling everything
here first leaves nothing for concurrent processes to write.

    python -m pipeline.warm
"""

from __future__ import annotations

import time

import numpy as np

# librosa's modules with numba code (grep of librosa 0.11 for numba decorators)
LIBROSA_NUMBA = ("librosa.util.matching", "librosa.util.utils", "librosa.filters", "librosa.feature.utils",
                 "librosa.sequence", "librosa.beat", "librosa.core.notation", "librosa.core.audio",
                 "librosa.core.pitch", "librosa.core.spectrum", "librosa.core.constantq")


def warm() -> dict[str, float]:
    """Import librosa's numba-compiled helpers (compiled at import), run the fused engine once and the score
    tier's step kernel; returns the seconds each took."""
    import importlib

    took = {}
    t = time.perf_counter()
    for module in LIBROSA_NUMBA:  # gufuncs with signature lists compile at import
        importlib.import_module(module)
    _warm_librosa_calls()  # jit functions compile at their first call, per argument types
    took["librosa"] = time.perf_counter() - t
    t = time.perf_counter()
    _warm_fused()
    took["fused engine"] = time.perf_counter() - t
    t = time.perf_counter()
    _warm_score_tier()
    took["score tier"] = time.perf_counter() - t
    return took


def _warm_librosa_calls() -> None:
    """The librosa paths Strata calls (resampling, chroma and CQT diagnostics, onsets), for float32
    and float64 audio."""
    import warnings

    # local: keeps librosa out of `import pipeline.warm` until this runs
    import librosa

    warnings.filterwarnings("ignore", message="n_fft=", category=UserWarning)  # a short test signal
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        y = (0.1 * rng.standard_normal(16000)).astype(dtype)
        librosa.feature.chroma_cqt(y=y, sr=16000)
        librosa.onset.onset_strength(y=y, sr=16000)
        librosa.resample(y, orig_sr=16000, target_sr=8000)


def _warm_fused() -> None:
    """One teacher-forced step of a tiny stage: compiles ``models.fused_kernel.run_steps``."""
    # local: keeps torch out of `import pipeline.warm` until this runs
    import torch

    from models import Conditioning, Stage, stage_arch
    from models.fused import FusedStream, unavailable

    cfg = stage_arch({"rate": 800, "residual_channels": 4, "gate_channels": 4, "skip_channels": 4,
                      "dilation_cycles": 1, "cycle_length": 2, "linear_order": 4, "adaptive_scale": True})
    stage = Stage(cfg, index=0, n_genres=1).eval()
    if unavailable(stage) is None:
        FusedStream(stage, 1, Conditioning()).logits(torch.zeros(1, 4, dtype=torch.int64))


def _warm_score_tier() -> None:
    """A few sampled events of a tiny score tier: compiles ``models.score_tier_kernel``'s step (one row and
    guidance's two)."""
    import torch

    from models.score_tier import ScoreTierConfig, ScoreTransformer

    cfg = ScoreTierConfig(vocab_size=8, n_genres=1, end_token=6, pad_token=7, n_layers=1, n_heads=1, width=8,
                          context=8, dropout=0.0)
    model = ScoreTransformer(cfg).eval()
    with torch.inference_mode():
        for guidance in (0.0, 1.0):
            # END held back (no music ever passes min_seconds): the steps after the prefill run the kernel
            model.generate(0, max_events=4, seed=0, guidance=guidance, seconds_of=lambda tok: 0.0, min_seconds=1.0)


def main() -> int:
    took = warm()
    print("numba caches ready: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
