"""Locating the phase change in a run's trajectory (from the data, never from the paper's numbers).

At the phase change induction heads form, the ICL score falls, and the loss PCA trajectory turns
(Olsson et al. 2022). Of these, the best prefix-matching score is the cleanest signal on our small
held-out sets (0.05 -> 0.8, while the ICL score jitters by ~0.05 between snapshots), so a run's
window is located on it; runs without stored head scores fall back to the ICL score.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from icl_core import evalset
from icl_core.heads import INDUCTION_THRESHOLD, Head, induction_heads, min_induction_layer
from icl_core.model.config import BYTES_TOKENIZER
from icl_core.storage.snapshots import SnapshotInfo

# A run whose ICL score never falls by this much (nats) from its early plateau has no phase change.
MIN_DROP_NATS = 0.15
# ... and one whose best prefix-matching score never rises this much forms no induction head.
MIN_INDUCTION_RISE = 0.2


@dataclass(frozen=True)
class PhaseWindow:
    start_step: int  # the signal has moved 10% of the way from its pre-change level to its final level
    end_step: int  # ... and 90% of the way
    center_step: int  # steepest change between consecutive snapshots
    drop: float  # size of the change (nats of ICL score, or prefix-matching score)
    signal: str = "icl_score"  # which series located the window: "icl_score" or "prefix_matching"
    icl_change: float | None = None  # ICL score at the end minus at the start (3-snapshot medians)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Median of 3 neighbours: removes single-snapshot noise, keeps real steps."""
    if len(values) < 3:
        return values
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def detect_phase_change(
    steps: Sequence[int], values: Sequence[float], min_drop: float = MIN_DROP_NATS, signal: str = "icl_score"
) -> PhaseWindow | None:
    """The window of snapshots over which `values` falls sharply, or None if it never falls by min_drop."""
    if len(steps) != len(values):
        raise ValueError("steps and values must have the same length")
    if len(steps) < 3:
        return None
    order = np.argsort(steps)
    s = np.asarray(steps)[order]
    v = _smooth(np.asarray(values, dtype=float)[order])
    fall = np.diff(v)
    center = int(np.argmin(fall))  # the fall happens between snapshots center and center + 1
    high = float(v[: center + 1].max())
    low = float(v[center + 1 :].min())
    drop = high - low
    if drop < min_drop:
        return None
    i_high = int(np.argmax(v[: center + 1]))
    after = v[i_high:]
    start = i_high + int(np.argmax(after <= high - 0.1 * drop))
    end = i_high + int(np.argmax(after <= high - 0.9 * drop))
    return PhaseWindow(int(s[max(start - 1, 0)]), int(s[end]), int(s[center + 1]), drop, signal)


def best_induction_score(prefix_matching: Sequence[Sequence[float]]) -> float:
    """Highest prefix-matching score of any head that could be an induction head.

    Without smeared keys a layer-0 head cannot see the previous token's identity, but a 1-layer
    smeared-key model can: so layer 0 counts only for 1-layer models.
    """
    layers = list(prefix_matching)
    return max(float(v) for layer in layers[min_induction_layer(len(layers)) :] for v in layer)


def detect_run_phase_change(
    steps: Sequence[int],
    icl_scores: Sequence[float | None],
    prefix_matching: Sequence[Sequence[Sequence[float]] | None],
) -> PhaseWindow | None:
    """A run's phase change: where its induction heads form, else (no head scores) where its ICL score falls."""
    pairs = [(s, v) for s, v in zip(steps, icl_scores, strict=True) if v is not None]
    complete = [pm for pm in prefix_matching or [] if pm]
    if prefix_matching and len(complete) == len(prefix_matching):
        rise = [-best_induction_score(pm) for pm in complete]
        window = detect_phase_change(steps, rise, MIN_INDUCTION_RISE, signal="prefix_matching")
    else:
        window = detect_phase_change([p[0] for p in pairs], [p[1] for p in pairs])
    if window is None or len(pairs) < 3:
        return window
    icl_steps = np.asarray([p[0] for p in pairs])
    icl = _smooth(np.asarray([p[1] for p in pairs], dtype=float)[np.argsort(icl_steps)])
    icl_steps = np.sort(icl_steps)

    def at(step: int) -> float:
        return float(icl[int(np.argmin(np.abs(icl_steps - step)))])

    return replace(window, icl_change=at(window.end_step) - at(window.start_step))


