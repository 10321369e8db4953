"""Run and snapshot summaries for people: tables over training, one-line run overviews, phase-change text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from icl_core import data
from icl_core.analysis.phase import (
    MIN_DROP_NATS,
    MIN_INDUCTION_RISE,
    PhaseWindow,
    best_induction_score,
    phase_window,
)
from icl_core.errors import ICLError
from icl_core.heads import head_name
from icl_core.model.config import ModelConfig
from icl_core.storage.runs import RunRef
from icl_core.storage.snapshot_metrics import IclKey, SnapshotMetrics
from icl_core.storage.snapshots import SnapshotInfo, list_snapshots, read_manifest, read_run_config

SAME_DATA = "same as this machine's"  # run_overview's "data" when the run's eval set and training text match ours


def fmt_tokens(n: int) -> str:
    """Token counts as a teacher reads them: 8.54M, 655k."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def fmt_icl(metrics: SnapshotMetrics, key: IclKey = "icl_score") -> str | None:
    """A snapshot's stored ICL score as every page shows it: '-0.223 ± 0.027' (± one standard error); `key`
    names the evaluation set (ICL_SETS)."""
    value, se = metrics.icl_with_se(key)
    if value is None:
        return None
    return f"{value:+.3f}" + (f" ± {se:.3f}" if se is not None else "")


def icl_examples_note(metrics: SnapshotMetrics) -> str | None:
    """How many examples each stored ICL score of a snapshot averages: 'held-out code 8,192 · English prose 2,048 ·
    repeated random tokens 256'. An imported model with a large vocabulary gets fewer (a FLOP budget; BPE prose
    windows are ~4 bytes a token), so the pages say so beside the s.e. None when none is stored."""
    counts: dict[IclKey, int | None] = {
        "icl_score": metrics.icl_examples,
        "icl_score_prose": metrics.icl_examples_prose,
        "icl_score_repeated": metrics.icl_examples_repeated,
    }
    parts = [f"{ICL_SETS[key]} {n:,}" for key, n in counts.items() if n]
    return " · ".join(parts) or None


def one_layer_note(cfg: ModelConfig) -> str:
    """Why a run without a phase change is as expected: a one-layer attention-only model (no smeared keys) cannot
    compose a previous-token head with an induction head. Empty for any other model."""
    if cfg.n_layers == 1 and not cfg.smeared_keys:
        return "As expected: a one-layer attention-only model cannot form induction heads."
    return ""


def fmt_icl_prose(metrics: SnapshotMetrics) -> str | None:
    """The ICL score on the prose evaluation set (icl_core/proseset.py), as fmt_icl writes the code set's."""
    return fmt_icl(metrics, "icl_score_prose")


ICL_SETS: dict[IclKey, str] = {
    "icl_score": "held-out code",
    "icl_score_prose": "English prose",
    "icl_score_repeated": "repeated random tokens",
}  # stored key -> evaluation set


TEXT_SETS: tuple[IclKey, ...] = ("icl_score", "icl_score_prose")  # the two sets of text; one chart shares their axis


def icl_rows(rows: Sequence[dict[str, Any]], keys: Sequence[IclKey] = TEXT_SETS) -> list[dict[str, Any]]:
    """summary_rows in long form for a chart of the ICL score on the evaluation sets `keys` (the two of text unless
    told: the repeated-token score is ~10x larger and gets its own chart): step, tokens, series, icl_score,
    icl_score_se (rows without a score left out)."""
    return [
        {
            "step": r["step"],
            "tokens": r["tokens"],
            "series": ICL_SETS[key],
            "icl_score": r[key],
            "icl_score_se": r[f"{key}_se"],
        }
        for key in keys
        for r in rows
        if r.get(key) is not None
    ]


def summary_rows(snaps: Sequence[SnapshotInfo]) -> list[dict[str, Any]]:
    """One row per snapshot: step, tokens seen, losses, ICL score, strongest induction (prefix-matching) score."""
    rows = []
    for s in snaps:
        m = s.metrics
        rows.append(
            {
                "step": s.step,
                "tokens": s.tokens_seen,
                "train_loss": m.train_loss,
                "heldout_loss": m.heldout_loss,
                "icl_score": m.icl_score,
                "icl_score_se": m.icl_score_se,
                "icl_score_prose": m.icl_score_prose,
                "icl_score_prose_se": m.icl_score_prose_se,
                "icl_score_repeated": m.icl_score_repeated,
                "icl_score_repeated_se": m.icl_score_repeated_se,
                "max_prefix_matching": best_induction_score(m.prefix_matching) if m.prefix_matching else None,
            }
        )
    return rows


