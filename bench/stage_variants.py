"""What each fine stage decides: the cascade with one fine stage replaced (``bench/quality.py``).

For one plan and seed the model's cascade runs once; then, for each fine stage k, the tier it
would write is made instead by

- ``upsampled``: the tier below decoded, band-limited resampled to stage k's rate and re-encoded
  (what the cascade would hold if stage k added nothing);
- ``linear``: stage k's linear path alone (models/predictor.py: own-past and tier-below taps, the
  mu and scale biases, the adaptive scale; no network term), sampled as the stage samples (its
  temperature, top-p and tier prior);

and the stages above it run as usual.  Every stage draws from a generator seeded with
``seed + k``, so a stage given the same tier below writes the same samples in every variant.
"""

from __future__ import annotations

import math

import numpy as np


def upsampled_codes(below: np.ndarray, below_rate: int, rate: int, bits: int) -> np.ndarray:
    """Tier-below codes (m,) -> codes (m * rate / below_rate,) of its band-limited interpolation."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    from pipeline.corpus.audio import mulaw_decode, mulaw_encode, resample

    up = resample(mulaw_decode(np.asarray(below), bits), below_rate, rate)
    return mulaw_encode(up, bits).astype(np.int64)


def linear_path_codes(stage, below: np.ndarray | None, n: int, *, temperature: float, top_p: float,
                      tier_prior: float, seed: int) -> np.ndarray:
    """``n`` samples (int64 codes) of the stage's linear path alone (see the module docstring):
    mu(t) = sum_i a_i dec(x[t-i]) + below taps + mu bias, scale exp(log_s bias) (times the
    adaptive window of recent |residuals| when the stage has one), bin probabilities of the
    discretized logistic mixed with the uniform share, the tier prior, temperature and top-p.
    ValueError for a stage without a linear path."""
    # local: keeps scipy, torch out of the script's start-up (--help, bad arguments)
    import torch
    from scipy.special import expit

    from models.predictor import ADAPT_FLOOR, LOG_S_MAX, LOG_S_MIN, UNIFORM_MIX
    from models.sampling import prior_band, prior_scale

    lin = getattr(stage, "linear", None)
    if lin is None:
        raise ValueError(f"stage {getattr(stage, 'index', '?')}: no linear path (linear_order = 0 or not categorical)")
    classes, order = lin.classes, lin.order
    values = lin.decode_table.double().numpy()[:classes]  # (C,)
    mid = (values[1:] + values[:-1]) / 2.0  # (C - 1,) interior bin edges
    past = lin.past_weight.detach().double().numpy()  # (P,) a_1..a_P
    below_t = None if below is None else torch.as_tensor(np.asarray(below, np.int64))[None]  # (1, m)
    with torch.no_grad():
        part = lin.below_part(below_t, None, 0, -(-n // lin.factor), 1)
        if part is None and lin.fallback_weight is not None:  # no tier below: the fallback taps
            past = lin.fallback_weight.detach().double().numpy()
        bias = stage.lin_out.bias.detach().double().numpy()
    below_mu = np.zeros(n) if part is None else part[0, :n].double().numpy()  # (n,)
    mu_bias, log_s_bias = float(bias[0]), float(np.clip(bias[1], LOG_S_MIN, LOG_S_MAX))
    scale = prior_scale(stage, below_t, tier_prior)
    band = prior_band(below_t, stage.factor, classes, 0, n)[0].double().numpy() if scale else None  # (n,)
    adapt = lin.adapt_weight.double().numpy() if lin.adaptive else None  # (L,) w_1..w_L
    taps = 0 if adapt is None else adapt.shape[0]
    rng = np.random.default_rng(seed)
    y = np.zeros(order + n)  # decoded samples, zeros (silence) before the start
    r_abs = np.zeros(taps + n)  # |residuals| of the linear part, zeros before the start
    codes = np.zeros(n, np.int64)
    log_mix, log_uniform = math.log1p(-UNIFORM_MIX), math.log(UNIFORM_MIX / classes)
    for t in range(n):
        mu = float(past @ y[t + order - 1::-1][:order]) + below_mu[t] + mu_bias  # y[order + t - i], i = 1..P
        log_s = log_s_bias
        if adapt is not None:
            s_adapt = ADAPT_FLOOR + float(adapt @ r_abs[t + taps - 1::-1][:taps])  # |r(t - i)|, i = 1..L
            log_s = float(np.clip(math.log(s_adapt) + log_s_bias, LOG_S_MIN, LOG_S_MAX))
        cdf = expit((mid - mu) / math.exp(log_s))  # (C - 1,)
        p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))  # (C,)
        logits = np.logaddexp(np.log(np.maximum(p, 1e-300)) + log_mix, log_uniform)
        if band is not None:
            logits = logits - scale * (values - band[t]) ** 2
        c = _draw(logits, temperature, top_p, rng.random())
        codes[t] = c
        y[order + t] = values[c]
        if adapt is not None:
            r_abs[taps + t] = abs(values[c] - mu)
    return codes


def _draw(logits: np.ndarray, temperature: float, top_p: float, u: float) -> int:
    """Inverse-CDF draw as ``models.heads.inverse_cdf`` (top-p over the most likely classes)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    p = np.exp((logits - logits.max()) / temperature)
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]
        keep = np.zeros(p.shape, bool)
        keep[order[before < top_p * p.sum()]] = True
        keep[order[0]] = True
        p = np.where(keep, p, 0.0)
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), np.flatnonzero(p)[-1]))


