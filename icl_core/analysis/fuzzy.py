"""Fuzzy copying probe: does a head match and copy [A*][B*] … [A] → [B] when A* ≈ A (Olsson et al. 2022)?

Each probe sequence is BOS + X* + X, where X is a random token sequence and X* a perturbed copy of it:
- "exact": X* = X (the ordinary repeated-random-token probe, for comparison);
- "case": every letter's case flipped ('a' <-> 'A');
- "neighbour": every token replaced by its nearest neighbour in the model's own token embedding W_E (cosine
  similarity, among readable bytes that occur in the training text, never itself). It depends on the snapshot.
X is drawn from ASCII letters (both cases occur in the training text) for every kind, so a case flip always
changes the token and, for one seed, the three probes share X and differ only in the perturbation.

For each head, the fuzzy prefix-matching score is the mean attention from X[j] (second half) to position of
X*[j + 1] (the token right after the perturbed earlier occurrence of the current token). Losses: the
second-half loss of the true next token X[j + 1], and the "copied" loss of X*[j + 1] (what a literal copy
of the earlier occurrence would predict).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from icl_core import data, stdlib_text
from icl_core.analysis import metrics
from icl_core.heads import head_name
from icl_core.model.family import Model
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import per_token_loss

Perturbation = Literal["exact", "case", "neighbour"]
PERTURBATIONS: tuple[Perturbation, ...] = get_args(Perturbation)


# Another tokenizer's case twins and neighbours come from its most frequent tokens on the held-out text: frequent
# tokens have trained embeddings (rare ones sit near many tokens by accident).
FREQUENT_TOKENS = 2000


def _frequent(tokenizer: Tokenizer) -> list[int]:
    return list(data.frequency_ranking(tokenizer)[:FREQUENT_TOKENS])


@functools.lru_cache(maxsize=4)
def case_twins(tokenizer: Tokenizer = BYTES) -> dict[int, int]:
    """Tokens whose other-case spelling is one token too, both occurring in the text (both trained): token -> twin.

    Bytes: the ASCII letters of the training text. Another tokenizer: its frequent tokens whose swapped-case text
    is itself a frequent token (e.g. " the" and " THE")."""
    if tokenizer == BYTES:
        counts = np.bincount(stdlib_text.corpus("train"), minlength=256)
        letters = [ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
        return {t: t ^ 0x20 for t in letters if counts[t] > 0 and counts[t ^ 0x20] > 0}
    frequent = _frequent(tokenizer)
    known = set(frequent)
    twins = {}
    for t in frequent:
        text = tokenizer.decode([t])
        twin = tokenizer.single_token(text.swapcase()) if text.swapcase() != text else None
        if twin is not None and twin in known and twin != t:
            twins[t] = twin
    return twins


def case_letter_pool(tokenizer: Tokenizer = BYTES) -> list[int]:
    """Tokens a case flip changes into another trained token (case_twins), in token order."""
    return sorted(case_twins(tokenizer))


def flip_case(tokens: torch.Tensor, tokenizer: Tokenizer = BYTES) -> torch.Tensor:
    """Swap the case of every token that has a case twin; other tokens are left unchanged."""
    t = tokens.clone()
    if tokenizer == BYTES:  # every ASCII letter, twin in the text or not
        letter = ((t >= 65) & (t <= 90)) | ((t >= 97) & (t <= 122))
        t[letter] = t[letter] ^ 0x20
        return t
    for a, b in case_twins(tokenizer).items():
        t[tokens == a] = b
    return t


def neighbour_candidates(tokenizer: Tokenizer = BYTES) -> list[int]:
    """Printable ASCII bytes, tab and newline that occur in the training text (another tokenizer: its frequent tokens).

    Rarer bytes (UTF-8 pieces, control bytes) have barely trained embeddings that sit near many tokens
    by accident, so they would make poor, unreadable neighbours.
    """
    if tokenizer != BYTES:
        return sorted(_frequent(tokenizer))
    counts = np.bincount(stdlib_text.corpus("train"), minlength=256)
    return [t for t in [9, 10, *range(32, 127)] if counts[t] > 0]


@torch.no_grad()
def nearest_neighbours(model: Model, candidates: Sequence[int] | None = None) -> torch.Tensor:
    """For every token, its most cosine-similar other token in W_E among `candidates`: (d_vocab,) long.

    Candidates default to neighbour_candidates() (readable bytes that occur in the training text).
    """
    if candidates is None:
        candidates = neighbour_candidates(model.tokenizer or BYTES)
    cand = torch.as_tensor(list(candidates), dtype=torch.long)
    if len(cand) < 2:
        raise ValueError("need at least two candidate tokens")
    e = torch.nn.functional.normalize(model.W_E.detach().float(), dim=-1)
    sim = e @ e[cand].T  # (vocab, n_cand)
    sim[cand, torch.arange(len(cand))] = -float("inf")  # never a token's own neighbour
    return cand[sim.argmax(dim=-1)]


@dataclass(frozen=True)
class FuzzyBatch:
    kind: Perturbation
    tokens: torch.Tensor  # (n, 1 + 2 * seq_len): BOS, X*, X
    original: torch.Tensor  # (n, seq_len): X
    perturbed: torch.Tensor  # (n, seq_len): X*
    seq_len: int


def fuzzy_batch(
    kind: Perturbation,
    model: Model | None = None,
    n_sequences: int = 10,
    seq_len: int = 25,
    seed: int = 0,
) -> FuzzyBatch:
    """BOS + perturbed copy + original of random token sequences; "neighbour" needs the model."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {PERTURBATIONS}")
    # Case flips only make sense for letters, so every kind draws letters: with one seed, the three probes
    # repeat the very same X and differ only in the perturbation of the first copy.
    tokenizer = model.require_tokenizer() if model is not None else BYTES
    pool = torch.tensor(case_letter_pool(tokenizer))
    if len(pool) < 2:
        raise ValueError(f"the {tokenizer.name} tokenizer has too few case twins for the fuzzy probe")
    gen = torch.Generator().manual_seed(seed)
    original = pool[torch.randint(0, len(pool), (n_sequences, seq_len), generator=gen)]
    if kind == "exact":
        perturbed = original.clone()
    elif kind == "case":
        perturbed = flip_case(original, tokenizer)
    else:
        if model is None:
            raise ValueError("the nearest-neighbour probe needs the model (its embedding defines the neighbours)")
        perturbed = nearest_neighbours(model)[original]
    bos = torch.full((n_sequences, 1), tokenizer.bos, dtype=torch.long)
    return FuzzyBatch(kind, torch.cat([bos, perturbed, original], dim=1), original, perturbed, seq_len)


