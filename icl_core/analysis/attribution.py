"""Which heads caused the phase change: its attribution to heads (the per-head ablation table of one snapshot is
icl_core.analysis.head_table; both are built on icl_core.analysis.head_ablation).

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

import torch

from icl_core import data
from icl_core.analysis.ablation import AblationMode, check_mode
from icl_core.analysis.head_ablation import chunk_counter, head_ablation_losses, n_chunks
from icl_core.analysis.head_table import induction_flags, probe_prefix_matching
from icl_core.analysis.pca import token_positions
from icl_core.analysis.phase import PhaseWindow, phase_window
from icl_core.heads import INDUCTION_THRESHOLD, Head, head_name
from icl_core.model.family import Model
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.storage.snapshots import SnapshotInfo, load_model

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
    v = snap.metrics.pca_losses
    if v is None:  # never stored, or stored with NaN or inf (SnapshotMetrics leaves those out)
        raise ValueError(f"snapshot at step {snap.step} has no usable stored per-token losses (pca_losses)")
    return torch.tensor(v, dtype=torch.float64)


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
    model: Model,
    n_total: int,
    mode: AblationMode = AblationMode.PATTERN_PRESERVING,
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
    mode: AblationMode
    n_examples: int
    rows: list[AttributionRow]  # most negative score first

    def records(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rows]


def _stored_prefix_matching(snap: SnapshotInfo, model: Model) -> torch.Tensor:
    pm = snap.metrics.prefix_matching
    return torch.tensor(pm, dtype=torch.float32) if pm is not None else probe_prefix_matching(model)


def phase_change_attribution(
    snaps: Sequence[SnapshotInfo],
    mode: AblationMode = AblationMode.PATTERN_PRESERVING,
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
    mode = check_mode(mode)  # a plain string (a stored key, a link) is checked and becomes the enum
    ends = phase_endpoints(snaps)
    if ends is None:
        return None
    ba = before_after_vector(ends.start, ends.end, n_examples)
    model = load_model(ends.end)
    n_total = len(stored_loss_vector(ends.end))
    tick = chunk_counter(progress, n_chunks(len(ba), chunk))
    changes = ablation_change_vectors(model, n_total, mode, len(ba), chunk=chunk, on_chunk=tick)
    scores = attribution_scores(ba, changes)
    pm = _stored_prefix_matching(ends.end, model)
    flagged = induction_flags(pm.tolist(), induction_threshold)
    rows = [AttributionRow(head_name(h), h[0], h[1], s, c, float(pm[h]), h in flagged) for h, (s, c) in scores.items()]
    rows.sort(key=lambda r: (r.score, r.layer, r.index))
    return PhaseAttribution(ends.window, ends.start.step, ends.end.step, mode, len(ba), rows)


def attribution_over_training(
    snaps: Sequence[SnapshotInfo],
    mode: AblationMode = AblationMode.PATTERN_PRESERVING,
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
    mode = check_mode(mode)  # a plain string (a stored key, a link) is checked and becomes the enum
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