def cascade_variants(run, plan, p) -> dict[str, dict]:
    """``{"stage0": ..., "model": ..., "stage<k>_upsampled": ..., "stage<k>_linear": ...}``, each
    ``{"rate", "audio"}`` (float32 audio; at the finest rate but for "stage0", the coarse tier) or
    ``{"skipped": reason}``; ``plan`` must have a fixed length."""
    # local: keeps torch out of the script's start-up (--help, bad arguments)
    import torch

    from pipeline.corpus.audio import mulaw_decode
    from pipeline.generation.generate import _as_codes, run_stage, stage_inputs, stage_temperature

    if plan.free_length:
        raise ValueError("cascade_variants: the plan must have a fixed length (give seconds)")
    cfg, rates, bits = run.cfg, run.rates, run.cfg.data.mu_bits
    ns = [plan.n0 * r // rates[0] for r in rates]

    def model_stage(k: int, below: np.ndarray | None) -> np.ndarray:
        kw = stage_inputs(run, plan, p, k, ns[k])
        b = None if below is None else torch.from_numpy(below)[None]  # (1, m)
        res = run_stage(run.stages[k], ns[k], 1, below=b, **kw, generator=torch.Generator().manual_seed(p.seed + k),
                        engine=p.engine)
        return _as_codes(res.x, run.stages[k], cfg)[0].numpy().astype(np.int64)

    if plan.resynth_tiers is not None:  # re-synthesis: stage 0's tier is the real audio's
        first = plan.resynth_tiers[rates[0]].astype(np.int64)
    else:
        first = model_stage(0, None)
    chain = [first]
    for k in range(1, len(rates)):
        chain.append(model_stage(k, chain[-1]))
    out = {"stage0": {"rate": rates[0], "audio": mulaw_decode(chain[0], bits)},
           "model": {"rate": rates[-1], "audio": mulaw_decode(chain[-1], bits)}}
    for j in range(1, len(rates)):
        for kind in ("upsampled", "linear"):
            if kind == "upsampled":
                codes = upsampled_codes(chain[j - 1], rates[j - 1], rates[j], bits)
            else:
                try:
                    codes = linear_path_codes(run.stages[j], chain[j - 1], ns[j],
                                              temperature=stage_temperature(run, p, j), top_p=p.top_p,
                                              tier_prior=p.tier_prior, seed=p.seed + j)
                except ValueError as e:
                    out[f"stage{j}_{kind}"] = {"skipped": str(e)}
                    continue
            for k in range(j + 1, len(rates)):
                codes = model_stage(k, codes)
            out[f"stage{j}_{kind}"] = {"rate": rates[-1], "audio": mulaw_decode(codes, bits)}
    return out