# ---------------------------------------------------------------------------------------------
# A run's phase change, from its stored snapshot metrics


def best_induction_head(snap: SnapshotInfo) -> Head | None:
    """The head with the highest stored prefix-matching score in layers >= 1 (any layer of a 1-layer model)."""
    pm = snap.metrics.prefix_matching
    found = induction_heads(pm, threshold=-1.0) if pm else []
    return found[0] if found else None


def phase_window(snaps: Sequence[SnapshotInfo]) -> PhaseWindow | None:
    """The phase change located from the stored head scores (or ICL scores when those are missing), or None."""
    usable = [s for s in snaps if s.metrics.icl_score is not None or s.metrics.prefix_matching is not None]
    if len(usable) < 3:
        return None
    return detect_run_phase_change(
        [s.step for s in usable],
        [s.metrics.icl_score for s in usable],
        [s.metrics.prefix_matching for s in usable],
    )


def induction_onset(snaps: Sequence[SnapshotInfo], threshold: float = INDUCTION_THRESHOLD) -> tuple[int, Head] | None:
    """First snapshot from which some head (layer >= 1 in deep models) keeps a prefix-matching score above threshold.

    A second witness of the phase change besides the ICL score: "induction heads form". Requiring the
    score to stay above the threshold at the next snapshot too ignores single-snapshot blips.
    """
    above: list[Head | None] = []
    for s in snaps:
        pm = s.metrics.prefix_matching
        heads = induction_heads(pm, threshold) if pm is not None else []
        above.append(heads[0] if heads else None)
    for i, head in enumerate(above):
        if head is not None and (i + 1 == len(above) or above[i + 1] is not None):
            return snaps[i].step, head
    return None


def phase_status(window: PhaseWindow | None, step: int) -> str:
    if window is None:
        return "no phase change"
    if step < window.start_step:
        return "before the phase change"
    if step <= window.end_step:
        return "during the phase change"
    return "after the phase change"


# The early stage: before a model has learned even the byte frequencies of its text, its predictions depend on
# the absolute position (the positional embedding is the one input that varies along the context), so
# loss(500) − loss(50) swings by ±0.1–0.2 nats for reasons that have nothing to do with the context: with every
# position given position 50's embedding the swing vanishes (staging/issue26/README.md, probe_early_swing.py).
# A run is in that stage while its held-out loss is above the unigram entropy of the held-out text, the loss a
# model that knows only byte frequencies would reach (3.05 nats on the shipped evaluation set).
EARLY_STAGE_LABEL = "early stage: positional swing, before byte frequencies are learned"


@functools.lru_cache(maxsize=1)
def unigram_entropy_nats() -> float:
    """Entropy of the byte frequencies of the shipped evaluation set's examples (what the held-out loss is on)."""
    counts = np.bincount(evalset.load().examples.reshape(-1), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def early_stage_end(snaps: Sequence[SnapshotInfo]) -> int | None:
    """Tokens seen at the first snapshot whose held-out loss is at or below the unigram entropy: the end of the
    early stage. None for runs not on bytes (their held-out text differs) or without a held-out loss from start."""
    scored = [
        (s.tokens_seen, loss)
        for s in snaps
        if s.model_config.tokenizer == BYTES_TOKENIZER and (loss := s.metrics.heldout_loss) is not None
    ]
    if not scored or scored[0][1] <= unigram_entropy_nats():  # no snapshot from before the stage ended
        return None
    return next((tokens for tokens, loss in scored if loss <= unigram_entropy_nats()), None)
