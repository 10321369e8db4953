"""The figures behind the scientific claims made about a run (README table, tests/test_shipped.py).

Each is a pure function of a run's stored snapshot metrics (or, for paired comparisons, of its snapshots'
weights on the shipped evaluation sets), so the test that checks a claim and the table that states it read
the same number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from icl_core import data, evalset
from icl_core.analysis import metrics
from icl_core.analysis.ablation import AblationMode
from icl_core.analysis.head_ablation import head_ablation_losses
from icl_core.analysis.metrics import ICLScore
from icl_core.analysis.phase import (
    PhaseWindow,
    best_induction_head,
    phase_window,
)
from icl_core.heads import Head
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.family import Model
from icl_core.storage.snapshot_metrics import IclKey
from icl_core.storage.snapshots import SnapshotInfo, load_model

# The stored ICL score on each evaluation set of text (held-out code, prose): the README's claims are stated on them.
# The score on repeated random tokens is a probe of copying, shown beside them, not a claim's evidence.
ICL_KEYS: tuple[IclKey, ...] = ("icl_score", "icl_score_prose")


def icl_series(snaps: Sequence[SnapshotInfo], key: IclKey = "icl_score") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens seen, ICL score, its standard error) of the snapshots that stored an ICL score (`key`: which set)."""
    rows = [(s.tokens_seen, *s.metrics.icl_with_se(key)) for s in snaps]
    rows = [(t, v, se if se is not None else math.nan) for t, v, se in rows if v is not None]
    t, v, se = zip(*rows, strict=True) if rows else ((), (), ())
    return np.asarray(t, dtype=float), np.asarray(v, dtype=float), np.asarray(se, dtype=float)


def _at(snaps: Sequence[SnapshotInfo], step: int) -> SnapshotInfo:
    return next(s for s in snaps if s.step == step)


def _icl(snap: SnapshotInfo, key: IclKey = "icl_score") -> float:
    value = snap.metrics.scalar(key)
    if value is None:
        raise ValueError(f"step {snap.step} stores no {key}")
    return value


def window_decades(snaps: Sequence[SnapshotInfo], window: PhaseWindow) -> float:
    """Width of the window in decades of tokens seen: log10(tokens at its end / tokens at its start)."""
    start = max(_at(snaps, window.start_step).tokens_seen, 1)
    return math.log10(_at(snaps, window.end_step).tokens_seen / start)


def run_figures(snaps: Sequence[SnapshotInfo], key: IclKey = "icl_score") -> dict[str, object]:
    """Every figure a claim about one run reads, by name (None where the run cannot give it); ICL figures are
    on the evaluation set `key` (one of ICL_KEYS)."""
    t, v, se = icl_series(snaps, key)
    window = phase_window(snaps)
    jitter, mean_se = neighbour_jitter(snaps, key)
    out: dict[str, object] = {
        "step0_loss": snaps[0].metrics.heldout_loss,
        "ln_vocab": math.log(snaps[0].model_config.d_vocab),
        "step0_icl": float(v[0]) if len(v) else None,
        "final_icl": float(v[-1]) if len(v) else None,
        "final_icl_se": float(se[-1]) if len(se) else None,
        "jitter": jitter,
        "tail_se": mean_se,
        "induction_change_in_tail": induction_change_in_tail(snaps),
        "window": window,
    }
    if window is not None:
        out |= {
            "window_tokens": (
                _at(snaps, window.start_step).tokens_seen,
                _at(snaps, window.center_step).tokens_seen,
                _at(snaps, window.end_step).tokens_seen,
            ),
            "window_decades": window_decades(snaps, window),
            "fall_inside_window": fall_inside_window(snaps, window, key),
        }
    return out


# -- claims on both evaluation sets, with paired standard errors -----------------------------------------------


def eval_tokens(key: str, n_examples: int | None = None) -> torch.Tensor:
    """The examples behind a stored ICL score, the first n of them: of the code set (all: the 8,192 the shipped runs
    store) or of the prose set (all: its 2,048 windows)."""
    if key == "icl_score_prose":
        prose = data.prose_examples(ICL_LATE_TOKEN + 2)
        if prose is None:
            raise ValueError(f"the prose set's windows are shorter than {ICL_LATE_TOKEN + 2} tokens")
        return prose[:n_examples]
    return data.heldout_examples(n_examples or evalset.N_EXAMPLES, ICL_LATE_TOKEN + 2)


