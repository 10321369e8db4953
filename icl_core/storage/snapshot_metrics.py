"""What a snapshot stores about itself (its JSON's `metrics`), parsed and checked once, when the snapshot is read.

Every metric is optional (a run may not record the ICL score, say, and an imported run has none until it is
evaluated), but one that is there has the shape the pages index it with: per-head grids are n_layers x n_heads
numbers, the loss curve n_ctx - 1 numbers. A metric holding a NaN or an infinity anywhere is left out whole
(None) and named in `non_finite`: one NaN makes every figure drawn from it wrong (max() over a NaN returns
whatever came first), so its pages say n/a instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from icl_core.model.config import ModelConfig

Grid = tuple[tuple[float, ...], ...]  # one number per head: grid[layer][head]

GRID_METRICS = ("prefix_matching", "previous_token", "copying", "smear")
ScalarMetric = Literal[
    "heldout_loss",
    "train_loss",
    "icl_score",
    "icl_score_se",
    "icl_examples",
    "icl_score_prose",
    "icl_score_prose_se",
    "icl_examples_prose",
    "icl_score_repeated",
    "icl_score_repeated_se",
    "icl_examples_repeated",
]
SCALAR_METRICS: tuple[ScalarMetric, ...] = get_args(ScalarMetric)
# The ICL score on held-out code, on English prose, and on repeated random tokens (data.repeated_icl_examples).
IclKey = Literal["icl_score", "icl_score_prose", "icl_score_repeated"]
CURVE_METRICS = ("loss_curve", "pca_losses")


@dataclass(frozen=True)
class SnapshotMetrics:
    """A snapshot's stored metrics; None where it has none (or it held NaN or inf, then named in non_finite)."""

    heldout_loss: float | None = None
    train_loss: float | None = None
    icl_score: float | None = None  # exact ICL score on the held-out code set (analysis/metrics.exact_icl_score)
    icl_score_se: float | None = None
    icl_examples: int | None = None
    icl_score_prose: float | None = None  # the same on the English prose set (icl_core/proseset.py)
    icl_score_prose_se: float | None = None
    icl_examples_prose: int | None = None
    icl_score_repeated: float | None = None  # the same on random tokens repeated (data.repeated_icl_examples)
    icl_score_repeated_se: float | None = None
    icl_examples_repeated: int | None = None
    prefix_matching: Grid | None = None
    previous_token: Grid | None = None
    copying: Grid | None = None
    smear: Grid | None = None  # smeared-key runs only: sigmoid(alpha) per head
    loss_curve: tuple[float, ...] | None = None  # mean held-out loss at each context position 1..n_ctx-1
    pca_losses: tuple[float, ...] | None = None  # one token's loss per fixed example (analysis/pca.py)
    non_finite: tuple[str, ...] = ()

    @property
    def recorded(self) -> bool:
        """Whether the snapshot was evaluated at all (an import streams snapshots in before evaluating them)."""
        return any(getattr(self, f.name) is not None for f in fields(self) if f.name != "non_finite")

    def scalar(self, name: ScalarMetric) -> float | None:
        """A scalar metric by its stored name, for code that handles both evaluation sets alike."""
        if name not in SCALAR_METRICS:
            raise KeyError(f"{name} is not a scalar metric (one of {', '.join(SCALAR_METRICS)})")
        return getattr(self, name)

    def icl_with_se(self, key: IclKey) -> tuple[float | None, float | None]:
        """The ICL score on one evaluation set and its standard error (each None where not stored)."""
        if key == "icl_score":
            return self.icl_score, self.icl_score_se
        if key == "icl_score_prose":
            return self.icl_score_prose, self.icl_score_prose_se
        if key == "icl_score_repeated":
            return self.icl_score_repeated, self.icl_score_repeated_se
        raise KeyError(f"{key} is not an ICL score (icl_score, icl_score_prose or icl_score_repeated)")


class MetricsError(ValueError):
    """Stored metrics that cannot be used with the snapshot's model config; the message says which and why."""


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value: Any, length: int | None = None) -> bool:
    return isinstance(value, list) and (length is None or len(value) == length) and all(map(_is_number, value))


def metrics_problem(metrics: Any, cfg: ModelConfig) -> str | None:
    """Why stored metrics cannot be used with this model config, or None if they can."""
    if not isinstance(metrics, dict):
        return "metrics must be a JSON object"
    for scalar in SCALAR_METRICS:
        if metrics.get(scalar) is not None and not _is_number(metrics[scalar]):
            return f"metrics.{scalar} must be a number, got {short_repr(metrics[scalar])}"
    for name in GRID_METRICS:
        grid = metrics.get(name)
        if grid is None:
            continue
        if not (isinstance(grid, list) and len(grid) == cfg.n_layers and all(_numbers(r, cfg.n_heads) for r in grid)):
            shape = f"{cfg.n_layers} x {cfg.n_heads} numbers (layers x heads)"
            return f"metrics.{name} must be {shape}, got {short_repr(grid)}"
    curve = metrics.get("loss_curve")
    if curve is not None and not _numbers(curve, cfg.n_ctx - 1):
        return f"metrics.loss_curve must be {cfg.n_ctx - 1} numbers (one per context position), got {short_repr(curve)}"
    pca = metrics.get("pca_losses")
    if pca is not None and not (_numbers(pca) and pca):
        return f"metrics.pca_losses must be a non-empty list of numbers, got {short_repr(pca)}"
    return None


def _finite(value: Any) -> bool:
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def parse_metrics(metrics: Any, cfg: ModelConfig) -> SnapshotMetrics:
    """Stored metrics as SnapshotMetrics; raises MetricsError naming the first unusable one. Keys this version
    does not know are ignored (a newer version may record more)."""
    problem = metrics_problem(metrics, cfg)
    if problem:
        raise MetricsError(problem)
    known = (*SCALAR_METRICS, *GRID_METRICS, *CURVE_METRICS)
    present = {k: v for k, v in metrics.items() if k in known and v is not None}  # in stored order
    dropped = tuple(k for k, v in present.items() if not _finite(v))
    values: dict[str, Any] = {}
    for name, value in present.items():
        if name in dropped:
            continue
        if name in GRID_METRICS:
            values[name] = tuple(tuple(float(x) for x in row) for row in value)
        elif name in CURVE_METRICS:
            values[name] = tuple(float(x) for x in value)
        elif name.startswith("icl_examples"):
            values[name] = int(value)
        else:
            values[name] = float(value)
    return SnapshotMetrics(**values, non_finite=dropped)
