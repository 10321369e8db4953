"""Per-token-loss PCA (Olsson et al. 2022): one loss vector per snapshot, reduced jointly to 2-D."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icl_core import data
from icl_core.analysis.summary import nearest_by_tokens
from icl_core.errors import ICLError
from icl_core.model.tokenizer import load_tokenizer
from icl_core.storage.snapshots import SnapshotInfo

PCA_POSITION_SEED = 4321
# Snapshots before this step are left out of the fit by default: in the first few dozen steps every
# model collapses from uniform predictions (loss 5.5 -> 3 nats), a change so large that it would
# take both components and hide the later, smaller turn at the phase change.
PCA_MIN_STEP = 30


def token_positions(n_examples: int, n_ctx: int, seed: int = PCA_POSITION_SEED) -> torch.Tensor:
    """One random loss position per example, the same for every model and snapshot."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_ctx - 1, (n_examples,), generator=gen)


def select_positions(losses: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """From per-token losses (n_examples, n_ctx - 1), the loss at each example's chosen position."""
    return losses.gather(1, positions[:, None]).squeeze(1)


@dataclass
class PCAResult:
    coords: dict[str, np.ndarray]  # run name -> (n_snapshots, 2), in step order
    steps: dict[str, list[int]]
    explained_variance_ratio: np.ndarray
    components: np.ndarray


def joint_pca(vectors: dict[str, list[tuple[int, np.ndarray]]], n_components: int = 2) -> PCAResult:
    """Fit one PCA on all snapshots of all runs; vectors: run -> [(step, loss vector)]."""
    names = sorted(vectors)
    lengths = {len(v) for name in names for _, v in vectors[name]}
    if len(lengths) != 1:
        raise ValueError(
            f"loss vectors have different lengths {sorted(lengths)}: runs were evaluated on different examples"
        )
    stacked = np.stack(
        [np.asarray(v, dtype=np.float64) for name in names for _, v in sorted(vectors[name], key=lambda sv: sv[0])]
    )
    from sklearn.decomposition import PCA  # imported here: ~1.5 s that pages without the PCA plane need not wait

    pca = PCA(n_components=n_components, svd_solver="full")
    flat = pca.fit_transform(stacked)
    # PCA's sign is arbitrary; fix it so the first snapshot of the first run has negative coordinates.
    signs = np.where(flat[0] > 0, -1.0, 1.0)
    flat = flat * signs
    coords, steps, i = {}, {}, 0
    for name in names:
        ordered = sorted(vectors[name], key=lambda sv: sv[0])
        coords[name] = flat[i : i + len(ordered)]
        steps[name] = [s for s, _ in ordered]
        i += len(ordered)
    return PCAResult(coords, steps, pca.explained_variance_ratio_, pca.components_ * signs[:, None])


TURN_SPAN_DECADES = 0.25  # each side of a point, in log10(tokens seen): what "before" and "after" mean


def turn_strengths(
    trajectory: np.ndarray, tokens: Sequence[int], span_decades: float = TURN_SPAN_DECADES
) -> np.ndarray:
    """How sharply a PCA trajectory turns at each snapshot: angle x distance, over fixed spans of log tokens.

    At snapshot i, "before" is the move from the point span_decades earlier (in log10 tokens seen, the
    trajectory interpolated linearly there) to i, "after" the move from i to span_decades later; the
    strength is the angle between them times the shorter move. Spans of log tokens, not of snapshots,
    make the statistic the same however densely a stretch of training was sampled; weighting by the
    shorter move keeps the jitter of a converged run (tiny moves in random directions) from counting as
    a turn. NaN where a full span does not fit on both sides (and at 0 tokens).
    """
    x = np.asarray(trajectory, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.float64)
    out = np.full(len(x), np.nan)
    ok = t > 0
    if ok.sum() < 3:
        return out
    lt, xs = np.log10(t[ok]), x[ok]

    def at(u: float) -> np.ndarray:
        return np.array([np.interp(u, lt, xs[:, d]) for d in range(xs.shape[1])])

    idx = np.flatnonzero(ok)
    for j, i in enumerate(idx):
        if lt[j] - span_decades < lt[0] or lt[j] + span_decades > lt[-1]:
            continue
        before = xs[j] - at(lt[j] - span_decades)
        after = at(lt[j] + span_decades) - xs[j]
        nb, na = np.linalg.norm(before), np.linalg.norm(after)
        cos = float(before @ after / max(nb * na, 1e-12))
        out[i] = math.acos(min(1.0, max(-1.0, cos))) * min(nb, na)
    return out


def sharpest_turn(trajectory: np.ndarray, tokens: Sequence[int], span_decades: float = TURN_SPAN_DECADES) -> int | None:
    """Index of the snapshot where turn_strengths is largest, or None when no snapshot has a full span."""
    strengths = turn_strengths(trajectory, tokens, span_decades)
    return None if np.isnan(strengths).all() else int(np.nanargmax(strengths))


@dataclass
class PCATable:
    rows: list[dict[str, Any]]  # run, step, tokens, pc1, pc2, order, icl_score
    explained: tuple[float, float]
    skipped: dict[str, str]  # run -> why it is not in the plane
    n_examples: int = 0  # the held-out examples (one loss each) every vector in the plane is cut to


def _loss_vectors(snaps: Sequence[SnapshotInfo], min_step: int) -> list[tuple[int, np.ndarray]]:
    return [
        (s.step, np.asarray(s.metrics.pca_losses, dtype=np.float64))
        for s in snaps
        if s.step >= min_step and s.metrics.pca_losses is not None  # finite and non-empty when stored
    ]


def _plane_key(snaps: Sequence[SnapshotInfo], n_examples: int) -> tuple[int, str, str]:
    """Runs with the same key were evaluated on the same held-out examples, up to how many (data.heldout_draw):
    the same context, the same tokenizer file (Pythia's sizes each ship an identical one) and the same draw."""
    cfg = snaps[0].model_config
    tokenizer = load_tokenizer(cfg.tokenizer, snaps[0].run_dir)
    return cfg.n_ctx, tokenizer.key, data.heldout_draw(n_examples, cfg.n_ctx, tokenizer)


def pca_table(
    per_run: Mapping[str, Sequence[SnapshotInfo]], focus_run: str | None = None, min_step: int = PCA_MIN_STEP
) -> PCATable | None:
    """Joint PCA of the stored per-token-loss vectors of every compatible run, snapshots from min_step on.

    Runs are compatible when they were evaluated on the same held-out examples and positions (_plane_key); the
    group holding `focus_run` wins, else the largest. Its vectors are cut to the focus run's example count (else
    the group's largest): a run evaluated on fewer examples (a larger model, to the evaluation's FLOP budget) is
    left out, and the plane it would join is the one drawn when it is the focus.
    """
    groups: dict[tuple[int, str, str], dict[str, list[tuple[int, np.ndarray]]]] = {}
    labels: dict[tuple[int, str, str], str] = {}
    skipped: dict[str, str] = {}
    tokens = {(name, s.step): s.tokens_seen for name, snaps in per_run.items() for s in snaps}
    icl = {(name, s.step): s.metrics.icl_score for name, snaps in per_run.items() for s in snaps}
    for name, snaps in per_run.items():
        vecs = _loss_vectors(snaps, min_step)
        lengths = {len(v) for _, v in vecs}
        if len(lengths) != 1:
            skipped[name] = (
                "no per-token losses stored" if not vecs else "snapshots were evaluated on different examples"
            )
            continue
        try:
            key = _plane_key(snaps, lengths.pop())
        except ICLError as exc:
            skipped[name] = f"its tokenizer cannot be read ({exc})"
            continue
        groups.setdefault(key, {})[name] = vecs
        labels[key] = f"context {key[0]}, tokenizer {snaps[0].model_config.tokenizer}"
    if not groups:
        return None
    focus_key = next((k for k, g in groups.items() if focus_run in g), None)
    key = focus_key or max(groups, key=lambda k: (sum(len(v) for v in groups[k].values()), k))
    for other, g in groups.items():
        if other != key:
            skipped.update({name: f"evaluated on other examples ({labels[other]}, not {labels[key]})" for name in g})
    counts = {name: len(vecs[0][1]) for name, vecs in groups[key].items()}
    n_examples = counts[focus_run] if focus_run in counts else max(counts.values())
    chosen: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name, vecs in groups[key].items():
        if counts[name] < n_examples:
            skipped[name] = f"evaluated on {counts[name]} held-out examples, fewer than this plane's {n_examples}"
        else:
            chosen[name] = [(step, v[:n_examples]) for step, v in vecs]
    if sum(len(v) for v in chosen.values()) < 2:
        return None
    result: PCAResult = joint_pca(chosen)
    rows = []
    for name in sorted(result.coords):
        for order, (step, xy) in enumerate(zip(result.steps[name], result.coords[name], strict=True)):
            rows.append(
                {
                    "run": name,
                    "step": int(step),
                    "tokens": int(tokens[(name, step)]),
                    "pc1": float(xy[0]),
                    "pc2": float(xy[1]),
                    "order": order,
                    "icl_score": icl[(name, step)],
                }
            )
    ratio = result.explained_variance_ratio
    return PCATable(rows, (float(ratio[0]), float(ratio[1]) if len(ratio) > 1 else 0.0), skipped, n_examples)


def highlighted_pca_rows(table: PCATable, focus_run: str, step: int, tokens: int | None = None) -> list[dict[str, Any]]:
    """Per run, the point matching the selection: the focus run's own step, the others' nearest in tokens seen.

    A step that is not in the plane (before the PCA's first step) is matched by `tokens` on every run,
    the focus run included, so the rings still show roughly where the selection lies.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in table.rows:
        by_run.setdefault(row["run"], []).append(row)
    focus = next((r for r in by_run.get(focus_run, []) if r["step"] == step), None)
    wanted_tokens = focus["tokens"] if focus else tokens
    out = []
    for name, rows in by_run.items():
        if focus is not None and name == focus_run:
            out.append({**focus, "focus": True})
        elif wanted_tokens is not None:
            nearest = rows[nearest_by_tokens([r["tokens"] for r in rows], wanted_tokens)]
            out.append({**nearest, "focus": name == focus_run})
    return out


def rings_over_training(
    table: PCATable, focus_run: str, steps_tokens: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """highlighted_pca_rows for every snapshot of the focus run (its `steps_tokens`, in order), each ring tagged
    with its snapshot's index (`frame`): the rings a training timeline moves through in the browser."""
    return [
        {**row, "frame": frame}
        for frame, (step, tokens) in enumerate(steps_tokens)
        for row in highlighted_pca_rows(table, focus_run, step, tokens)
    ]
