"""Which heads carry in-context learning: per-head ablation tables and attribution of the phase change.

- ablation_table: ablate each head alone on a snapshot; change in ICL score (held-out text) and in the
  second-half loss on repeated random tokens, with an induction-head flag.
- phase_change_attribution (Olsson et al. 2022, "attribution of the phase change to heads"): the unit
  "before-and-after vector" (change of the stored per-token-loss vector across the detected phase-change
  window) dotted with each head's ablation-change vector (loss ablated - loss clean, same examples and
  positions) at the end of the window. Induction heads score strongly negative: removing them undoes the
  phase change.
- attribution_over_training: the same dot product with every snapshot's own ablation-change vectors.

Only the losses that are needed are computed: each example is cut after its last needed position (the
model is causal, so later tokens cannot matter) and examples are batched by that length. Where nothing
downstream can re-route attention (a last-layer head in any mode; every head under pattern-preserving
ablation) the model is linear in the removed output, so the ablated logits are the clean ones plus that
output pushed through the later layers' frozen patterns and OV circuits: exact, with no second forward
pass. Zero and mean ablation of earlier heads re-run the model with hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import metrics
from icl_core.analysis.ablation import AblationMode, ablation_hooks, check_mode, head_output_means
from icl_core.analysis.metrics import ICL_WINDOW, windowed_icl_score
from icl_core.analysis.pca import token_positions
from icl_core.analysis.phase import PhaseWindow, phase_window, stored_prefix_matching
from icl_core.heads import INDUCTION_THRESHOLD, Head, all_heads, head_name, induction_heads
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import AttnOnlyTransformer, pattern_name, result_name
from icl_core.storage.snapshots import SnapshotInfo, load_model

# ---------------------------------------------------------------------------------------------
# Losses at chosen positions with one head ablated at a time


def _at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (b, T, d) at positions pos (b, k): (b, k, d)."""
    return x.gather(1, pos[..., None].expand(-1, -1, x.shape[-1]))


