"""The app's slow analyses, computed once per run and stored beside its snapshots (<run>/analysis/*.json).

What takes seconds to minutes on a 2-core CPU (ablating every head at every snapshot in every mode,
attributing the phase change over training, scoring circuits over training) is computed here, by
`python -m icl_core.analysis.precompute RUN_DIR...`, and read back by the app instead of recomputed. Each
file records the snapshots it was computed from (step, tokens, weights size); when the run changes (a run
still training), the file no longer matches and the app computes live again.

Usage:
    python -m icl_core.analysis.precompute checkpoints/attn1 checkpoints/attn2 checkpoints/attn2-smeared
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from icl_core.analysis import attribution, circuits, head_table, robustness
from icl_core.analysis.ablation import ABLATION_MODES, AblationMode
from icl_core.analysis.phase import PhaseWindow
from icl_core.errors import ICLError
from icl_core.storage.snapshots import SnapshotInfo, atomic_write_json, list_snapshots, load_model, read_json

ANALYSIS_DIR = "analysis"
FORMAT_VERSION = 1
ABLATION_TABLES, PHASE_ATTRIBUTION, ATTRIBUTION_OVER_TRAINING, CIRCUITS_OVER_TRAINING, WINDOW_DRAWS = (
    "ablation_tables",
    "phase_attribution",
    "attribution_over_training",
    "circuits_over_training",
    "window_draws",
)


def snapshot_signature(snaps: Sequence[SnapshotInfo]) -> list[list[int]]:
    """What a stored analysis was computed from: (step, tokens seen, weights file size) per snapshot."""
    return [[s.step, s.tokens_seen, s.weights_path.stat().st_size if s.weights_path.exists() else -1] for s in snaps]


def analysis_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / ANALYSIS_DIR / f"{name}.json"


def _stored(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The stored file of an analysis in this format (version, snapshots, data), or None (absent or unreadable)."""
    path = analysis_path(run_dir, name)
    if not path.is_file():
        return None
    try:
        stored = read_json(path)
    except ICLError:
        return None
    return stored if isinstance(stored, dict) and stored.get("version") == FORMAT_VERSION else None


def load(run_dir: Path, name: str, snaps: Sequence[SnapshotInfo]) -> Any | None:
    """A stored analysis of these very snapshots, or None (absent, unreadable, or computed from others)."""
    stored = _stored(run_dir, name)
    if stored is None or stored.get("snapshots") != snapshot_signature(snaps):
        return None
    return stored.get("data")


def save(run_dir: Path, name: str, snaps: Sequence[SnapshotInfo], data: Any) -> None:
    atomic_write_json(
        analysis_path(run_dir, name),
        {"version": FORMAT_VERSION, "snapshots": snapshot_signature(snaps), "data": data},
        compact=True,
    )


# -- (de)serialising the analyses' dataclasses ---------------------------------------------------------------


def ablation_table_from_dict(d: dict[str, Any]) -> head_table.AblationTable:
    rows = [head_table.AblationRow(**r) for r in d["rows"]]
    return head_table.AblationTable(**{**d, "rows": rows})


def phase_attribution_from_dict(d: dict[str, Any]) -> attribution.PhaseAttribution:
    rows = [attribution.AttributionRow(**r) for r in d["rows"]]
    return attribution.PhaseAttribution(**{**d, "window": PhaseWindow(**d["window"]), "rows": rows})


def stored_ablation_table(run_dir: Path, snaps: Sequence[SnapshotInfo], step: int, mode: AblationMode):
    tables = load(run_dir, ABLATION_TABLES, snaps)
    found = tables.get(mode, {}).get(str(step)) if isinstance(tables, dict) else None
    return ablation_table_from_dict(found) if found else None


def stored_phase_attribution(run_dir: Path, snaps: Sequence[SnapshotInfo], mode: AblationMode):
    found = load(run_dir, PHASE_ATTRIBUTION, snaps)
    if not isinstance(found, dict) or mode not in found:
        return None, False
    return (phase_attribution_from_dict(found[mode]) if found[mode] else None), True


