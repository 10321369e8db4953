"""Head ablations as forward hooks, so weights are never touched.

- zero: remove the head's output.
- mean: replace the head's output by its mean (per position) over a reference batch.
- pattern-preserving (Olsson et al. 2022): zero the head's output and force every head's attention
  pattern to the one recorded on the clean run, so only the head's direct and value-path
  contributions to later layers are removed (attention of later heads cannot re-route).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from icl_core import data
from icl_core.analysis.metrics import windowed_icl_score
from icl_core.heads import Head
from icl_core.model.family import Model
from icl_core.model.hooks import HookFn, HookPoint
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import pattern_name, per_token_loss, result_name


class AblationMode(StrEnum):
    """How a head is removed. A str, so stored results keyed by mode name and links (?mode=mean) read as before."""

    ZERO = "zero"
    MEAN = "mean"
    PATTERN_PRESERVING = "pattern-preserving"

    @property
    def label(self) -> str:
        return "pattern-preserving (the paper's)" if self is AblationMode.PATTERN_PRESERVING else self.value

    @property
    def help(self) -> str:
        return _MODE_HELP[self]


_MODE_HELP = {
    AblationMode.ZERO: "the head's output is replaced by zeros",
    AblationMode.MEAN: "the head's output is replaced by its average over held-out text (keeps its 'typical' "
    "contribution)",
    AblationMode.PATTERN_PRESERVING: "the head's output is zeroed and every other head keeps the attention pattern "
    "of the clean run, so later heads cannot re-route (Olsson et al.'s ablation)",
}
ABLATION_MODES = tuple(AblationMode)


def check_mode(mode: str) -> AblationMode:
    """The mode named, or ValueError naming the choices."""
    try:
        return AblationMode(mode)
    except ValueError:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {[m.value for m in AblationMode]}") from None


def _by_layer(heads: Iterable[Head]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        out.setdefault(int(layer), []).append(int(head))
    return out


def _replace_heads(head_ids: list[int], replacement: torch.Tensor | None) -> HookFn:
    def fn(result: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        result = result.clone()
        if replacement is None:
            result[:, :, head_ids] = 0.0
        else:
            n = result.shape[1]
            result[:, :, head_ids] = replacement[:n, head_ids].to(result.dtype)
        return result

    return fn


def zero_ablation_hooks(heads: Iterable[Head]) -> list[tuple[str, HookFn]]:
    return [(result_name(layer), _replace_heads(ids, None)) for layer, ids in _by_layer(heads).items()]


@torch.no_grad()
def head_output_means(model: Model, reference: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per layer, each head's output averaged over the reference batch: (pos, head, d_model)."""
    names = {result_name(layer) for layer in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(reference, names=names.__contains__)
    return {layer: cache[result_name(layer)].mean(dim=0) for layer in range(model.cfg.n_layers)}


def mean_ablation_hooks(heads: Iterable[Head], means: dict[int, torch.Tensor]) -> list[tuple[str, HookFn]]:
    return [(result_name(layer), _replace_heads(ids, means[layer])) for layer, ids in _by_layer(heads).items()]


@torch.no_grad()
def record_patterns(
    model: Model, tokens: torch.Tensor, layers: Sequence[int], dtype: torch.dtype = torch.float32
) -> dict[int, torch.Tensor]:
    """Clean attention patterns of the given layers: layer -> (batch, head, q, k)."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    names = {pattern_name(layer) for layer in layers}
    _, cache = model.run_with_cache(tokens, names=names.__contains__)
    return {layer: cache[pattern_name(layer)].to(dtype) for layer in layers}


def pattern_freezing_hooks(patterns: dict[int, torch.Tensor]) -> list[tuple[str, HookFn]]:
    """Force each given layer's patterns to the recorded ones: layer -> (batch, head, q, k)."""

    def make(pattern: torch.Tensor) -> HookFn:
        def fn(x: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            return pattern.to(x.dtype)

        return fn

    return [(pattern_name(layer), make(p)) for layer, p in patterns.items()]


def ablation_hooks(
    model: Model,
    tokens: torch.Tensor,
    heads: Iterable[Head],
    mode: AblationMode = AblationMode.ZERO,
    means: dict[int, torch.Tensor] | None = None,
    clean: dict[int, torch.Tensor] | None = None,
) -> list[tuple[str, HookFn]]:
    """The hooks that ablate `heads` on input `tokens` in the given mode.

    For pattern-preserving ablation, `clean` may hold patterns already recorded on these tokens
    (layer -> (batch, head, q, k)); otherwise they are recorded here.
    """
    heads = [(int(layer), int(head)) for layer, head in heads]
    mode = check_mode(mode)  # a plain string (a stored key, a link) is checked and becomes the enum
    if not heads:
        return []
    if mode == AblationMode.MEAN:
        if means is None:
            raise ValueError("mean ablation needs head_output_means(model, reference)")
        return mean_ablation_hooks(heads, means)
    hooks = zero_ablation_hooks(heads)
    if mode == AblationMode.PATTERN_PRESERVING:
        # Layers up to the first ablated one read the clean residual stream, so their patterns cannot
        # change: freezing only the later ones gives the same result for less work.
        later = list(range(min(layer for layer, _ in heads) + 1, model.cfg.n_layers))
        if later and not (clean is not None and all(layer in clean for layer in later)):
            clean = record_patterns(model, tokens, later)
        frozen = {layer: clean[layer] for layer in later} if clean is not None else {}  # None: no later layer
        hooks = pattern_freezing_hooks(frozen) + hooks
    return hooks


@torch.no_grad()
def run_ablated(
    model: Model,
    tokens: torch.Tensor,
    heads: Iterable[Head],
    mode: AblationMode = AblationMode.ZERO,
    means: dict[int, torch.Tensor] | None = None,
    clean: dict[int, torch.Tensor] | None = None,
    chunk: int = 8,
) -> torch.Tensor:
    """Logits of the model with `heads` ablated, `chunk` sequences at a time to bound pattern memory.

    clean: patterns already recorded on these tokens for pattern-preserving ablation (layer -> (batch, ...)).
    """
    if tokens.dim() == 1:
        tokens = tokens[None]
    heads = list(heads)
    out = []
    for i in range(0, len(tokens), chunk):
        part = tokens[i : i + chunk]
        part_clean = {layer: p[i : i + chunk] for layer, p in clean.items()} if clean else None
        out.append(model.run_with_hooks(part, ablation_hooks(model, part, heads, mode, means, part_clean)))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# Live ablation on small fixed probes (the Ablation page)


@dataclass(frozen=True)
class AblationProbes:
    repeated: torch.Tensor  # (n, 1 + 2 * half_len): random tokens, then the same tokens again
    half_len: int
    heldout: torch.Tensor  # (m, n_ctx): held-out text, for the in-context loss curve and ICL score


def make_probes(
    n_ctx: int, n_repeated: int = 8, half_len: int = 100, n_heldout: int = 16, tokenizer: Tokenizer = BYTES
) -> AblationProbes:
    """Small fixed batches, so an ablation can be measured live (a fraction of a second on a CPU)."""
    repeated, half = data.repeated_twice(n_ctx, n_repeated, half_len, tokenizer)
    heldout = data.heldout_examples(n_heldout, n_ctx, seed=data.LIVE_HELDOUT_SEED, tokenizer=tokenizer)
    return AblationProbes(repeated, half, heldout)


@dataclass(frozen=True)
class CleanPatterns:
    """Patterns of layers >= 1 on the ablation probes, recorded once per snapshot (fp16 halves the memory)."""

    repeated: dict[int, torch.Tensor]
    heldout: dict[int, torch.Tensor]


def record_probe_patterns(model: Model, probes: AblationProbes, chunk: int = 8) -> CleanPatterns:
    layers = list(range(1, model.cfg.n_layers))

    def rec(tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        parts = [
            record_patterns(model, tokens[i : i + chunk], layers, torch.float16) for i in range(0, len(tokens), chunk)
        ]
        return {layer: torch.cat([p[layer] for p in parts]) for layer in layers}

    return CleanPatterns(rec(probes.repeated), rec(probes.heldout)) if layers else CleanPatterns({}, {})


@dataclass(frozen=True)
class AblationEffect:
    first_half_loss: float  # repeated random tokens, first copy (cannot be predicted from context)
    second_half_loss: float  # second copy: an induction head predicts it from the first
    icl_score: float | None  # windowed estimate on the small held-out batch (metrics.windowed_icl_score)
    loss_curve: np.ndarray  # mean loss at each context position on the held-out batch


def ablation_effect(
    model: Model,
    heads: Sequence[Head],
    mode: AblationMode,
    probes: AblationProbes,
    means: dict[int, torch.Tensor] | None = None,
    clean: CleanPatterns | None = None,
) -> AblationEffect:
    """Loss on repeated random tokens (first vs second copy) and on held-out text with `heads` ablated."""
    logits = run_ablated(model, probes.repeated, heads, mode, means, clean.repeated if clean else None)
    rep = per_token_loss(logits, probes.repeated)
    h = probes.half_len
    # Loss index t predicts token t + 1; index h predicts the first token of the copy, which no head can know.
    first = float(rep[:, 1:h].mean())
    second = float(rep[:, h + 1 :].mean())
    logits = run_ablated(model, probes.heldout, heads, mode, means, clean.heldout if clean else None)
    curve = per_token_loss(logits, probes.heldout).mean(0).numpy()
    return AblationEffect(first, second, windowed_icl_score(curve), curve)
