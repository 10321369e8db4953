"""Locating the phase change in a run's trajectory (from the data, never from the paper's numbers).

At the phase change induction heads form, the ICL score falls, and the loss PCA trajectory turns
(Olsson et al. 2022). Of these, the best prefix-matching score is the cleanest signal on our small
held-out sets (0.05 -> 0.8, while the ICL score jitters by ~0.05 between snapshots), so a run's
window is located on it; runs without stored head scores fall back to the ICL score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

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
    candidates = layers[1:] if len(layers) > 1 else layers
    return max(float(v) for layer in candidates for v in layer)


def detect_run_phase_change(
    steps: Sequence[int],
    icl_scores: Sequence[float | None],
    prefix_matching: Sequence[Sequence[Sequence[float]] | None],
) -> PhaseWindow | None:
    """A run's phase change: where its induction heads form, else (no head scores) where its ICL score falls."""
    pairs = [(s, v) for s, v in zip(steps, icl_scores, strict=True) if v is not None]
    if prefix_matching and all(pm for pm in prefix_matching):
        rise = [-best_induction_score(pm) for pm in prefix_matching]
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
