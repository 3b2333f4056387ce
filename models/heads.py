"""Output heads behind one interface and a registry (``HEADS``, ``register_head``).

A head owns everything that depends on what a stage's samples are: the stage's input layer
(``input_layer``, kept on the stage under ``input_key`` so weight files keep their names), how a
sample enters the network (``embed`` for the full pass, ``stream_input`` for the streaming
step), the value fed before the first sample (``start_value``), how dataset codes become model
samples and back (``codes_to_input``, ``input_to_codes``), output channels,
``nll_bits`` and ``sample``.  ``models/config.py`` asks the registry which heads exist and what
they allow (``end_class``, ``linear_path``).  Shipped: ``categorical`` (mu-law classes, the
default) and ``logistic_mixture`` (discretized mixture of logistics over 16-bit PCM).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.mulaw import mulaw_decode_torch, mulaw_encode_torch

LN2 = math.log(2.0)
PCM_BINS = 65536  # 16-bit PCM: bin centres -1 + 2k/65535, k = 0..65535

HEADS: dict[str, type[Head]] = {}


def register_head(cls: type[Head]) -> type[Head]:
    """Class decorator: make ``cls`` available as ``head: <cls.kind>`` in stage configs."""
    HEADS[cls.kind] = cls
    return cls


def head_class(kind: str) -> type[Head]:
    """The registered head called ``kind``; ValueError naming the known ones otherwise."""
    try:
        return HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown head {kind!r} (known: {', '.join(sorted(HEADS))})") from None


def make_head(cfg: Any, classes: int) -> Head:
    """The head of a stage config (``cfg.head`` names it) over ``classes`` mu-law codes."""
    return head_class(cfg.head).from_config(cfg, classes)


class Head(nn.Module):
    """Interface of an output head (see the module docstring).  Subclasses set ``kind``."""

    kind = ""
    float_input = False  # the stage reads/writes floats (PCM) rather than int64 codes
    end_class = False  # may carry one extra "end of piece" class (config ``end_class``)
    linear_path = False  # may use the linear-prediction path (models/predictor.py)
    input_key = "embed"  # attribute of the stage holding ``input_layer`` (its state-dict prefix)
    uniforms = 0  # uniforms per sample that ``sample`` takes as ``u`` (0: it draws from the generator)
    channels: int  # output channels of the stage
    end_code: int | None = None

    @classmethod
    def from_config(cls, cfg: Any, classes: int) -> Head:
        raise NotImplementedError

    @property
    def start_value(self) -> int | float:
        """The sample fed as "previous sample" before the first one (silence)."""
        raise NotImplementedError

    def input_layer(self, channels: int) -> nn.Module:
        """The stage's input layer: a sample -> ``channels`` features."""
        raise NotImplementedError

    def embed(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) samples -> (B, T, R)."""
        raise NotImplementedError

    def stream_input(self, layer: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor], None]:
        """A lean step twin of ``embed``: f(x_prev (B,), out (B, R)) writes the features into ``out``."""
        raise NotImplementedError

    def input_macs(self, channels: int) -> int:
        """Multiply-adds of the input layer per sample."""
        return 0

    def start_like(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1) of the start value, x's dtype and device."""
        return torch.full_like(x[:, :1], self.start_value)

    def codes_to_input(self, codes: torch.Tensor, bits: int) -> torch.Tensor:
        """Dataset mu-law codes (B, T) int64 -> what the stage models (int64 codes by default)."""
        return codes

    def input_to_codes(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        """The stage's samples -> mu-law codes (a tier below for the next stage, a tier file)."""
        return x

    def nll_bits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (B, C, T), x (B, T) -> (B, T) bits."""
        raise NotImplementedError

    def sample(self, out_t: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
               generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        """out_t (B, C) -> (B,) samples (``u`` (B,): uniforms to draw from, where the head draws once)."""
        raise NotImplementedError


@register_head
class CategoricalHead(Head):
    """Logits over ``classes`` (mu-law codes, + the end class when present)."""

    kind = "categorical"
    end_class = True
    linear_path = True
    uniforms = 1

    def __init__(self, classes: int, end_code: int | None = None) -> None:
        super().__init__()
        self.classes = classes
        self.channels = classes  # output channels of the stage
        self.end_code = end_code
        self.silence = (classes if end_code is None else end_code) // 2

    @classmethod
    def from_config(cls, cfg: Any, classes: int) -> CategoricalHead:
        end = bool(cfg.end_class)
        return cls(classes + (1 if end else 0), end_code=classes if end else None)

    @property
    def start_value(self) -> int:
        return self.silence

    def input_layer(self, channels: int) -> nn.Module:
        return nn.Embedding(self.classes, channels)

    def embed(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer(x)

    def stream_input(self, layer: nn.Module, dtype: torch.dtype):
        w = layer.weight.detach()  # (classes, R)

        def step(x_prev: torch.Tensor, out: torch.Tensor) -> None:
            torch.index_select(w, 0, x_prev.long(), out=out)  # (B, R)

        return step

    def nll_bits(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out (B, C, T) logits, x (B, T) int64 -> (B, T) bits."""
        return F.cross_entropy(out.float(), x, reduction="none") / LN2

    def sample(self, out_t: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
               generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        """out_t (B, C) logits -> (B,) int64 codes, by inverse CDF (``inverse_cdf``) from the uniforms
        ``u`` (B,) float64 (the sampling loop's stream uniforms), else drawn from ``generator``;
        temperature <= 0 -> argmax."""
        logits = out_t.double()
        if temperature <= 0:
            return logits.argmax(-1)
        if u is None:
            u = torch.rand(logits.shape[0], generator=generator, dtype=torch.float64)  # (B,)
        return inverse_cdf(logits, temperature, top_p, u)


def inverse_cdf(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """logits (B, C) float64 (-inf: never), u (B,) in [0, 1) -> (B,) int64: the first class whose
    cumulative probability (class order) exceeds u.  top-p keeps the smallest set of the most likely
    classes whose mass before each member is < top_p.  models/fused_kernel.py ``_draw`` is the twin."""
    p = torch.exp((logits - logits.max(-1, keepdim=True).values) / temperature)  # (B, C) unnormalised
    if top_p < 1.0:
        sorted_p, order = p.sort(dim=-1, descending=True, stable=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each class
        keep_sorted = before < top_p * p.sum(-1, keepdim=True)
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        p = torch.where(keep, p, torch.zeros_like(p))
    cdf = p.cumsum(-1)  # (B, C)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]  # first cdf > u * total
    last = torch.where(p > 0, torch.arange(p.shape[1]), torch.zeros_like(pick[:, None])).max(-1).values
    return torch.minimum(pick, last)


def quantize_pcm(x: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> nearest 16-bit bin centre (float)."""
    k = torch.round((x.clamp(-1.0, 1.0) + 1.0) * ((PCM_BINS - 1) / 2))
    return k * (2.0 / (PCM_BINS - 1)) - 1.0


@register_head
class LogisticMixtureHead(Head):
    """Discretized mixture of ``mixtures`` logistics over 16-bit PCM (PixelCNN++ style).

    Output channels: [logits (M) | means (M) | log_scales (M)].  Edge bins extend to +-inf.
    The stage reads and writes PCM floats in [-1, 1]; its input layer is a 1 -> R projection.
    """

    kind = "logistic_mixture"
    float_input = True
    input_key = "input_proj"
    uniforms = 2  # the component, then the logistic
    log_scale_min = -16.0

    def __init__(self, mixtures: int) -> None:
        super().__init__()
        self.mixtures = mixtures
        self.channels = 3 * mixtures

    @classmethod
    def from_config(cls, cfg: Any, classes: int) -> LogisticMixtureHead:
        return cls(int(cfg.mixtures))

    @property
    def start_value(self) -> float:
        return 0.0  # PCM value 0

    def input_layer(self, channels: int) -> nn.Module:
        return nn.Linear(1, channels)

    def embed(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer(x.float().unsqueeze(-1))

    def stream_input(self, layer: nn.Module, dtype: torch.dtype):
        w = layer.weight.detach().t().contiguous()  # (1, R)
        b = layer.bias.detach()

        def step(x_prev: torch.Tensor, out: torch.Tensor) -> None:
            torch.addmm(b, x_prev.to(dtype).view(-1, 1), w, out=out)  # (B, R)

        return step

    def input_macs(self, channels: int) -> int:
        return channels

    def start_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1])

    def codes_to_input(self, codes: torch.Tensor, bits: int) -> torch.Tensor:
        """Mu-law codes -> PCM floats in [-1, 1] (float32)."""
        return mulaw_decode_torch(codes, bits)

    def input_to_codes(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        return x if x.dtype == torch.int64 else mulaw_encode_torch(x, bits)

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
               generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
        """out_t (B, 3M) -> (B,) float on 16-bit bin centres.  Temperature scales the logistic scales
        and the mixture logits; top_p is ignored (continuous output).  ``u`` (B, 2): the uniforms of the
        component and of the logistic (else both are drawn from ``generator``)."""
        logits, means, log_scales = self.split(out_t, dim=-1)  # (B, M)
        t = max(float(temperature), 1e-6)
        if u is not None:  # (B, 2) uniforms: inverse CDF, then the logistic, in float64 (the fused twin)
            k = inverse_cdf(logits.double(), t, 1.0, u[:, 0])[:, None]  # (B, 1)
            s = torch.exp(log_scales.double().gather(1, k)[:, 0]) * t
            uu = u[:, 1].clamp(1e-7, 1 - 1e-7)
            v = means.double().gather(1, k)[:, 0] + s * (torch.log(uu) - torch.log1p(-uu))
            return quantize_pcm(v).float()
        k = torch.multinomial(torch.softmax(logits / t, dim=-1), 1, generator=generator)  # (B, 1)
        mu = means.gather(1, k)[:, 0]
        s = torch.exp(log_scales.gather(1, k)[:, 0]) * t
        u = torch.rand(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = u.clamp(1e-7, 1 - 1e-7)
        return quantize_pcm(mu + s * (torch.log(u) - torch.log1p(-u)))
