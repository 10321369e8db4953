"""The figures behind the scientific claims made about a run (README table, tests/test_shipped.py).

Each is a pure function of a run's stored snapshot metrics, so the test that checks a claim and the
table that states it read the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from icl_core.analysis.phase import (
    PhaseWindow,
    best_induction_head,
    finite_or_none,
    phase_window,
    stored_prefix_matching,
)
from icl_core.storage.snapshots import SnapshotInfo


def icl_series(snaps: Sequence[SnapshotInfo]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens seen, ICL score, its standard error) of the snapshots that stored an ICL score."""
    rows = [
        (s.tokens_seen, finite_or_none(s.metrics.get("icl_score")), finite_or_none(s.metrics.get("icl_score_se")))
        for s in snaps
    ]
    rows = [(t, v, se if se is not None else math.nan) for t, v, se in rows if v is not None]
    t, v, se = zip(*rows, strict=True) if rows else ((), (), ())
    return np.asarray(t, dtype=float), np.asarray(v, dtype=float), np.asarray(se, dtype=float)


EARLY_STEPS = 100  # the first steps, where every run's ICL score swings by +-0.15 (uniform -> unigram -> bigram)


def largest_interval_drop(snaps: Sequence[SnapshotInfo], from_step: int = 0) -> float:
    """The largest fall of the ICL score between two consecutive snapshots from `from_step` on (nats; 0 if none)."""
    _, v, _ = icl_series([s for s in snaps if s.step >= from_step])
    return float(max(0.0, *(v[:-1] - v[1:]))) if len(v) > 1 else 0.0


def _at(snaps: Sequence[SnapshotInfo], step: int) -> SnapshotInfo:
    return next(s for s in snaps if s.step == step)


def drop_inside_window(snaps: Sequence[SnapshotInfo], window: PhaseWindow) -> float:
    """Share of the run's total ICL fall (step 0 to the last snapshot) between the window's start and end."""
    _, v, _ = icl_series(snaps)
    total = v[0] - v[-1]
    inside = _at(snaps, window.start_step).metrics["icl_score"] - _at(snaps, window.end_step).metrics["icl_score"]
    return float(inside / total) if total > 0 else math.nan


def window_decades(snaps: Sequence[SnapshotInfo], window: PhaseWindow) -> float:
    """Width of the window in decades of tokens seen: log10(tokens at its end / tokens at its start)."""
    start = max(_at(snaps, window.start_step).tokens_seen, 1)
    return math.log10(_at(snaps, window.end_step).tokens_seen / start)


def window_center_tokens(snaps: Sequence[SnapshotInfo], window: PhaseWindow) -> int:
    return _at(snaps, window.center_step).tokens_seen


@dataclass(frozen=True)
class Plateau:
    head: tuple[int, int]  # the final best induction head
    from_tokens: int  # the stretch of training measured: its last third in log tokens
    change: float  # max - min of that head's prefix-matching score over the stretch


def induction_plateau(snaps: Sequence[SnapshotInfo]) -> Plateau | None:
    """How much the final induction head's prefix-matching score still moves over the last third of training,
    measured in log tokens seen (from the first snapshot that saw any tokens to the last)."""
    head = best_induction_head(snaps[-1])
    seen = [s for s in snaps if s.tokens_seen > 0]
    if head is None or len(seen) < 2:
        return None
    lo, hi = math.log10(seen[0].tokens_seen), math.log10(seen[-1].tokens_seen)
    cut = hi - (hi - lo) / 3
    tail = [s for s in seen if math.log10(s.tokens_seen) >= cut]
    scores = [stored_prefix_matching(s)[head[0]][head[1]] for s in tail]
    return Plateau(head, tail[0].tokens_seen, float(max(scores) - min(scores)))


def run_figures(snaps: Sequence[SnapshotInfo]) -> dict[str, object]:
    """Every figure a claim about one run reads, by name (None where the run cannot give it)."""
    t, v, se = icl_series(snaps)
    first = snaps[0]
    window = phase_window(snaps)
    plateau = induction_plateau(snaps)
    out: dict[str, object] = {
        "step0_loss": finite_or_none(first.metrics.get("heldout_loss")),
        "ln_vocab": math.log(first.model_config.d_vocab),
        "step0_icl": float(v[0]) if len(v) else None,
        "final_icl": float(v[-1]) if len(v) else None,
        "final_icl_se": float(se[-1]) if len(se) else None,
        "max_icl_se": float(np.nanmax(se)) if len(se) else None,
        "largest_interval_drop": largest_interval_drop(snaps),
        "largest_interval_drop_after_early_steps": largest_interval_drop(snaps, EARLY_STEPS),
        "window": window,
        "plateau": plateau,
    }
    if window is not None:
        out |= {
            "window_tokens": (
                _at(snaps, window.start_step).tokens_seen,
                window_center_tokens(snaps, window),
                _at(snaps, window.end_step).tokens_seen,
            ),
            "window_decades": window_decades(snaps, window),
            "drop_inside_window": drop_inside_window(snaps, window),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """python -m icl_core.analysis.claims RUN_DIR...: the figures of each run, for the README and the notes."""
    import argparse
    from pathlib import Path

    from icl_core.storage.snapshots import list_snapshots

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    for run in args.runs:
        figures = run_figures(list_snapshots(Path(run)))
        print(Path(run).name)
        for key, value in figures.items():
            print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
