"""Locating the phase change in a run's ICL-score trajectory (from the data, never from the paper)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A run whose ICL score never falls by this much (nats) from its early plateau has no phase change.
MIN_DROP_NATS = 0.15


@dataclass(frozen=True)
class PhaseWindow:
    start_step: int  # ICL score has fallen 10% of the way from its pre-change high to its low
    end_step: int  # ... and 90% of the way
    center_step: int  # steepest fall between consecutive snapshots
    drop: float  # pre-change high minus the low after it (nats)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Median of 3 neighbours: removes single-snapshot noise, keeps real steps."""
    if len(values) < 3:
        return values
    padded = np.concatenate([values[:1], values, values[-1:]])
    return np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)


def detect_phase_change(
    steps: list[int], icl_scores: list[float], min_drop: float = MIN_DROP_NATS
) -> PhaseWindow | None:
    """The window of snapshots over which the ICL score falls sharply, or None if it never does."""
    if len(steps) != len(icl_scores):
        raise ValueError("steps and icl_scores must have the same length")
    if len(steps) < 3:
        return None
    order = np.argsort(steps)
    s = np.asarray(steps)[order]
    v = _smooth(np.asarray(icl_scores, dtype=float)[order])
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
    return PhaseWindow(int(s[max(start - 1, 0)]), int(s[end]), int(s[center + 1]), drop)