def head_score_rows(snap: SnapshotInfo) -> list[dict[str, Any]]:
    """Long table of stored per-head scores: head, layer, metric, value, tokens (for charts over training)."""
    rows = []
    for metric in ("prefix_matching", "previous_token", "copying"):
        grid = getattr(snap.metrics, metric)
        if grid is None:
            continue
        for layer, values in enumerate(grid):
            for head, value in enumerate(values):
                rows.append(
                    {
                        "head": head_name((layer, head)),
                        "layer": layer,
                        "metric": metric,
                        "value": value,
                        "step": snap.step,
                        "tokens": snap.tokens_seen,
                    }
                )
    return rows


def describe_phase_change(window: PhaseWindow | None, snaps: Sequence[SnapshotInfo]) -> str:
    """One sentence on the run's phase change (or its absence) that says which signal located it."""
    tokens = {s.step: s.tokens_seen for s in snaps}
    fmt = fmt_tokens
    if window is None:
        if any(s.metrics.prefix_matching for s in snaps):
            return (
                f"no phase change detected: no head's induction (prefix-matching) score ever rises by "
                f"{MIN_INDUCTION_RISE} or more, so no induction head forms"
            )
        if any(s.metrics.icl_score is not None for s in snaps):
            return f"no phase change detected: the ICL score never falls by {MIN_DROP_NATS} nats or more"
        return "no phase change detected: this run recorded neither head scores nor ICL scores"
    if window.signal == "prefix_matching":
        what = f"the best induction (prefix-matching) score rises by {window.drop:.2f}"
    else:
        what = f"the ICL score falls by {window.drop:.2f} nats"
    icl = f"; the ICL score changes by {window.icl_change:+.2f} nats across it" if window.icl_change is not None else ""
    return (
        f"phase change between step {window.start_step:,} and step {window.end_step:,} "
        f"({fmt(tokens.get(window.start_step, 0))} to {fmt(tokens.get(window.end_step, 0))} tokens seen), "
        f"steepest at step {window.center_step:,}: {what}{icl}"
    )


def nearest_step(steps: Sequence[int], wanted: int) -> int:
    """The available step closest to `wanted` (steps must be non-empty)."""
    return min(steps, key=lambda s: (abs(s - wanted), s))


def nearest_by_tokens(tokens: Sequence[int], wanted: int) -> int:
    """Index of the snapshot closest in log(tokens seen): runs with different schedules line up by training progress."""

    def dist(t: int) -> float:
        return abs(math.log1p(t) - math.log1p(max(wanted, 0)))

    return min(range(len(tokens)), key=lambda i: dist(tokens[i]))


def run_overview(ref: RunRef, snaps: Sequence[SnapshotInfo] | None = None) -> dict[str, Any]:
    """One row describing a run: config, progress and final metrics; an 'error' entry if it cannot be read."""
    row: dict[str, Any] = {"run": ref.name, "source": ref.source, "path": str(ref.path), "error": ""}
    try:
        manifest = read_manifest(ref.path)
        cfg = read_run_config(ref.path)
        snaps = list(snaps) if snaps is not None else list_snapshots(ref.path)
    except ICLError as exc:
        row["error"] = str(exc)
        return row
    m = cfg.model
    row.update(
        {
            "layers": m.n_layers,
            "heads": m.n_heads,
            "d_model": m.d_model,
            "context": m.n_ctx,
            "smeared keys": m.smeared_keys,
            "status": str(manifest.get("status", "")),
            "snapshots": len(snaps),
            "planned steps": cfg.total_steps,
        }
    )
    if not snaps:
        row["error"] = "no snapshots yet"
        return row
    last = summary_rows(snaps[-1:])[0]
    window = phase_window(snaps)
    tokens = {s.step: s.tokens_seen for s in snaps}
    row.update(
        {
            "last step": last["step"],
            "tokens seen": last["tokens"],
            "train loss": last["train_loss"],
            "held-out loss": last["heldout_loss"],
            "ICL score": last["icl_score"],
            "ICL score s.e.": last["icl_score_se"],
            "data": "; ".join(data.provenance_notes(manifest)) or SAME_DATA,
            "best induction score": last["max_prefix_matching"],
            "phase change at (tokens)": tokens[window.center_step] if window else None,
        }
    )
    return row
