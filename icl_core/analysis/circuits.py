"""Weight-level circuit analysis (Elhage et al. 2021): composition, copying, full QK and OV circuits.

Our runs have no LayerNorm and no biases, so every quantity here is an exact product of weights. For
TransformerLens-format models with LayerNorm the weights are read with it folded in (icl_core.model.fold), as
TransformerLens's own circuit tools do: exact but for the per-position division by the norm.

Conventions (row vectors, as in icl_core.model.transformer): a residual vector x is read by a head as x W_Q, x W_K,
x W_V; the head writes z W_O. So W_QK = W_Q W_K^T (query side on the left) and W_OV = W_V W_O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from icl_core import data, stdlib_text
from icl_core.analysis.metrics import copying_scores
from icl_core.errors import ICLError
from icl_core.heads import Head, head_name
from icl_core.model.family import Model
from icl_core.model.fold import CircuitWeights, circuit_weights
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import AttnOnlyTransformer

# What weight-only circuits lose on a model with MLPs (the gpt-neox family): said on the Circuits page, once.
NOT_WEIGHT_ONLY = (
    "This model has an MLP in every layer and rotary positions. Its circuits are not products of its weights: "
    "what a head's keys read passes through the MLPs before it (so K/Q/V composition scores leave most of it "
    "out), a query–key score depends on the two tokens' distance (so a token × token QK matrix is not what the "
    "head computes), and the OV circuit's path from the embedding skips every MLP (so the eigenvalue copying "
    "score is not the head's copying). These are hidden here. What reads the model's activations keeps its "
    "meaning: prefix-matching and previous-token scores, ablations and head attribution (other pages)."
)


class NotWeightOnly(ICLError):
    """An analysis of weights alone asked of a model whose circuits are not products of its weights."""


def attn_only(model: Model) -> AttnOnlyTransformer:
    """The model, where weight-only circuits describe it (an attention-only model); NotWeightOnly otherwise."""
    if isinstance(model, AttnOnlyTransformer):
        return model
    raise NotWeightOnly(NOT_WEIGHT_ONLY)


# Which token-by-token circuit of a head: its direct QK, its QK through K-composition with an earlier head, its OV.
CircuitKind = Literal["qk", "kqk", "ov"]
CompositionKind = Literal["K", "Q", "V"]
COMPOSITION_KINDS: tuple[CompositionKind, ...] = get_args(CompositionKind)


# ---------------------------------------------------------------------------------------------
# Composition


@dataclass(frozen=True)
class CompositionScores:
    """Baseline-subtracted composition scores, rows = heads of earlier layers, columns = heads of later layers.

    Entry [i, j] is NaN where row head i is not in an earlier layer than column head j (no composition possible).
    """

    scores: dict[CompositionKind, np.ndarray]  # (n_rows, n_cols), baseline subtracted
    raw: dict[CompositionKind, np.ndarray]  # the same before subtracting the baseline
    baseline: float  # mean score of random matrices with the shapes and rank of W_OV and W_QK
    rows: list[Head]  # earlier heads: layers 0 .. n_layers - 2
    cols: list[Head]  # later heads: layers 1 .. n_layers - 1

    @property
    def row_labels(self) -> list[str]:
        return [head_name(h) for h in self.rows]

    @property
    def col_labels(self) -> list[str]:
        return [head_name(h) for h in self.cols]

    def records(self) -> list[dict[str, object]]:
        """Long table (kind, early, late, score, raw) for heatmaps; NaN cells left out."""
        out = []
        for kind in COMPOSITION_KINDS:
            for i, early in enumerate(self.rows):
                for j, late in enumerate(self.cols):
                    value = float(self.scores[kind][i, j])
                    if math.isfinite(value):
                        out.append(
                            {
                                "kind": kind,
                                "early": head_name(early),
                                "late": head_name(late),
                                "score": value,
                                "raw": float(self.raw[kind][i, j]),
                            }
                        )
        return out


def _qk(w: CircuitWeights, layer: int, head: int) -> torch.Tensor:
    return w.W_Q[layer][head] @ w.W_K[layer][head].T  # (d_model, d_model): x_q W_QK x_k^T


def _ov(w: CircuitWeights, layer: int, head: int) -> torch.Tensor:
    return w.W_V[layer][head] @ w.W_O[layer][head]  # (d_model, d_model): x W_OV is the head's write


def _composition(left: torch.Tensor, right: torch.Tensor) -> float:
    return float((left @ right).norm() / (left.norm() * right.norm()).clamp_min(1e-12))


@torch.no_grad()
def composition_scores(
    model: AttnOnlyTransformer, kind: CompositionKind, early: int = 0, late: int = 1
) -> torch.Tensor:
    """Composition scores (early heads x late heads), kind in {'K', 'Q', 'V'} (Elhage et al. 2021).

    Row-vector convention: the late head's key input gets x W_OV^early, so K-composition is
    || W_OV^early W_QK^late^T || (the key side), Q-composition || W_OV^early W_QK^late ||, and
    V-composition || W_OV^early W_OV^late ||, each divided by the product of the two norms.
    """
    if kind not in ("K", "Q", "V"):
        raise ValueError(f"kind must be K, Q or V, got {kind!r}")
    h = model.cfg.n_heads
    w = circuit_weights(model)
    out = torch.zeros(h, h)
    for i in range(h):
        ov1 = _ov(w, early, i)
        for j in range(h):
            if kind == "K":
                right = _qk(w, late, j).T
            elif kind == "Q":
                right = _qk(w, late, j)
            else:
                right = _ov(w, late, j)
            out[i, j] = _composition(ov1, right)
    return out


def random_composition_baseline(d_model: int, d_head: int, n_samples: int = 200, seed: int = 0) -> float:
    """Mean composition score of random low-rank matrices with the shapes of W_OV and W_QK."""
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(n_samples):
        a = torch.randn(d_model, d_head, generator=gen) @ torch.randn(d_head, d_model, generator=gen)
        b = torch.randn(d_model, d_head, generator=gen) @ torch.randn(d_head, d_model, generator=gen)
        scores.append(_composition(a, b))
    return float(torch.tensor(scores).mean())


@torch.no_grad()
def composition_matrices(model: AttnOnlyTransformer, n_samples: int = 200, seed: int = 0) -> CompositionScores:
    """K-, Q- and V-composition of every earlier-layer head with every later-layer head, minus the random baseline.

    W_OV and W_QK are both d_model x d_model of rank d_head, so one baseline (random rank-d_head products of
    those shapes, random_composition_baseline) serves all three kinds. A score near 0 after
    subtraction means "no more aligned than chance"; an induction head K-composes with a previous-token head.
    """
    cfg = model.cfg
    if cfg.n_layers < 2:
        raise ValueError("composition needs at least two layers")
    baseline = random_composition_baseline(cfg.d_model, cfg.d_head, n_samples=n_samples, seed=seed)
    rows = [(layer, h) for layer in range(cfg.n_layers - 1) for h in range(cfg.n_heads)]
    cols = [(layer, h) for layer in range(1, cfg.n_layers) for h in range(cfg.n_heads)]
    raw = {kind: np.full((len(rows), len(cols)), np.nan) for kind in COMPOSITION_KINDS}
    n = cfg.n_heads
    for early in range(cfg.n_layers - 1):
        for late in range(early + 1, cfg.n_layers):
            for kind in COMPOSITION_KINDS:
                block = composition_scores(model, kind, early=early, late=late).numpy()
                raw[kind][early * n : (early + 1) * n, (late - 1) * n : late * n] = block
    scores = {kind: raw[kind] - baseline for kind in COMPOSITION_KINDS}
    return CompositionScores(scores, raw, baseline, rows, cols)


# ---------------------------------------------------------------------------------------------
# Copying


def default_copy_tokens(model: AttnOnlyTransformer) -> list[int]:
    """The model's random-token probe pool (what the paper measures on); every token for a model built
    without a tokenizer."""
    if model.tokenizer is not None:
        return data.probe_tokens(model.tokenizer)
    return list(range(model.cfg.d_vocab))


def direct_path_logits(
    model: AttnOnlyTransformer, layer: int, head: int, tokens: Sequence[int], weights: CircuitWeights | None = None
) -> torch.Tensor:
    """Logits the head writes when it attends fully to each token, through its OV circuit only: (n, vocab).

    This is the direct path W_E[t] W_V W_O W_U: the token's embedding alone, no positional embedding and no
    earlier heads, so it measures what the head does with the attended token's identity. `weights`: the
    model's circuit_weights, when the caller already has them.
    """
    w = weights if weights is not None else circuit_weights(model)
    idx = torch.as_tensor(list(tokens), dtype=torch.long)
    with torch.no_grad():
        return ((w.W_E[idx] @ w.W_V[layer][head]) @ w.W_O[layer][head] @ w.W_U).detach().float()


def copy_fractions(logits: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Per token, the share of the logit increase that goes to the attended token itself: (n,) in [0, 1].

    d = logits - mean over the vocabulary (softmax ignores a constant shift, so only d matters);
    increase = ReLU(d); share = increase[token] / sum(increase). A head that raises nothing scores 0.
    """
    idx = torch.as_tensor(list(tokens), dtype=torch.long)
    d = logits - logits.mean(dim=-1, keepdim=True)
    up = torch.relu(d)
    own = up.gather(1, idx[:, None]).squeeze(1)
    return own / up.sum(dim=-1).clamp_min(1e-12)


