"""Claims that must not hang on one probe draw or one snapshot (issue 36's re-check):

- the phase-change window located with other draws of the prefix-matching probe (other random tokens, other
  pools): its start and end as a range over the draws;
- a figure read at one snapshot, read instead as the mean of that snapshot and its two neighbours;
- the paper's third sign, the loss bump: the held-out loss against a smooth fit through the window, beside the
  neighbour jitter.
All pure functions of a run's snapshots (the draws run forward passes on the stored weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import metrics
from icl_core.analysis.phase import PhaseWindow, detect_run_phase_change
from icl_core.model.tokenizer import BOS
from icl_core.storage.snapshot_metrics import IclKey
from icl_core.storage.snapshots import SnapshotInfo, load_model

PRINTABLE = tuple(range(32, 127))  # the printable ASCII bytes: the re-check's other pools were drawn from these
N_OTHER_DRAWS = 5  # draws besides the app's own probe


def probe_draw(draw: int, n_ctx: int) -> tuple[torch.Tensor, int]:
    """The prefix-matching probe of `draw`: 0 is the app's own (data.prefix_matching_probe); draw k ≥ 1 takes 25
    random printable bytes (seed k) as its pool, then draws its sequences from that pool with seed k."""
    if draw == 0:
        return data.prefix_matching_probe(n_ctx)
    seq_len, n_repeats = data.prefix_matching_probe_shape(n_ctx)
    gen = torch.Generator().manual_seed(1000 + draw)
    pool = torch.tensor(PRINTABLE)[torch.randperm(len(PRINTABLE), generator=gen)[: data.PROBE_SEQ_LEN]]
    seqs = pool[torch.randint(0, len(pool), (10, seq_len), generator=gen)].repeat(1, n_repeats)
    return torch.cat([torch.full((10, 1), BOS, dtype=torch.long), seqs], dim=1), seq_len


@torch.no_grad()
def prefix_matching_over_draws(snaps: Sequence[SnapshotInfo], n_draws: int = 1 + N_OTHER_DRAWS) -> np.ndarray:
    """(draw, snapshot, layer, head) prefix-matching scores: each snapshot's weights on every draw's probe."""
    n_ctx = snaps[-1].model_config.n_ctx
    probes = [probe_draw(d, n_ctx) for d in range(n_draws)]
    out = []
    for snap in snaps:
        model = load_model(snap).eval()
        out.append([metrics.prefix_matching_scores(model, tokens, seq_len).numpy() for tokens, seq_len in probes])
    return np.asarray(out).transpose(1, 0, 2, 3)


def windows_over_draws(snaps: Sequence[SnapshotInfo], scores: np.ndarray) -> list[PhaseWindow | None]:
    """The window (phase.detect_run_phase_change, the app's rule) located on each draw's scores."""
    steps = [s.step for s in snaps]
    icl = [s.metrics.icl_score for s in snaps]
    return [detect_run_phase_change(steps, icl, [pm.tolist() for pm in draw]) for draw in scores]


@dataclass(frozen=True)
class WindowSpread:
    """The window's start and end (tokens seen) over probe draws; None fields where no draw found a window."""

    n_draws: int
    n_found: int
    start: tuple[int, int] | None  # (lowest, highest) over the draws that found one
    end: tuple[int, int] | None
    decades: tuple[float, float] | None


def window_spread(snaps: Sequence[SnapshotInfo], windows: Sequence[PhaseWindow | None]) -> WindowSpread:
    tokens = {s.step: s.tokens_seen for s in snaps}
    found = [w for w in windows if w is not None]
    if not found:
        return WindowSpread(len(windows), 0, None, None, None)
    starts = [tokens[w.start_step] for w in found]
    ends = [tokens[w.end_step] for w in found]
    widths = [math.log10(tokens[w.end_step] / max(tokens[w.start_step], 1)) for w in found]
    return WindowSpread(
        len(windows), len(found), (min(starts), max(starts)), (min(ends), max(ends)), (min(widths), max(widths))
    )


@dataclass(frozen=True)
class Mean3:
    value: float
    se: float  # the three stored standard errors' mean: the snapshots share their examples, so errors move together
    steps: tuple[int, ...]


def mean3(snaps: Sequence[SnapshotInfo], step: int, key: IclKey = "icl_score") -> Mean3:
    """The ICL score (`key`) at `step` as the mean of that snapshot and its neighbours (the last snapshot: it and
    the two before it), so one low or high snapshot cannot decide a verdict."""
    picked = neighbours([s for s in snaps if s.metrics.scalar(key) is not None], step)
    values = [s.metrics.icl_with_se(key) for s in picked]
    return Mean3(
        float(np.mean([v for v, _ in values])),
        float(np.mean([se or math.nan for _, se in values])),
        tuple(s.step for s in picked),
    )


def change3(snaps: Sequence[SnapshotInfo], start_step: int, end_step: int, key: IclKey = "icl_score") -> Mean3:
    """The change of the ICL score from `start_step` to `end_step`, each end a 3-snapshot mean; its s.e. combines
    the two ends' as if independent (conservative: shared examples make the true one smaller)."""
    a, b = mean3(snaps, start_step, key), mean3(snaps, end_step, key)
    return Mean3(b.value - a.value, math.hypot(a.se, b.se), a.steps + b.steps)


def neighbours(snaps: Sequence[SnapshotInfo], step: int) -> list[SnapshotInfo]:
    """The snapshot at `step` and its two neighbours (at the last snapshot: it and the two before it)."""
    i = next(k for k, s in enumerate(snaps) if s.step == step)
    lo = min(max(i - 1, 0), len(snaps) - 3)
    return list(snaps[lo : lo + 3])


def per_example_icl3(snaps: Sequence[SnapshotInfo], step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Each example's ICL score averaged over the snapshot at `step` and its two neighbours."""
    return torch.stack([metrics.per_example_icl(load_model(s).eval(), tokens) for s in neighbours(snaps, step)]).mean(0)


def paired_change3(
    snaps: Sequence[SnapshotInfo], start_step: int, end_step: int, tokens: torch.Tensor
) -> metrics.ICLScore:
    """The ICL score's change from `start_step` to `end_step`, each end the mean of three neighbouring snapshots,
    example by example on the same `tokens`: the paired standard error of claims.paired_icl_change, without
    letting one low or high snapshot decide."""
    return metrics.mean_with_se(per_example_icl3(snaps, end_step, tokens) - per_example_icl3(snaps, start_step, tokens))


@dataclass(frozen=True)
class LossBump:
    """The held-out loss inside the window above a smooth fit through the snapshots around it."""

    height: float  # largest (loss − fit) inside the window, nats
    at_step: int
    jitter: float  # rms (loss − fit) of the snapshots around the window used for the fit
    shows: bool  # height above 3 × jitter


def loss_bump(snaps: Sequence[SnapshotInfo], window: PhaseWindow, margin_decades: float = 0.5) -> LossBump | None:
    """Fit log(held-out loss) as a quadratic in log10(tokens) on the snapshots within `margin_decades` outside the
    window (both sides), and compare the window's snapshots with it: Olsson et al.'s bump is the loss rising
    above its trend while the induction heads form. None when either side has fewer than 3 snapshots."""
    tokens = {s.step: s.tokens_seen for s in snaps}
    t0, t1 = max(tokens[window.start_step], 1), tokens[window.end_step]
    pts: list[tuple[float, float, int]] = [
        (math.log10(s.tokens_seen), loss, s.step)
        for s in snaps
        if s.tokens_seen > 0 and (loss := s.metrics.heldout_loss) is not None
    ]
    lo, hi = math.log10(t0), math.log10(t1)
    before = [p for p in pts if lo - margin_decades <= p[0] < lo]
    after = [p for p in pts if hi < p[0] <= hi + margin_decades]
    inside = [p for p in pts if lo <= p[0] <= hi]
    if len(before) < 3 or len(after) < 3 or not inside:
        return None
    around = before + after
    coef = np.polyfit([p[0] for p in around], [math.log(p[1]) for p in around], 2)
    fit = lambda x: math.exp(float(np.polyval(coef, x)))  # noqa: E731
    jitter = float(np.sqrt(np.mean([(p[1] - fit(p[0])) ** 2 for p in around])))
    height, at = max((p[1] - fit(p[0]), p[2]) for p in inside)
    return LossBump(float(height), int(at), jitter, bool(height > 3 * jitter))
