"""Every run's ICL score on one token axis: our byte-level runs, the field's published runs and Pythia (issue 33),
each labelled with the unit its tokens and its score are counted in.

The score is loss(500) − loss(50) in the run's own tokens, on the Python standard library's held-out source in
those tokens (evaluation.EvalData). A byte-level run's 500 tokens are 500 bytes; a BPE run's are ~4 times as many
bytes of the same text, and its tokens seen count BPE tokens. So the curves share an axis, not a unit: where each
falls, against its own window, is comparable; the heights and the token counts across units are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from icl_core.analysis.phase import PhaseWindow
from icl_core.model.config import BYTES_TOKENIZER, ModelConfig
from icl_core.storage.snapshots import SnapshotInfo


@dataclass(frozen=True)
class RunSeries:
    name: str
    snaps: Sequence[SnapshotInfo]
    window: PhaseWindow | None


def token_unit(cfg: ModelConfig) -> str:
    return "byte tokens" if cfg.tokenizer == BYTES_TOKENIZER else "BPE tokens"


def series_label(run: RunSeries) -> str:
    return f"{run.name} ({token_unit(run.snaps[0].model_config)})"


def across_runs_rows(runs: Sequence[RunSeries]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(points, windows): one point per snapshot with an ICL score and tokens seen (run, tokens, icl_score,
    icl_score_se, unit), and one window per run that has one (run, start, end: tokens). Runs with no score
    are left out of both."""
    points: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    for run in runs:
        scored = [s for s in run.snaps if s.metrics.icl_score is not None and s.tokens_seen > 0]
        if not scored:
            continue
        label, unit = series_label(run), token_unit(scored[0].model_config)
        points += [
            {
                "run": label,
                "tokens": s.tokens_seen,
                "icl_score": s.metrics.icl_score,
                "icl_score_se": s.metrics.icl_score_se,
                "unit": unit,
            }
            for s in scored
        ]
        if run.window is not None:
            tokens = {s.step: s.tokens_seen for s in run.snaps}
            windows.append({"run": label, "start": tokens[run.window.start_step], "end": tokens[run.window.end_step]})
    return points, windows