@torch.no_grad()
def empirical_copying_scores(model: AttnOnlyTransformer, tokens: Sequence[int] | None = None) -> torch.Tensor:
    """Empirical copying score per head (Olsson et al. 2022), in [-1, 1]: (layer, head).

    Our exact reading of paper.md ("mean-subtracted, ReLU'd; the fraction of the increase that goes to the
    attended token itself (0…0.5, rescaled to −1…1)"):
      for each probe token t: l = W_E[t] W_V W_O W_U (the head's direct-path logits), d = l - mean(l),
      f_t = ReLU(d)[t] / sum(ReLU(d)). Because d sums to zero, sum(ReLU(d)) is exactly half of sum(|d|), so
      f_t / 2 = ReLU(d)[t] / sum(|d|) is "the fraction of the change that is the token's own increase", which
      lies in 0…0.5; the score maps that range linearly onto −1…1: score = 4 * mean_t(f_t / 2) - 1
      = 2 * mean_t(f_t) - 1.
    So +1: all of the increase goes to the attended token (a perfect copier); −1: none of it does (the token's
    own logit is at or below the mean, as for an anti-copying head, and near −1 for a head that ignores token
    identity, since one token out of ~vocab/2 raised ones gets a tiny share). No clipping is needed.
    Tokens default to the repeated-random-token pool (icl_core.data.probe_tokens) for byte-level models.
    """
    tokens = list(tokens) if tokens is not None else default_copy_tokens(model)
    cfg = model.cfg
    w = circuit_weights(model)
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            frac = copy_fractions(direct_path_logits(model, layer, head, tokens, w), tokens)
            out[layer, head] = 2.0 * frac.mean() - 1.0
    return out