def stored_window_spread(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> robustness.WindowSpread | None:
    """The phase-change window over the stored probe draws (window_draws_rows), or None where none are stored."""
    rows = load(run_dir, WINDOW_DRAWS, snaps)
    if not isinstance(rows, list):
        return None
    return robustness.window_spread(snaps, [PhaseWindow(**w) if w else None for w in rows])


# -- computing ----------------------------------------------------------------------------------------------


def window_draws_rows(snaps: Sequence[SnapshotInfo]) -> list[dict[str, Any] | None]:
    """The window located with each probe draw (robustness.probe_draw; draw 0 is the app's own)."""
    scores = robustness.prefix_matching_over_draws(snaps)
    return [asdict(w) if w else None for w in robustness.windows_over_draws(snaps, scores)]


def circuits_rows(
    snaps: Sequence[SnapshotInfo], progress: Callable[[int, int], None] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Composition (long: step, tokens, kind, pair, early, late, score, raw) and copying rows for every snapshot;
    progress(done, total) after each."""
    comp_rows: list[dict[str, Any]] = []
    copy_rows: list[dict[str, Any]] = []
    for i, snap in enumerate(snaps):
        model = circuits.attn_only(load_model(snap))
        base = {"step": snap.step, "tokens": snap.tokens_seen}
        if model.cfg.n_layers >= 2:
            for r in circuits.composition_matrices(model).records():
                comp_rows.append({**base, "kind": r["kind"], "pair": f"{r['early']} → {r['late']}", **r})
        for r in circuits.copying_table(model):
            copy_rows.append({**base, **r})
        if progress is not None:
            progress(i + 1, len(snaps))
    return comp_rows, copy_rows


def reusable_ablation_tables(
    run_dir: Path, snaps: Sequence[SnapshotInfo], modes: Sequence[AblationMode]
) -> dict[str, dict[str, Any]]:
    """The stored ablation tables (mode -> step -> table) of the snapshots that are still the same (step, tokens,
    weights size): a run stored while it was training (most of its snapshots) is finished without recomputing
    them, the bulk of the work."""
    tables: dict[str, dict[str, Any]] = {mode: {} for mode in modes}
    stored = _stored(run_dir, ABLATION_TABLES)
    if stored is None or not isinstance(stored.get("data"), dict) or not isinstance(stored.get("snapshots"), list):
        return tables
    unchanged = {str(sig[0]) for sig in snapshot_signature(snaps) if sig in stored["snapshots"]}
    for mode in modes:
        found = stored["data"].get(mode)
        if isinstance(found, dict):
            tables[mode] = {step: table for step, table in found.items() if step in unchanged}
    return tables


def precompute_run(
    run_dir: Path, modes: Sequence[AblationMode] = ABLATION_MODES, say: Callable[[str], None] = print
) -> None:
    """Compute and store every slow analysis of one run."""
    run_dir = Path(run_dir)
    snaps = list_snapshots(run_dir)
    t0 = time.time()
    comp, copy = circuits_rows(snaps)
    save(run_dir, CIRCUITS_OVER_TRAINING, snaps, {"composition": comp, "copying": copy})
    say(f"{run_dir.name}: circuits over training ({time.time() - t0:.0f}s)")
    tables = reusable_ablation_tables(run_dir, snaps, modes)
    for i, snap in enumerate(snaps):
        if all(str(snap.step) in tables[mode] for mode in modes):
            continue
        model = load_model(snap)
        for mode in modes:
            table = head_table.ablation_table(model, mode, prefix_matching=snap.metrics.prefix_matching)
            tables[mode][str(snap.step)] = asdict(table)
        say(f"{run_dir.name}: ablation tables {i + 1}/{len(snaps)} ({time.time() - t0:.0f}s)")
    save(run_dir, ABLATION_TABLES, snaps, tables)
    phase: dict[str, Any] = {}
    over: dict[str, Any] = {}
    for mode in modes:
        found = attribution.phase_change_attribution(snaps, mode)
        phase[mode] = asdict(found) if found is not None else None
        over[mode] = attribution.attribution_over_training(snaps, mode) if found is not None else []
        say(f"{run_dir.name}: attribution ({mode}) ({time.time() - t0:.0f}s)")
    save(run_dir, PHASE_ATTRIBUTION, snaps, phase)
    save(run_dir, ATTRIBUTION_OVER_TRAINING, snaps, over)
    save(run_dir, WINDOW_DRAWS, snaps, window_draws_rows(snaps))
    say(f"{run_dir.name}: windows over probe draws ({time.time() - t0:.0f}s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Store a run's slow analyses beside its snapshots.")
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for run in args.runs:
        try:
            precompute_run(Path(run), say=lambda line: print(line, flush=True))
        except ICLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
