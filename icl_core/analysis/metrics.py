"""Metrics of Olsson et al. 2022 and Elhage et al. 2021 as pure functions of a model and data.

Definitions follow ../shared/notes/paper.md. Convention: per-token loss index t is the loss of the
prediction made at position t (of token t+1), so the ICL score is curve[500] - curve[50].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.family import Model
from icl_core.model.fold import CircuitWeights, circuit_weights
from icl_core.model.transformer import AttnOnlyTransformer, pattern_name, per_token_loss

LOGIT_BUDGET = 2**27  # logits held at once by the batched evaluations


@torch.no_grad()
def per_token_losses(model: Model, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per-token loss for every example: (n_examples, seq_len - 1), on the CPU."""
    device = next(model.parameters()).device
    # A 48k-token vocabulary makes the logits the big tensor: keep a batch's under ~2^27 numbers (512 MB).
    batch_size = max(1, min(batch_size, LOGIT_BUDGET // max(1, tokens.shape[1] * model.cfg.d_vocab)))
    out = []
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i : i + batch_size].to(device)
        out.append(per_token_loss(model(chunk), chunk).cpu())
    return torch.cat(out)


def loss_curve(losses: torch.Tensor) -> torch.Tensor:
    """In-context loss curve: mean loss at each context position."""
    return losses.mean(dim=0)


def icl_score(curve: torch.Tensor | list[float]) -> float:
    """loss(token 500) - loss(token 50) of a loss curve; more negative means more in-context learning.

    On a curve from a small batch this is noisy (standard error ~0.12 nats on 512 examples): the number
    stored and shown for a snapshot is exact_icl_score's, on the whole shipped evaluation set.
    """
    return float(curve[ICL_LATE_TOKEN]) - float(curve[ICL_EARLY_TOKEN])


@dataclass(frozen=True)
class ICLScore:
    value: float  # mean over examples of loss(token 500) - loss(token 50)
    se: float  # its standard error: sd of the per-example differences / sqrt(n)
    n_examples: int


# Residual-stream numbers per batch of the ICL score's forward passes: small batches stay in the CPU's caches
# (a 512-wide model ran 1.9x faster per example in batches of 16 than of 256; ours 1.3x in batches of 64).
ICL_BATCH_ACTIVATIONS = 2**21


@torch.no_grad()
def per_example_icl(model: Model, tokens: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """loss(token 500) − loss(token 50) of each example (float64, on the CPU): what exact_icl_score averages, and
    what a paired comparison of two snapshots or of a clean and an ablated model subtracts example by example.

    Only the logits at positions 50 and 500 are computed (AttnOnlyTransformer.logits_at), so the
    thousands of examples a 0.03-nat standard error needs cost about half a full forward pass each.
    """
    device = next(model.parameters()).device
    positions = torch.tensor([ICL_EARLY_TOKEN, ICL_LATE_TOKEN], device=device)
    if batch_size is None:
        batch_size = max(1, ICL_BATCH_ACTIVATIONS // ((ICL_LATE_TOKEN + 1) * model.cfg.d_model))
    diffs = []
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i : i + batch_size, : ICL_LATE_TOKEN + 2].to(device)
        logp = torch.log_softmax(model.logits_at(chunk[:, :-1], positions).float(), dim=-1)
        targets = chunk[:, positions + 1]
        loss = -logp.gather(-1, targets[..., None]).squeeze(-1)  # (batch, 2)
        diffs.append((loss[:, 1] - loss[:, 0]).double().cpu())
    return torch.cat(diffs) if diffs else torch.zeros(0, dtype=torch.float64)


def mean_with_se(values: torch.Tensor) -> ICLScore:
    """Mean of per-example values with its standard error (sd / sqrt(n))."""
    se = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")
    return ICLScore(float(values.mean()), se, len(values))


def exact_icl_score(model: Model, tokens: torch.Tensor, batch_size: int | None = None) -> ICLScore:
    """The ICL score (Olsson et al. 2022) with its standard error, from per-example paired differences."""
    return mean_with_se(per_example_icl(model, tokens, batch_size))


@torch.no_grad()
def icl_score_without_positions(model: AttnOnlyTransformer, tokens: torch.Tensor) -> ICLScore:
    """The ICL score with every position given position 50's embedding: what stays is in-context learning from
    the context itself, without what the model learned about absolute positions (the early stage's swing)."""
    w_pos = model.W_pos.clone()
    try:
        model.W_pos.copy_(w_pos[ICL_EARLY_TOKEN].expand_as(w_pos))
        return exact_icl_score(model, tokens)
    finally:
        model.W_pos.copy_(w_pos)


ICL_WINDOW = 10  # token indices either side of 50 and 500 averaged by the windowed ICL estimate


def windowed_icl_score(curve: np.ndarray | torch.Tensor, half_window: int = ICL_WINDOW) -> float | None:
    """loss(≈500) − loss(≈50), each a mean over ±half_window positions: a steadier estimate on a small batch.

    None when the curve is too short to reach token 500. half_window=0 is icl_score itself.
    """
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) <= ICL_LATE_TOKEN:
        return None
    late = curve[max(ICL_LATE_TOKEN - half_window, 0) : ICL_LATE_TOKEN + half_window + 1]
    early = curve[max(ICL_EARLY_TOKEN - half_window, 0) : ICL_EARLY_TOKEN + half_window + 1]
    return float(late.mean() - early.mean())


@torch.no_grad()
def attention_patterns(model: Model, tokens: torch.Tensor, fwd_hooks=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and all patterns stacked: (batch, layer, head, query, key)."""
    names = {pattern_name(layer) for layer in range(model.cfg.n_layers)}
    logits, cache = model.run_with_cache(tokens, names=names.__contains__, fwd_hooks=fwd_hooks)
    return logits, torch.stack([cache[pattern_name(layer)] for layer in range(model.cfg.n_layers)], dim=1)


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, query, key): key k is the token right after an earlier occurrence of tokens[q].

    Works for any sequence, so the explorer can highlight induction targets in typed text.
    """
    same = tokens[:, :, None] == tokens[:, None, :]  # (b, q, k)
    n = tokens.shape[1]
    earlier = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    prev_match = torch.zeros_like(same)
    # key k is a target for q when tokens[k-1] == tokens[q] and k-1 < q, k <= q
    prev_match[:, :, 1:] = same[:, :, :-1] & earlier[None, :, :-1]
    return prev_match


def prefix_matching_scores_from_patterns(
    patterns: torch.Tensor, tokens: torch.Tensor, first_query: int
) -> torch.Tensor:
    """Mean over queries >= first_query of attention mass on induction targets: (layer, head)."""
    targets = induction_targets(tokens)[:, None, None].float()  # (b, 1, 1, q, k)
    mass = (patterns * targets).sum(-1)[..., first_query:]  # (b, l, h, q)
    return mass.mean(dim=(0, -1))


def prefix_matching_scores(model: Model, repeated: torch.Tensor, seq_len: int = 25) -> torch.Tensor:
    """Prefix-matching score per head on BOS + random tokens repeated: (layer, head)."""
    _, patterns = attention_patterns(model, repeated)
    return prefix_matching_scores_from_patterns(patterns.cpu(), repeated, first_query=1 + seq_len)


def previous_token_scores_from_patterns(patterns: torch.Tensor) -> torch.Tensor:
    """Mean attention from position i to i-1 (i >= 1): (layer, head)."""
    return patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def previous_token_scores(model: Model, text: torch.Tensor) -> torch.Tensor:
    _, patterns = attention_patterns(model, text)
    return previous_token_scores_from_patterns(patterns.cpu())


def ov_circuit_factors(
    model: AttnOnlyTransformer, layer: int, head: int, weights: CircuitWeights | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full OV circuit W_E W_V W_O W_U (vocab x vocab) as two low-rank factors A (vocab x d_head), B
    (LayerNorm folded in: model.fold)."""
    w = weights if weights is not None else circuit_weights(model)
    return w.W_E @ w.W_V[layer][head], w.W_O[layer][head] @ w.W_U


@torch.no_grad()
def copying_scores(model: AttnOnlyTransformer) -> torch.Tensor:
    """Eigenvalue copying score (Elhage et al. 2021): Re(sum lambda) / sum |lambda| of the OV circuit.

    The nonzero eigenvalues of A @ B equal those of the small matrix B @ A (d_head x d_head).
    """
    cfg = model.cfg
    w = circuit_weights(model)
    scores = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            a, b = ov_circuit_factors(model, layer, head, w)
            eig = torch.linalg.eigvals((b @ a).double())
            scores[layer, head] = float(eig.real.sum() / eig.abs().sum().clamp_min(1e-12))
    return scores


def moving_average(values: np.ndarray, window: int = 9) -> np.ndarray:
    """Centred moving average (edges use what is there), to read a noisy small-batch loss curve."""
    if len(values) < window:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den