@torch.no_grad()
def own_token_top1_rates(model: AttnOnlyTransformer, tokens: Sequence[int] | None = None) -> torch.Tensor:
    """Per head, the share of probe tokens whose own logit is the head's largest direct-path logit: (layer, head).

    A readable companion to the empirical score: with a 257-token vocabulary about half the tokens sit above
    the mean, so even a clean copier gives its own token only a few percent of the ReLU'd increase (an
    empirical score near -1) while ranking it first.
    """
    tokens = list(tokens) if tokens is not None else default_copy_tokens(model)
    idx = torch.as_tensor(tokens, dtype=torch.long)
    cfg = model.cfg
    w = circuit_weights(model)
    out = torch.zeros(cfg.n_layers, cfg.n_heads)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            logits = direct_path_logits(model, layer, head, tokens, w)
            out[layer, head] = (logits.argmax(dim=-1) == idx).float().mean()
    return out


def copying_table(model: AttnOnlyTransformer, tokens: Sequence[int] | None = None) -> list[dict[str, object]]:
    """Per head: empirical copying score (Olsson et al.) beside the eigenvalue score (Elhage et al.), and the
    share of probe tokens that are their own top-1 direct-path logit."""
    emp = empirical_copying_scores(model, tokens)
    eig = copying_scores(model)
    top1 = own_token_top1_rates(model, tokens)
    return [
        {
            "head": head_name((layer, head)),
            "layer": layer,
            "empirical": float(emp[layer, head]),
            "eigenvalue": float(eig[layer, head]),
            "own_top1": float(top1[layer, head]),
        }
        for layer in range(model.cfg.n_layers)
        for head in range(model.cfg.n_heads)
    ]


