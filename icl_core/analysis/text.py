"""Typed text and preset sequences: encoding with notes for the reader, and one forward pass analysed.

Used by the Attention and Ablation pages; pure functions of a model and a token sequence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import metrics
from icl_core.errors import InputTextError
from icl_core.heads import head_name
from icl_core.model.family import Model
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import per_token_loss

PRESETS: dict[str, str] = {
    "Repeated random tokens": "",  # filled by preset_text: depends on the probe-token pool
    "Repeated English sentence": "Alice keeps green tea in a blue tin. Alice keeps green tea in a blue tin.",
    "Code with a repeated identifier": "def area(w, h):\n    rect_size = w * h\n    return rect_size\n",
    "Fuzzy repeat (case-flipped)": "",  # A then A with every letter's case flipped
}
_FUZZY_SOURCE = "Never odd or even, said Bob. "


def preset_text(name: str, seed: int = 0, tokenizer: Tokenizer = BYTES) -> str:
    """The text of a preset sequence; 'Repeated random tokens' follows the prefix-matching probe (25 tokens x 2),
    drawn from the tokenizer's probe pool."""
    if name not in PRESETS:
        raise InputTextError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if name == "Repeated random tokens":
        rng = random.Random(seed)
        if tokenizer == BYTES:
            pool = [t for t in data.probe_tokens() if 33 <= t < 127]  # printable, so the text box shows it
            chunk = "".join(chr(rng.choice(pool)) for _ in range(25))
        else:
            # Whole words with their leading space ("Ġword") read back as the same tokens when the text is encoded.
            words = [w for w in (tokenizer.decode([t]) for t in data.probe_tokens(tokenizer)) if w[1:].isalpha()]
            words = [w for w in words if w.startswith(" ")] or words
            chunk = "".join(rng.choice(words) for _ in range(25))
        return chunk * 2
    if name == "Fuzzy repeat (case-flipped)":
        return _FUZZY_SOURCE + _FUZZY_SOURCE.swapcase()
    return PRESETS[name]


@dataclass(frozen=True)
class TextInput:
    tokens: torch.Tensor  # 1-D, BOS first, at most n_ctx long
    notes: tuple[str, ...]  # what the user should know (truncation, multi-byte characters)


MAX_TEXT_CHARS = 20_000  # what a text box takes; the model reads its first n_ctx tokens of it anyway


def prepare_text(text: str, n_ctx: int, tokenizer: Tokenizer = BYTES) -> TextInput:
    """Encode typed text for a model; InputTextError for empty text, notes for truncation and non-ASCII."""
    if not text or not text.strip():
        raise InputTextError("The text is empty: type at least one character, or pick a preset.")
    enc = tokenizer.encode(text, n_ctx=n_ctx)
    notes = []
    if enc.truncated:
        total = len(tokenizer.encode(text).tokens)
        notes.append(
            f"The text is {total} tokens (with the start token) but the model's context is {n_ctx}: "
            f"only the first {n_ctx} tokens are used."
        )
    if enc.non_ascii_chars:
        notes.append(
            f"{enc.non_ascii_chars} non-ASCII character(s) became several byte tokens each "
            "(the model reads UTF-8 bytes); they show as \\xNN labels."
        )
    return TextInput(enc.tokens, tuple(notes))


@dataclass
class TextAnalysis:
    tokens: np.ndarray  # (n,) int
    labels: list[str]
    patterns: np.ndarray  # (layer, head, query, key) float32
    losses: np.ndarray  # (n - 1,): loss of predicting token i + 1 at position i
    top_ids: np.ndarray  # (n, k) next-token predictions at each position
    top_probs: np.ndarray  # (n, k)
    targets: np.ndarray  # (query, key) bool: induction targets
    text_prefix_matching: np.ndarray  # (layer, head): attention on induction targets, NaN if nothing repeats


