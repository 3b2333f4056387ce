"""Output distributions: categorical over mu-law classes, discretized mixture of logistics (16-bit)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN2 = math.log(2.0)
PCM_BINS = 65536  # 16-bit PCM: bin centres -1 + 2k/65535, k = 0..65535


class CategoricalHead(nn.Module):
    """Logits over ``classes`` (mu-law codes, + the end class when present)."""

    kind = "categorical"

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.channels = classes  # output channels of the stage

    def nll_bits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (B, C, T) logits, x (B, T) int64 -> (B, T) bits."""
        return F.cross_entropy(out.float(), x, reduction="none") / LN2

    def sample(self, out_t: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """out_t (B, C) logits -> (B,) int64 codes; temperature <= 0 or tiny top_p -> argmax."""
        logits = out_t.float()
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, dim=-1)  # (B, C)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each class
            keep = before < top_p
            keep[:, 0] = True
            sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
            pick = torch.multinomial(sorted_p, 1, generator=generator)  # (B, 1) in sorted order
            return order.gather(1, pick)[:, 0]
        return torch.multinomial(probs, 1, generator=generator)[:, 0]


def quantize_pcm(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> nearest 16-bit bin centre (float)."""
    k = torch.round((x.clamp(-1.0, 1.0) + 1.0) * ((PCM_BINS - 1) / 2))
    return k * (2.0 / (PCM_BINS - 1)) - 1.0


class LogisticMixtureHead(nn.Module):
    """Discretized mixture of ``mixtures`` logistics over 16-bit PCM (PixelCNN++ style).

    Output channels: [logits (M) | means (M) | log_scales (M)].  Edge bins extend to +-inf.
    """

    kind = "logistic_mixture"
    log_scale_min = -16.0

    def __init__(self, mixtures: int) -> None:
        super().__init__()
        self.mixtures = mixtures
        self.channels = 3 * mixtures

    def split(self, out: torch.Tensor, dim: int = 1):
        logits, means, log_scales = out.float().split(self.mixtures, dim=dim)
        return logits, means, log_scales.clamp(min=self.log_scale_min)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (B, 3M, T), x (B, T) float in [-1, 1] -> (B, T) natural log-probability of x's bin."""
        logits, means, log_scales = self.split(out)  # (B, M, T) each
        x = quantize_pcm(x.float()).unsqueeze(1)  # (B, 1, T)
        half = 1.0 / (PCM_BINS - 1)
        inv_s = torch.exp(-log_scales)
        a = (x - half - means) * inv_s  # standardized bin edges
        b = (x + half - means) * inv_s
        z = (x - means) * inv_s
        # interior, exact: log(sigmoid(b) - sigmoid(a)), mirrored to the negative side for accuracy
        flip = (a + b) > 0
        lo = torch.where(flip, -b, a)
        hi = torch.where(flip, -a, b)
        log_hi = F.logsigmoid(hi)
        diff = (F.logsigmoid(lo) - log_hi).clamp(max=-1e-12)
        exact = log_hi + torch.log(-torch.expm1(diff))
        # interior, narrow bin (width << scale): density at the centre times the width
        mid = z - 2.0 * F.softplus(z) - log_scales + math.log(2.0 * half)
        interior = torch.where((b - a) < 1e-2, mid, exact)
        left = F.logsigmoid(b)  # x = -1: (-inf, -1 + half]
        right = F.logsigmoid(-a)  # x = +1: [1 - half, inf)
        comp = torch.where(x <= -1.0 + half / 2, left, torch.where(x >= 1.0 - half / 2, right, interior))
        return torch.logsumexp(F.log_softmax(logits, dim=1) + comp, dim=1)

    def nll_bits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (B, 3M, T), x (B, T) float in [-1, 1] -> (B, T) bits."""
        return -self.log_prob(out, x) / LN2

    def sample(self, out_t: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """out_t (B, 3M) -> (B,) float on 16-bit bin centres.  Temperature scales the logistic
        scales and the mixture logits; top_p is ignored (continuous output)."""
        logits, means, log_scales = self.split(out_t, dim=-1)  # (B, M)
        t = max(float(temperature), 1e-6)
        k = torch.multinomial(torch.softmax(logits / t, dim=-1), 1, generator=generator)  # (B, 1)
        mu = means.gather(1, k)[:, 0]
        s = torch.exp(log_scales.gather(1, k)[:, 0]) * t
        u = torch.rand(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = u.clamp(1e-7, 1 - 1e-7)
        return quantize_pcm(mu + s * (torch.log(u) - torch.log1p(-u)))