# ---------------------------------------------------------------------------------------------
# Full QK and OV circuits on readable tokens


@dataclass(frozen=True)
class CircuitMatrix:
    matrix: np.ndarray  # (rows, cols)
    row_labels: list[str]
    col_labels: list[str]
    row_tokens: list[int]  # token ids (or positions, for the positional circuit)
    col_tokens: list[int]
    row_axis: str  # what a row is, e.g. "query token"
    col_axis: str
    title: str

    def records(self) -> list[dict[str, object]]:
        """Long table for a heatmap: row, col (labels), row_index, col_index, value."""
        return [
            {
                self.row_axis: self.row_labels[i],
                self.col_axis: self.col_labels[j],
                "row_index": i,
                "col_index": j,
                "value": float(self.matrix[i, j]),
            }
            for i in range(len(self.row_labels))
            for j in range(len(self.col_labels))
        ]


def readable_tokens(n: int = 40, tokenizer: Tokenizer = BYTES) -> list[int]:
    """The n most frequent printable bytes of the training text (space included), most frequent first; for
    another tokenizer, its n most frequent tokens on the held-out text (start token left out)."""
    if tokenizer != BYTES:
        return list(data.frequency_ranking(tokenizer)[:n])
    counts = np.bincount(stdlib_text.corpus("train"), minlength=256)
    printable = [t for t in range(32, 127) if counts[t] > 0]
    return sorted(printable, key=lambda t: (-int(counts[t]), t))[:n]


def _tokens_for(model: AttnOnlyTransformer, tokens: Sequence[int] | None) -> list[int]:
    toks = list(tokens) if tokens is not None else readable_tokens(tokenizer=model.tokenizer or BYTES)
    bad = [t for t in toks if not 0 <= int(t) < model.cfg.d_vocab]
    if bad:
        raise ValueError(f"tokens {bad} are outside the model's vocabulary (0..{model.cfg.d_vocab - 1})")
    return [int(t) for t in toks]


def _labels(tokens: list[int], model: AttnOnlyTransformer) -> list[str]:
    # Models built without a tokenizer (hand-built test models) get ids.
    if model.tokenizer is not None:
        return model.tokenizer.labels(tokens)
    return [str(t) for t in tokens]


@torch.no_grad()
def full_qk_circuit(
    model: AttnOnlyTransformer, layer: int, head: int, tokens: Sequence[int] | None = None
) -> CircuitMatrix:
    """W_E W_Q W_K^T W_E^T / sqrt(d_head) on readable tokens: the attention score from a query token to a key token.

    This is the token-to-token (direct) term only: a layer-1 head's keys and queries also carry earlier heads'
    outputs (see k_composition_qk_circuit) and positions (see positional_qk_circuit). With smeared keys the key
    at j mixes tokens j and j-1; this matrix is the unsmeared W_QK.
    """
    toks = _tokens_for(model, tokens)
    w = circuit_weights(model)
    e = w.W_E[torch.tensor(toks)]
    m = (e @ w.W_Q[layer][head]) @ (e @ w.W_K[layer][head]).T / math.sqrt(model.cfg.d_head)
    labels = _labels(toks, model)
    return CircuitMatrix(
        m.float().numpy(),
        labels,
        labels,
        toks,
        toks,
        "query token",
        "key token",
        f"QK circuit of {head_name((layer, head))}",
    )