def _propagate(
    model: AttnOnlyTransformer, cache: dict[str, torch.Tensor], layer: int, removed: torch.Tensor, pos: torch.Tensor
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
    model: AttnOnlyTransformer,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mode: str = AblationMode.PATTERN_PRESERVING,
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
    check_mode(mode)
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


def _counter(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None] | None:
    """An on_chunk callback that reports progress(done, total) across several head_ablation_losses calls."""
    if progress is None:
        return None
    done = [0]

    def tick() -> None:
        done[0] += 1
        progress(min(done[0], total), total)

    return tick


# ---------------------------------------------------------------------------------------------
# Ablation table


@dataclass(frozen=True)
class AblationRow:
    head: str  # "L1H2"
    layer: int
    index: int  # head index within the layer
    prefix_matching: float
    is_induction: bool
    icl_score: float | None  # ICL score with this head ablated (None: context too short to measure it)
    delta_icl: float | None  # ablated - clean; positive = less in-context learning
    second_half_loss: float  # repeated random tokens, second copy, head ablated
    delta_second_half: float  # ablated - clean; positive = the head helped copy the repeat


@dataclass(frozen=True)
class AblationTable:
    mode: str
    clean_icl: float | None
    clean_second_half: float
    n_examples: int
    n_repeated: int
    repeat_len: int
    rows: list[AblationRow]  # sorted, strongest effect of removing the head first

    def records(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rows]


def _prefix_matching(model: AttnOnlyTransformer) -> torch.Tensor:
    # The probe the training loop stores per snapshot (train.EvalData).
    repeated, seq_len = data.prefix_matching_probe(model.cfg.n_ctx, model.require_tokenizer())
    device = next(model.parameters()).device
    return metrics.prefix_matching_scores(model, repeated.to(device), seq_len).cpu()


def induction_flags(prefix_matching: Sequence[Sequence[float]], threshold: float = INDUCTION_THRESHOLD) -> set[Head]:
    """Heads whose prefix-matching score exceeds threshold, in layers >= 1 (any layer of a 1-layer model,
    which can only have induction heads through smeared keys) — as heads.induction_heads."""
    return set(induction_heads([[float(v) for v in row] for row in prefix_matching], threshold))


def _windowed_icl_per_head(
    model: AttnOnlyTransformer,
    n_examples: int,
    icl_window: int,
    mode: str,
    heads: Sequence[Head],
    means: dict[int, torch.Tensor] | None,
    chunk: int,
    on_chunk: Callable[[], None] | None = None,
) -> tuple[float, dict[Head, float]]:
    """Windowed ICL score (metrics.windowed_icl_score) clean and with each head ablated, on held-out text.

    Only the losses inside the two windows are computed; the in-context loss curve holds NaN elsewhere.
    """
    n_ctx = model.cfg.n_ctx
    examples = data.heldout_examples(n_examples, n_ctx, tokenizer=model.require_tokenizer())
    w = max(0, min(int(icl_window), ICL_EARLY_TOKEN, n_ctx - 2 - ICL_LATE_TOKEN))
    offsets = torch.arange(-w, w + 1)
    where = torch.cat([ICL_EARLY_TOKEN + offsets, ICL_LATE_TOKEN + offsets])
    clean, ablated = head_ablation_losses(
        model, examples, where[None].expand(len(examples), -1), mode, heads, means, chunk, on_chunk
    )

    def score(losses: torch.Tensor) -> float:
        curve = np.full(n_ctx - 1, np.nan)
        curve[where.numpy()] = losses.double().mean(0).numpy()
        return windowed_icl_score(curve, w)

    return score(clean), {h: score(v) for h, v in ablated.items()}


def ablation_table(
    model: AttnOnlyTransformer,
    mode: str = AblationMode.ZERO,
    n_examples: int = 128,
    n_repeated: int = 16,
    repeat_len: int = 100,
    induction_threshold: float = INDUCTION_THRESHOLD,
    prefix_matching: Sequence[Sequence[float]] | None = None,
    means: dict[int, torch.Tensor] | None = None,
    sort_by: str = "delta_icl",
    icl_window: int = ICL_WINDOW,
    chunk: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> AblationTable:
    """Ablate every head alone; change in ICL score and in second-half loss on repeated random tokens.

    ICL score: loss(500) - loss(50) on data.heldout_examples(n_examples) (None if the context is <= 500),
    each loss averaged over token indices +-icl_window around 500 and 50 (as the ablation page's live
    estimate). One token index per example is very noisy on a small batch (on the shipped 2-layer run, 64
    examples gave the induction head a *negative* change); icl_window=0 is the paper's exact definition.
    Repeated tokens: data.repeated_random_tokens(n_repeated, repeat_len, 2 repeats); the second-half loss
    leaves out the first token of the copy, which nothing in the context predicts.
    Rows are sorted by `sort_by` ("delta_icl" or "delta_second_half"), largest increase first; with no ICL
    score, by delta_second_half. prefix_matching (layer x head) may come from the snapshot's stored metrics.
    progress(done, total) is called after each batch of examples.
    """
    check_mode(mode)
    if sort_by not in ("delta_icl", "delta_second_half"):
        raise ValueError(f"sort_by must be 'delta_icl' or 'delta_second_half', got {sort_by!r}")
    cfg = model.cfg
    heads = all_heads(cfg.n_layers, cfg.n_heads)
    if mode == AblationMode.MEAN and means is None:
        means = head_output_means(model, data.mean_reference(cfg.n_ctx, tokenizer=model.require_tokenizer()))
    pm = (
        torch.as_tensor(prefix_matching, dtype=torch.float32)
        if prefix_matching is not None
        else _prefix_matching(model)
    )
    flagged = induction_flags(pm.tolist(), induction_threshold)

    has_icl = cfg.n_ctx > ICL_LATE_TOKEN + 1
    tick = _counter(progress, (n_chunks(n_examples, chunk) if has_icl else 0) + n_chunks(n_repeated, chunk))
    icl_clean: float | None = None
    icl_ablated: dict[Head, float] = {}
    if has_icl:
        icl_clean, icl_ablated = _windowed_icl_per_head(model, n_examples, icl_window, mode, heads, means, chunk, tick)

    repeated, half = data.repeated_twice(cfg.n_ctx, n_repeated, repeat_len, model.require_tokenizer())
    pos = torch.arange(half + 1, 2 * half)[None].expand(len(repeated), -1)
    clean_rep, ablated_rep = head_ablation_losses(model, repeated, pos, mode, heads, means, chunk, tick)
    second_clean = float(clean_rep.mean())

    rows = []
    for head in heads:
        second = float(ablated_rep[head].mean())
        icl_score = icl_ablated.get(head)
        rows.append(
            AblationRow(
                head=head_name(head),
                layer=head[0],
                index=head[1],
                prefix_matching=float(pm[head]),
                is_induction=head in flagged,
                icl_score=icl_score,
                delta_icl=None if icl_score is None or icl_clean is None else icl_score - icl_clean,
                second_half_loss=second,
                delta_second_half=second - second_clean,
            )
        )
    key = sort_by if has_icl else "delta_second_half"
    rows.sort(key=lambda r: (-getattr(r, key), r.layer, r.index))
    return AblationTable(mode, icl_clean, second_clean, n_examples if has_icl else 0, n_repeated, half, rows)


# ---------------------------------------------------------------------------------------------
# Attribution of the phase change to heads


def pca_examples(
    n_total: int, n_ctx: int, n_examples: int | None = None, tokenizer: Tokenizer = BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out examples and loss positions behind a snapshot's stored `pca_losses` (train.evaluate).

    Both are drawn for all n_total examples and then cut to the first n_examples, so a subset is the same
    examples and positions as the stored vector's first entries (drawing fewer would give other ones).
    """
    n = n_total if n_examples is None else min(int(n_examples), n_total)
    if n <= 0:
        raise ValueError("n_examples must be positive")
    examples = data.heldout_examples(n_total, n_ctx, tokenizer=tokenizer)
    positions = token_positions(n_total, n_ctx)
    return examples[:n], positions[:n]


def stored_loss_vector(snap: SnapshotInfo) -> torch.Tensor:
    v = snap.metrics.get("pca_losses")
    if not isinstance(v, list) or not v:
        raise ValueError(f"snapshot at step {snap.step} has no stored per-token losses (pca_losses)")
    out = torch.tensor([float(x) for x in v], dtype=torch.float64)
    if not torch.isfinite(out).all():
        raise ValueError(f"snapshot at step {snap.step} has non-finite per-token losses")
    return out


def before_after_vector(start: SnapshotInfo, end: SnapshotInfo, n_examples: int | None = None) -> torch.Tensor:
    """Unit vector of the change in the stored per-token-loss vector from `start` to `end` (first n_examples)."""
    a, b = stored_loss_vector(start), stored_loss_vector(end)
    if len(a) != len(b):
        raise ValueError("the two snapshots were evaluated on different numbers of examples")
    n = len(a) if n_examples is None else min(int(n_examples), len(a))
    d = (b - a)[:n]
    norm = float(d.norm())
    if norm == 0.0:
        raise ValueError("the per-token losses did not change between the two snapshots")
    return (d / norm).float()


def ablation_change_vectors(
    model: AttnOnlyTransformer,
    n_total: int,
    mode: str = AblationMode.PATTERN_PRESERVING,
    n_examples: int | None = None,
    heads: Sequence[Head] | None = None,
    chunk: int = 16,
    on_chunk: Callable[[], None] | None = None,
) -> dict[Head, torch.Tensor]:
    """Per head: loss with the head ablated - loss without, at the stored PCA examples and positions: (n,)."""
    examples, positions = pca_examples(n_total, model.cfg.n_ctx, n_examples, model.require_tokenizer())
    clean, ablated = head_ablation_losses(model, examples, positions, mode, heads, chunk=chunk, on_chunk=on_chunk)
    return {h: (v - clean)[:, 0] for h, v in ablated.items()}


def attribution_scores(
    before_after: torch.Tensor, changes: dict[Head, torch.Tensor]
) -> dict[Head, tuple[float, float]]:
    """Per head: (dot product with the unit before-and-after vector, cosine of the two vectors)."""
    out = {}
    for head, v in changes.items():
        if v.shape != before_after.shape:
            raise ValueError(f"{head_name(head)}: ablation vector {tuple(v.shape)} vs {tuple(before_after.shape)}")
        dot = float(torch.dot(before_after.double(), v.double()))
        norm = float(v.double().norm())
        out[head] = (dot, dot / norm if norm > 0 else 0.0)
    return out


@dataclass(frozen=True)
class PhaseEndpoints:
    window: PhaseWindow
    start: SnapshotInfo
    end: SnapshotInfo


def phase_endpoints(snaps: Sequence[SnapshotInfo]) -> PhaseEndpoints | None:
    """The snapshots at the start and end of the run's phase-change window, or None.

    The window is the app's own (phase.phase_window: located on the stored prefix-matching scores, the
    ICL score as fallback), so the attribution and the phase-change page talk about the same snapshots.
    """
    window = phase_window(snaps)
    if window is None:
        return None
    by_step = {s.step: s for s in snaps}
    if window.start_step not in by_step or window.end_step not in by_step:
        return None
    return PhaseEndpoints(window, by_step[window.start_step], by_step[window.end_step])


@dataclass(frozen=True)
class AttributionRow:
    head: str
    layer: int
    index: int
    score: float  # dot(unit before-and-after vector, ablation-change vector); scales with sqrt(n_examples)
    cosine: float  # the same, divided by the ablation vector's norm: comparable across n_examples
    prefix_matching: float  # at the end snapshot
    is_induction: bool


@dataclass(frozen=True)
class PhaseAttribution:
    window: PhaseWindow
    start_step: int
    end_step: int
    mode: str
    n_examples: int
    rows: list[AttributionRow]  # most negative score first

    def records(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rows]


def _stored_prefix_matching(snap: SnapshotInfo, model: AttnOnlyTransformer) -> torch.Tensor:
    pm = stored_prefix_matching(snap)
    return torch.tensor(pm, dtype=torch.float32) if pm is not None else _prefix_matching(model)


def phase_change_attribution(
    snaps: Sequence[SnapshotInfo],
    mode: str = AblationMode.PATTERN_PRESERVING,
    n_examples: int | None = 128,
    induction_threshold: float = INDUCTION_THRESHOLD,
    chunk: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> PhaseAttribution | None:
    """Attribute the phase change to heads (Olsson et al. 2022); None if the run shows no phase change.

    n_examples: the first n of the stored examples (None: all, as stored: 512 in the shipped runs); both the
    before-and-after vector and the ablation vectors use the same subset, re-normalised on it.
    progress(done, total) is called after each batch of examples.
    """
    check_mode(mode)
    ends = phase_endpoints(snaps)
    if ends is None:
        return None
    ba = before_after_vector(ends.start, ends.end, n_examples)
    model = load_model(ends.end)
    n_total = len(stored_loss_vector(ends.end))
    tick = _counter(progress, n_chunks(len(ba), chunk))
    changes = ablation_change_vectors(model, n_total, mode, len(ba), chunk=chunk, on_chunk=tick)
    scores = attribution_scores(ba, changes)
    pm = _stored_prefix_matching(ends.end, model)
    flagged = induction_flags(pm.tolist(), induction_threshold)
    rows = [AttributionRow(head_name(h), h[0], h[1], s, c, float(pm[h]), h in flagged) for h, (s, c) in scores.items()]
    rows.sort(key=lambda r: (r.score, r.layer, r.index))
    return PhaseAttribution(ends.window, ends.start.step, ends.end.step, mode, len(ba), rows)


def attribution_over_training(
    snaps: Sequence[SnapshotInfo],
    mode: str = AblationMode.PATTERN_PRESERVING,
    n_examples: int | None = 64,
    steps: Sequence[int] | None = None,
    induction_threshold: float = INDUCTION_THRESHOLD,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 16,
) -> list[dict[str, object]]:
    """The attribution score of every head at every snapshot (or at `steps`), against the fixed phase-change
    before-and-after vector: rows (step, tokens, head, layer, score, cosine, prefix_matching, is_induction).

    is_induction is the flag at the end of the phase change, so a head keeps one colour across the chart;
    prefix_matching is the snapshot's own. Empty if the run shows no phase change. progress(done, total) is
    called after each snapshot. Cost: one forward pass per non-last-layer head per snapshot.
    """
    check_mode(mode)
    ends = phase_endpoints(snaps)
    if ends is None:
        return []
    ba = before_after_vector(ends.start, ends.end, n_examples)
    n_total = len(stored_loss_vector(ends.end))
    end_model = load_model(ends.end)
    flagged = induction_flags(_stored_prefix_matching(ends.end, end_model).tolist(), induction_threshold)
    chosen = set(steps) if steps is not None else None
    wanted = [s for s in snaps if chosen is None or s.step in chosen]
    rows: list[dict[str, object]] = []
    for i, snap in enumerate(wanted):
        model = end_model if snap.step == ends.end.step else load_model(snap)
        pm = _stored_prefix_matching(snap, model)
        scores = attribution_scores(ba, ablation_change_vectors(model, n_total, mode, len(ba), chunk=chunk))
        for h, (s, c) in scores.items():
            rows.append(
                {
                    "step": snap.step,
                    "tokens": snap.tokens_seen,
                    "head": head_name(h),
                    "layer": h[0],
                    "score": s,
                    "cosine": c if math.isfinite(c) else 0.0,
                    "prefix_matching": float(pm[h]),
                    "is_induction": h in flagged,
                }
            )
        if progress is not None:
            progress(i + 1, len(wanted))
    return rows