def fuzzy_targets(seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions (X[j] in the second half) and their key positions (X*[j + 1]), j = 0 .. seq_len - 1.

    X*[seq_len] does not exist: the token after X*[seq_len - 1] is X[0], at position 1 + seq_len.
    """
    j = torch.arange(seq_len)
    return 1 + seq_len + j, 2 + j


@dataclass(frozen=True)
class FuzzyResult:
    kind: Perturbation
    prefix_matching: np.ndarray  # (layer, head): attention from X[j] to X*[j + 1]
    second_half_loss: float  # loss of the true next token X[j + 1] in the second half
    copied_loss: float  # loss of X*[j + 1], the literal copy of the earlier occurrence's successor
    changed_fraction: float  # share of tokens the perturbation actually changed


@torch.no_grad()
def fuzzy_probe_one(
    model: Model, kind: Perturbation, n_sequences: int = 10, seq_len: int = 25, seed: int = 0
) -> FuzzyResult:
    seq_len = max(2, min(seq_len, (model.cfg.n_ctx - 1) // 2))
    batch = fuzzy_batch(kind, model, n_sequences, seq_len, seed)
    device = next(model.parameters()).device
    logits, patterns = metrics.attention_patterns(model, batch.tokens.to(device))
    logits, patterns = logits.cpu(), patterns.cpu()
    queries, keys = fuzzy_targets(seq_len)
    pm = patterns[:, :, :, queries, keys].mean(dim=(0, -1))  # (layer, head)
    # Loss index t predicts token t + 1; skip X[0] (index seq_len), which nothing in the context predicts.
    second = per_token_loss(logits, batch.tokens)[:, seq_len + 1 : 2 * seq_len]
    logp = torch.log_softmax(logits.float(), dim=-1)[:, seq_len + 1 : 2 * seq_len]  # at X[0] .. X[L-2]
    copied = -logp.gather(-1, batch.perturbed[:, 1:, None]).squeeze(-1)
    return FuzzyResult(
        kind,
        pm.numpy(),
        float(second.mean()),
        float(copied.mean()),
        float((batch.perturbed != batch.original).float().mean()),
    )


def fuzzy_probe(
    model: Model,
    kinds: Sequence[Perturbation] = PERTURBATIONS,
    n_sequences: int = 10,
    seq_len: int = 25,
    seed: int = 0,
) -> dict[str, FuzzyResult]:
    """Exact vs fuzzy repeats: per kind, per-head prefix-matching and second-half / copied losses."""
    return {kind: fuzzy_probe_one(model, kind, n_sequences, seq_len, seed) for kind in kinds}


def fuzzy_rows(results: dict[str, FuzzyResult]) -> list[dict[str, object]]:
    """Long table (kind, head, layer, prefix_matching, second_half_loss, copied_loss) for charts."""
    rows = []
    for kind, r in results.items():
        n_layers, n_heads = r.prefix_matching.shape
        for layer in range(n_layers):
            for head in range(n_heads):
                rows.append(
                    {
                        "kind": kind,
                        "head": head_name((layer, head)),
                        "layer": layer,
                        "prefix_matching": float(r.prefix_matching[layer, head]),
                        "second_half_loss": r.second_half_loss,
                        "copied_loss": r.copied_loss,
                    }
                )
    return rows