@torch.no_grad()
def k_composition_qk_circuit(
    model: AttnOnlyTransformer,
    layer: int,
    head: int,
    prev_head: Head,
    tokens: Sequence[int] | None = None,
) -> CircuitMatrix:
    """The induction term: query token a vs key position whose earlier head wrote token b (W_E W_QK (W_E W_OV)^T).

    Assumes prev_head attends fully to one token b (a previous-token head attends to the token before the key);
    then the key carries W_E[b] W_OV^{prev}. An induction head shows a bright diagonal: it attends to positions
    preceded by the current token.
    """
    p_layer, p_head = prev_head
    if p_layer >= layer:
        raise ValueError(f"the earlier head must be in an earlier layer than {layer}, got layer {p_layer}")
    toks = _tokens_for(model, tokens)
    w = circuit_weights(model)
    e = w.W_E[torch.tensor(toks)]
    written = (e @ w.W_V[p_layer][p_head]) @ w.W_O[p_layer][p_head]
    m = (e @ w.W_Q[layer][head]) @ (written @ w.W_K[layer][head]).T / math.sqrt(model.cfg.d_head)
    labels = _labels(toks, model)
    return CircuitMatrix(
        m.float().numpy(),
        labels,
        labels,
        toks,
        toks,
        "query token",
        f"token read by {head_name(prev_head)}",
        f"K-composition QK circuit of {head_name((layer, head))} through {head_name(prev_head)}",
    )


@torch.no_grad()
def positional_qk_circuit(model: AttnOnlyTransformer, layer: int, head: int, n_positions: int = 32) -> CircuitMatrix:
    """W_pos W_Q W_K^T W_pos^T / sqrt(d_head) over the first positions, future keys masked with NaN.

    A previous-token head shows a bright sub-diagonal (query i, key i - 1).
    """
    n = min(n_positions, model.cfg.n_ctx)
    w = circuit_weights(model)
    pos = w.W_pos[:n]
    q, k = w.pos_W_Q[layer][head], w.pos_W_K[layer][head]
    m = ((pos @ q) @ (pos @ k).T / math.sqrt(model.cfg.d_head)).float().numpy()
    m[np.triu_indices(n, k=1)] = np.nan
    idx = list(range(n))
    labels = [str(i) for i in idx]
    return CircuitMatrix(
        m, labels, labels, idx, idx, "query position", "key position", f"positional QK of {head_name((layer, head))}"
    )


@torch.no_grad()
def full_ov_circuit(
    model: AttnOnlyTransformer,
    layer: int,
    head: int,
    tokens: Sequence[int] | None = None,
    center: bool = True,
) -> CircuitMatrix:
    """W_E W_V W_O W_U on readable tokens: the logit of each output token when the head attends to a source token.

    With center=True each row has its mean over the whole vocabulary subtracted: softmax ignores a constant
    shift per row, so only the centred values say which tokens the head promotes. A copying head is bright
    on the diagonal.
    """
    toks = _tokens_for(model, tokens)
    logits = direct_path_logits(model, layer, head, toks)  # (n, vocab)
    if center:
        logits = logits - logits.mean(dim=-1, keepdim=True)
    m = logits[:, torch.tensor(toks)].numpy()
    labels = _labels(toks, model)
    return CircuitMatrix(
        m, labels, labels, toks, toks, "attended token", "output token", f"OV circuit of {head_name((layer, head))}"
    )
