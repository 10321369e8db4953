"""Losses at chosen positions with one head ablated at a time (zero, mean or pattern-preserving), in one pass
per batch where the model is linear downstream of the head: what the ablation table, the phase-change
attribution and the paired ablation claims are built on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from icl_core import data
from icl_core.analysis.ablation import AblationMode, ablation_hooks, check_mode, head_output_means
from icl_core.heads import Head, all_heads
from icl_core.model.family import Model
from icl_core.model.transformer import pattern_name, result_name


def _at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (b, T, d) at positions pos (b, k): (b, k, d)."""
    return x.gather(1, pos[..., None].expand(-1, -1, x.shape[-1]))


def _propagate(
    model: Model, cache: dict[str, torch.Tensor], layer: int, removed: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """Change of the final residual stream at positions pos (b, k, d) when `removed` (b, T, d) is taken out of
    the residual stream after `layer`, with every later attention pattern frozen to the clean one (cache)."""
    last = model.cfg.n_layers - 1
    delta = -removed
    for later in range(layer + 1, model.cfg.n_layers):
        block = model.blocks[later]
        pattern = cache[pattern_name(later)]  # (b, head, q, k)
        if later == last:
            # Only the needed queries: a gather of the pattern rows instead of the full (T x T) product.
            rows = pattern.gather(2, pos[:, None, :, None].expand(-1, pattern.shape[1], -1, pattern.shape[-1]))
            v = torch.einsum("btd,hde->bhte", delta, block.W_V)
            z = torch.einsum("bhqt,bhte->bhqe", rows, v)
            return _at(delta, pos) + torch.einsum("bhqe,hed->bqd", z, block.W_O)
        v = torch.einsum("btd,hde->bhte", delta, block.W_V)
        z = torch.einsum("bhqt,bhte->bhqe", pattern, v)
        delta = delta + torch.einsum("bhqe,hed->bqd", z, block.W_O)
    return _at(delta, pos)


def _loss_at(logits: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Loss of predicting tokens[b, p + 1] from logits (b, k, vocab) already gathered at positions pos (b, k)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, tokens.gather(1, pos + 1)[..., None]).squeeze(-1)


@torch.no_grad()
def head_ablation_losses(
    model: Model,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mode: AblationMode = AblationMode.PATTERN_PRESERVING,
    heads: Sequence[Head] | None = None,
    means: dict[int, torch.Tensor] | None = None,
    chunk: int = 16,
    on_chunk: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, dict[Head, torch.Tensor]]:
    """Clean losses and, for each head ablated alone, losses at the given loss indices.

    tokens (n, T); positions (n, k) loss indices (index t = loss of predicting token t + 1), each < T - 1.
    Returns clean (n, k) and {head: (n, k)}. `means` (icl_core.analysis.ablation.head_output_means) is needed for
    mode "mean" and computed on data.mean_reference when missing.
    """
    mode = check_mode(mode)  # a plain string (a stored key, a link) is checked and becomes the enum
    if positions.dim() == 1:
        positions = positions[:, None]
    if positions.shape[0] != tokens.shape[0]:
        raise ValueError(f"{tokens.shape[0]} examples but {positions.shape[0]} rows of positions")
    if int(positions.max()) >= tokens.shape[1] - 1 or int(positions.min()) < 0:
        raise ValueError(f"positions must lie in 0..{tokens.shape[1] - 2}")
    heads = [
        (int(a), int(b)) for a, b in (heads if heads is not None else all_heads(model.cfg.n_layers, model.cfg.n_heads))
    ]
    if mode == AblationMode.MEAN and means is None:
        means = head_output_means(model, data.mean_reference(model.cfg.n_ctx, tokenizer=model.require_tokenizer()))
    device = next(model.parameters()).device
    last = model.cfg.n_layers - 1
    later_layers = list(range(1, model.cfg.n_layers))
    n = tokens.shape[0]
    preserving = mode == AblationMode.PATTERN_PRESERVING
    linear = model.cfg.normalization == "none"
    clean_out = torch.zeros(positions.shape)
    out = {h: torch.zeros(positions.shape) for h in heads}
    # Examples sorted by the last position they need, so each chunk is cut as short as possible.
    order = torch.argsort(positions.max(dim=1).values, stable=True)
    for start in range(0, n, chunk):
        idx = order[start : start + chunk]
        pos = positions[idx].to(device)
        length = int(pos.max()) + 2
        part = tokens[idx, :length].to(device)
        names = {result_name(layer) for layer in range(model.cfg.n_layers)} if preserving else {result_name(last)}
        if preserving:
            names |= {pattern_name(layer) for layer in later_layers}
        logits, cache = model.run_with_cache(part, names=names.__contains__)
        gathered = _at(logits, pos)
        clean_out[idx] = _loss_at(gathered, part, pos).cpu()
        for head in heads:
            layer, h = head
            if linear and (layer == last or preserving):
                # Removing (or replacing) a head's output changes the logits by a term that is linear in it
                # when nothing downstream can re-route attention: always true of the last layer, and true of
                # every layer under pattern-preserving ablation. So no second forward pass is needed.
                # (LayerNorm makes the change non-linear: those models take the second pass.)
                removed = cache[result_name(layer)][:, :, h]
                if mode == AblationMode.MEAN:
                    assert means is not None  # checked by the caller: mean ablation needs the means
                    removed = removed - means[layer][:length, h].to(removed)[None]
                change = _propagate(model, cache, layer, removed, pos) @ model.W_U
                out[head][idx] = _loss_at(gathered + change, part, pos).cpu()
                continue
            ablated = model.run_with_hooks(part, ablation_hooks(model, part, [head], mode, means))
            out[head][idx] = _loss_at(_at(ablated, pos), part, pos).cpu()
        if on_chunk is not None:
            on_chunk()
    return clean_out, out


def n_chunks(n_examples: int, chunk: int = 16) -> int:
    """How many times head_ablation_losses calls on_chunk for n_examples."""
    return -(-n_examples // chunk)


def chunk_counter(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None] | None:
    """An on_chunk callback that reports progress(done, total) across several head_ablation_losses calls."""
    if progress is None:
        return None
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(min(done[0], total), total)

    return tick