def paired_icl_change(start: SnapshotInfo, end: SnapshotInfo, tokens: torch.Tensor) -> ICLScore:
    """ICL score at `end` minus at `start` on the same examples, with the standard error of the per-example
    differences: the two snapshots' errors are correlated, so this is far tighter than the two s.e. combined."""
    a = metrics.per_example_icl(load_model(start).eval(), tokens)
    b = metrics.per_example_icl(load_model(end).eval(), tokens)
    return metrics.mean_with_se(b - a)


def ablation_icl_changes(
    model: Model, tokens: torch.Tensor, mode: AblationMode = AblationMode.ZERO
) -> dict[Head, ICLScore]:
    """Per head ablated alone: its ICL score minus the clean one, example by example, with the paired s.e.
    Positive = the head carried in-context learning."""
    positions = torch.tensor([ICL_EARLY_TOKEN, ICL_LATE_TOKEN])[None].expand(len(tokens), -1)
    clean, ablated = head_ablation_losses(model, tokens, positions, mode)
    base = (clean[:, 1] - clean[:, 0]).double()
    return {h: metrics.mean_with_se((v[:, 1] - v[:, 0]).double() - base) for h, v in ablated.items()}


def nearest(snaps: Sequence[SnapshotInfo], tokens: float) -> SnapshotInfo:
    return min(snaps, key=lambda s: abs(math.log10(max(s.tokens_seen, 1)) - math.log10(max(tokens, 1))))


FALL_FROM_TOKENS = 1_000_000  # the ICL fall is measured from here: past the early stage, before the plain windows


def fall_inside_window(snaps: Sequence[SnapshotInfo], window: PhaseWindow, key: IclKey = "icl_score") -> float:
    """Share of the ICL fall from the 1M-token snapshot (or the window's start, where that comes first: the
    1-layer smeared-key run's window starts at 0.6M tokens) to the final one that happens between the window's
    start and end (stored scores of `key`)."""
    by_step = {s.step: s for s in snaps}
    start, end = by_step[window.start_step], by_step[window.end_step]
    baseline = min(nearest(snaps, FALL_FROM_TOKENS), start, key=lambda s: s.tokens_seen)
    total = _icl(baseline, key) - _icl(snaps[-1], key)
    inside = _icl(start, key) - _icl(end, key)
    return float(inside / total) if total > 0 else math.nan


def linear_tail(snaps: Sequence[SnapshotInfo], fraction: float = 1 / 3) -> list[SnapshotInfo]:
    """The snapshots of the last `fraction` of the tokens seen, on a linear axis (as the paper draws training)."""
    last = snaps[-1].tokens_seen
    return [s for s in snaps if s.tokens_seen >= last * (1 - fraction)]


def induction_change_in_tail(snaps: Sequence[SnapshotInfo]) -> float | None:
    """Max − min of the final induction head's prefix-matching score over the last third of the tokens (linear)."""
    head = best_induction_head(snaps[-1])
    if head is None:
        return None
    scores = [pm[head[0]][head[1]] for s in linear_tail(snaps) if (pm := s.metrics.prefix_matching) is not None]
    if not scores:
        return None
    return float(max(scores) - min(scores))


def neighbour_jitter(snaps: Sequence[SnapshotInfo], key: IclKey = "icl_score") -> tuple[float, float]:
    """(rms difference between consecutive snapshots, mean stored s.e.) over the last third of the tokens: the
    model's own snapshot-to-snapshot noise beside the sampling error the s.e. covers (a pair of independent
    estimates would differ by √2 s.e. rms)."""
    tail = [s for s in linear_tail(snaps) if s.metrics.scalar(key) is not None]
    values = np.array([s.metrics.scalar(key) for s in tail])
    ses = np.array([s.metrics.icl_with_se(key)[1] or math.nan for s in tail])
    if len(values) < 2:
        return math.nan, math.nan
    return float(np.sqrt(np.mean(np.diff(values) ** 2))), float(np.nanmean(ses))


def main(argv: list[str] | None = None) -> int:
    """python -m icl_core.analysis.claims RUN_DIR...: the figures of each run, for the README and the notes."""
    import argparse
    from pathlib import Path

    from icl_core.storage.snapshots import list_snapshots

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    for run in args.runs:
        snaps = list_snapshots(Path(run))
        for key in ICL_KEYS:
            print(f"{Path(run).name} ({key})")
            for name, value in run_figures(snaps, key).items():
                print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
