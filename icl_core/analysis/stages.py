"""Developmental stages from the LLC curve (Hoogland et al. 2024): boundaries at its critical points.

The rule, stated once. Only valid estimates count: those after the last negative one (a negative LLC means SGLD
found lower loss nearby: the snapshot is not at a local minimum, as early in training, and the estimate does not
measure degeneracy there; where they alternate, none of them is trusted). Smooth the LLC against log(tokens seen)
with a Gaussian of SMOOTHING_DECADES; a boundary is where the smoothed curve's slope changes sign (a local maximum
or minimum). A rise or fall between two neighbouring boundaries smaller than MIN_CHANGE_SE times the noise (the
larger of the chains' typical standard error and the snapshots' rms scatter about the smoothed curve) is noise: the
pair is merged away, smallest first. Step 0 (no tokens seen) has no place on a log axis and is left out.
(Published boundaries, for comparison: icl_core.storage.published.published_stage_boundaries.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SMOOTHING_DECADES = 0.15  # the Gaussian's width in log10(tokens): about three snapshots of a 36-snapshot run
MIN_CHANGE_SE = 3.0


def smoothed(
    tokens: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, decades: float = SMOOTHING_DECADES
) -> np.ndarray:
    """Gaussian kernel smoothing in log10(tokens) (the snapshots are log-spaced, denser in places)."""
    x = np.log10(np.asarray(tokens, dtype=float))
    y = np.asarray(values, dtype=float)
    weights = np.exp(-0.5 * ((x[:, None] - x[None, :]) / decades) ** 2)
    return (weights @ y) / weights.sum(axis=1)


def scatter(x: np.ndarray, y: np.ndarray, decades: float = SMOOTHING_DECADES) -> float:
    """The rms of the estimates about their smoothed curve: how much one snapshot's differs from the next's."""
    return float(np.sqrt(np.mean((y - smoothed(x, y, decades)) ** 2)))


def first_valid_tokens(tokens: Sequence[int], llc: Sequence[float]) -> int | None:
    """The tokens seen at the first valid estimate: the first after the last negative one (None: none valid)."""
    keep = _valid(tokens, llc, None)
    return int(tokens[keep[0]]) if keep else None


def _valid(tokens: Sequence[int], llc: Sequence[float], valid_from: int | None) -> list[int]:
    """Indices of the valid estimates: from `valid_from` tokens on when given (a head's refined LLC takes the
    whole model's verdict: being at a local minimum is the snapshot's property, and a head's small estimate dips
    below zero by noise alone), else after the last negative one. Step 0 and non-finite ones are left out."""
    if valid_from is None:
        negative = [i for i, v in enumerate(llc) if np.isfinite(v) and v <= 0]
        start = negative[-1] + 1 if negative else 0
        return [i for i in range(start, len(llc)) if tokens[i] > 0 and np.isfinite(llc[i])]
    return [i for i in range(len(llc)) if tokens[i] >= max(valid_from, 1) and np.isfinite(llc[i])]


def stage_boundaries(
    tokens: Sequence[int], llc: Sequence[float], se: Sequence[float], decades: float = SMOOTHING_DECADES
) -> list[int]:
    """The tokens seen at each boundary (see the module's rule); [] for fewer than 5 valid points."""
    keep = _valid(tokens, llc, None)
    if len(keep) < 5:
        return []
    x = np.asarray([tokens[i] for i in keep], dtype=float)
    raw = np.asarray([llc[i] for i in keep], dtype=float)
    y = smoothed(x, raw, decades)
    slope = np.sign(np.diff(y))
    extrema = [i for i in range(1, len(slope)) if slope[i] != 0 and slope[i - 1] != 0 and slope[i] != slope[i - 1]]
    floor = MIN_CHANGE_SE * max(float(np.median([se[i] for i in keep])), scatter(x, raw, decades))
    points = [0, *extrema, len(y) - 1]  # the ends anchor the first and last rise
    while len(points) > 2:
        changes = [abs(y[points[k + 1]] - y[points[k]]) for k in range(len(points) - 1)]
        k = int(np.argmin(changes))
        if changes[k] >= floor:
            break
        # Merge the weakest stretch away: drop its inner end(s), keeping the two ends of the run.
        drop = {points[k], points[k + 1]} - {points[0], points[-1]}
        if not drop:
            break
        points = [p for p in points if p not in drop]
    return [int(x[p]) for p in points[1:-1]]


@dataclass(frozen=True)
class WindowGrowth:
    """How fast the LLC grows (per decade of tokens) in the stretch before a window, inside it and after it, the
    outer two as wide (in decades) as the window. Each end is the mean of three neighbouring snapshots; `se` comes
    from the snapshots' scatter about the smoothed curve (larger than the chains' spread: it is what varies from
    one snapshot to the next). None for a stretch that is not inside the valid estimates."""

    before: float | None
    inside: float | None
    after: float | None
    se_per_decade: float  # the s.e. of a difference of two 3-snapshot means, per decade of the window's width
    scatter: float  # rms of the valid estimates about the smoothed curve


def _mean3_at(x: np.ndarray, y: np.ndarray, tokens: float) -> tuple[float, float]:
    """The mean of the three valid points around the one nearest `tokens` (log scale), and that point's tokens."""
    i = int(np.argmin(np.abs(np.log10(x) - np.log10(tokens))))
    lo = min(max(i - 1, 0), len(x) - 3)
    return float(np.mean(y[lo : lo + 3])), float(x[i])


def growth_around_window(
    tokens: Sequence[int],
    llc: Sequence[float],
    start_tokens: int,
    end_tokens: int,
    valid_from: int | None = None,
    decades: float = SMOOTHING_DECADES,
) -> WindowGrowth | None:
    """The LLC's growth before, inside and after the window [start_tokens, end_tokens] (see WindowGrowth); None
    where fewer than 5 valid estimates exist. Valid: after the last negative estimate, as for the boundaries, or
    from `valid_from` tokens on (a head's refined LLC: see _valid)."""
    keep = _valid(tokens, llc, valid_from)
    if len(keep) < 5 or end_tokens <= start_tokens:
        return None
    x = np.asarray([tokens[i] for i in keep], dtype=float)
    y = np.asarray([llc[i] for i in keep], dtype=float)
    noise = scatter(x, y, decades)
    width = float(np.log10(end_tokens / start_tokens))
    edges = [start_tokens / 10**width, start_tokens, end_tokens, end_tokens * 10**width]

    def rate(a: float, b: float) -> float | None:
        if a < x[0] or b > x[-1]:
            return None
        (va, ta), (vb, tb) = _mean3_at(x, y, a), _mean3_at(x, y, b)
        return (vb - va) / float(np.log10(tb / ta)) if tb > ta else None

    before, inside, after = (rate(a, b) for a, b in itertools.pairwise(edges))
    return WindowGrowth(before, inside, after, float(noise * np.sqrt(2 / 3) / width), noise)
