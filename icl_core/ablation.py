"""Head ablations as forward hooks, so weights are never touched.

- zero: remove the head's output.
- mean: replace the head's output by its mean (per position) over a reference batch.
- pattern-preserving (Olsson et al. 2022): zero the head's output and force every head's attention
  pattern to the one recorded on the clean run, so only the head's direct and value-path
  contributions to later layers are removed (attention of later heads cannot re-route).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from icl_core.hooks import HookFn, HookPoint
from icl_core.model import AttnOnlyTransformer, pattern_name, result_name

Head = tuple[int, int]
ABLATION_MODES = ("zero", "mean", "pattern-preserving")


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
def head_output_means(model: AttnOnlyTransformer, reference: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per layer, each head's output averaged over the reference batch: (pos, head, d_model)."""
    names = {result_name(layer) for layer in range(model.cfg.n_layers)}
    _, cache = model.run_with_cache(reference, names=names.__contains__)
    return {layer: cache[result_name(layer)].mean(dim=0) for layer in range(model.cfg.n_layers)}


def mean_ablation_hooks(heads: Iterable[Head], means: dict[int, torch.Tensor]) -> list[tuple[str, HookFn]]:
    return [(result_name(layer), _replace_heads(ids, means[layer])) for layer, ids in _by_layer(heads).items()]


@torch.no_grad()
def record_patterns(
    model: AttnOnlyTransformer, tokens: torch.Tensor, layers: Sequence[int], dtype: torch.dtype = torch.float32
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
    model: AttnOnlyTransformer,
    tokens: torch.Tensor,
    heads: Iterable[Head],
    mode: str = "zero",
    means: dict[int, torch.Tensor] | None = None,
    clean: dict[int, torch.Tensor] | None = None,
) -> list[tuple[str, HookFn]]:
    """The hooks that ablate `heads` on input `tokens` in the given mode.

    For pattern-preserving ablation, `clean` may hold patterns already recorded on these tokens
    (layer -> (batch, head, q, k)); otherwise they are recorded here.
    """
    heads = [(int(layer), int(head)) for layer, head in heads]
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {ABLATION_MODES}")
    if not heads:
        return []
    if mode == "mean":
        if means is None:
            raise ValueError("mean ablation needs head_output_means(model, reference)")
        return mean_ablation_hooks(heads, means)
    hooks = zero_ablation_hooks(heads)
    if mode == "pattern-preserving":
        # Layers up to the first ablated one read the clean residual stream, so their patterns cannot
        # change: freezing only the later ones gives the same result for less work.
        later = list(range(min(layer for layer, _ in heads) + 1, model.cfg.n_layers))
        if later and not (clean is not None and all(layer in clean for layer in later)):
            clean = record_patterns(model, tokens, later)
        hooks = pattern_freezing_hooks({layer: clean[layer] for layer in later}) + hooks
    return hooks


@torch.no_grad()
def run_ablated(
    model: AttnOnlyTransformer,
    tokens: torch.Tensor,
    heads: Iterable[Head],
    mode: str = "zero",
    means: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of the model with `heads` ablated."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    return model.run_with_hooks(tokens, ablation_hooks(model, tokens, heads, mode, means))