def top_k(logits: torch.Tensor, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-k token ids and probabilities at every position of (pos, vocab) logits."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return ids.numpy(), values.numpy()


def text_prefix_matching(patterns: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per head, mean attention on induction targets over the queries that have any (NaN if none do).

    Unlike the probe score, typed text may repeat little, so queries with nothing to match are left out.
    """
    has = targets.any(axis=1)
    if not has.any():
        return np.full(patterns.shape[:2], np.nan)
    mass = (patterns * targets[None, None]).sum(-1)  # (layer, head, query)
    return mass[..., has].mean(-1)


@torch.no_grad()
def analyze_tokens(model: Model, tokens: torch.Tensor, k: int = 5) -> TextAnalysis:
    """One forward pass with attention capture: patterns, per-token loss, top-k predictions, induction targets."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    logits, patterns = metrics.attention_patterns(model, tokens)
    ids, probs = top_k(logits[0], k)
    targets = metrics.induction_targets(tokens)[0].numpy()
    pats = patterns[0].float().numpy()
    losses = per_token_loss(logits, tokens)[0].numpy() if tokens.shape[1] > 1 else np.zeros(0, dtype=np.float32)
    return TextAnalysis(
        tokens=tokens[0].numpy(),
        labels=(model.tokenizer or BYTES).labels(tokens[0]),
        patterns=pats,
        losses=losses,
        top_ids=ids,
        top_probs=probs,
        targets=targets,
        text_prefix_matching=text_prefix_matching(pats, targets),
    )


def top_attended(analysis: TextAnalysis, query: int, n: int = 3) -> list[dict[str, Any]]:
    """For each head, the n keys the query attends to most, flagging induction targets and the previous token."""
    rows = []
    n_layers, n_heads = analysis.patterns.shape[:2]
    for layer in range(n_layers):
        for head in range(n_heads):
            weights = analysis.patterns[layer, head, query, : query + 1]
            order = np.argsort(-weights, kind="stable")[:n]
            on_targets = float(weights[analysis.targets[query, : query + 1]].sum())
            rows.append(
                {
                    "head": head_name((layer, head)),
                    "on_induction_targets": on_targets,
                    "on_previous_token": float(weights[query - 1]) if query > 0 else 0.0,
                    "top": [(int(k), analysis.labels[k], float(weights[k])) for k in order],
                }
            )
    return rows


def prediction_rows(
    tokens: torch.Tensor,
    clean_logits: torch.Tensor,
    ablated_logits_: torch.Tensor,
    last: int = 40,
    tokenizer: Tokenizer = BYTES,
) -> list[dict[str, Any]]:
    """For the last `last` positions: the next token, and the clean vs ablated top prediction and loss."""
    toks = tokens.reshape(-1)
    clean = torch.log_softmax(clean_logits.reshape(len(toks), -1).float(), -1)
    abl = torch.log_softmax(ablated_logits_.reshape(len(toks), -1).float(), -1)
    rows = []

    def label(t: int) -> str:
        return tokenizer.labels([t])[0]

    for pos in range(max(0, len(toks) - 1 - last), len(toks) - 1):
        nxt = int(toks[pos + 1])
        c_top, a_top = int(clean[pos].argmax()), int(abl[pos].argmax())
        rows.append(
            {
                "position": pos,
                "token": label(int(toks[pos])),
                "next": label(nxt),
                "clean_top": label(c_top),
                "clean_p": float(clean[pos, c_top].exp()),
                "clean_loss": float(-clean[pos, nxt]),
                "ablated_top": label(a_top),
                "ablated_p": float(abl[pos, a_top].exp()),
                "ablated_loss": float(-abl[pos, nxt]),
                "repeat": bool((toks[:pos] == toks[pos]).any()) and int(toks[pos]) != tokenizer.bos,
            }
        )
    return rows


def repeat_lengths(tokens: Sequence[int] | np.ndarray) -> np.ndarray:
    """For each position q, the length of the longest run of tokens ending at q that also occurs ending at an
    earlier position: how much of an earlier copy the text at q repeats (0: token q is new here).

    Loss q predicts token q + 1, so where repeat_lengths[q] is long, an induction head can copy the token
    that followed the earlier copy.
    """
    t = np.asarray(tokens)
    n = len(t)
    out = np.zeros(n, dtype=int)
    prev = np.zeros(n, dtype=int)  # prev[j]: match length of the runs ending at q - 1 and at j
    for q in range(n):
        cur = np.zeros(n, dtype=int)
        same = np.flatnonzero(t[:q] == t[q])
        cur[same] = 1 + np.where(same > 0, prev[np.maximum(same - 1, 0)], 0)
        out[q] = cur[:q].max() if q else 0
        prev = cur
    return out
