"""Analyses a run may carry precomputed (`python -m icl_core.analysis.precompute`): the stored result is read
once per run version and shown at once; otherwise the analysis waits behind ui.costly's button that states
its cost. Each returns a CostlyAnalysis; the page hands it to ui.costly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from icl_core.analysis import attribution, costs, head_table, precompute
from icl_core.analysis.ablation import AblationMode
from icl_core.storage.snapshots import SnapshotInfo
from ui.costly import CostlyAnalysis, Progress
from ui.runs import model_of, phase_window_of, run_key, snapshot_key, snapshots_of


@st.cache_data(max_entries=8, show_spinner=False)
def _stored_circuits_over_training(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    stored = precompute.load(Path(key[0][0]), precompute.CIRCUITS_OVER_TRAINING, _snaps)
    return (stored["composition"], stored["copying"]) if stored is not None else None


CircuitRows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def circuits_over_training(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> CostlyAnalysis[CircuitRows]:
    """Composition (long: step, tokens, kind, pair, early, late, score, raw) and copying rows for every snapshot
    (loops load their own model copies: the pages keep the shared model cache)."""
    key = run_key(run_dir, snaps)
    stored = _stored_circuits_over_training(key, tuple(snaps))
    return CostlyAnalysis(
        key=("circuits over training", key),
        scope=("circuits over training", str(run_dir)),
        what=f"Score the circuits of all {len(snaps)} snapshots",
        seconds=costs.circuits_over_training_seconds(snaps[-1].model_config, len(snaps)),
        compute=lambda progress: precompute.circuits_rows(snaps, progress),
        stored=(stored is not None, stored),
    )


@st.cache_data(max_entries=32, show_spinner=False)
def _stored_ablation_table(
    key: tuple[str, int], mode: AblationMode, _info: SnapshotInfo
) -> head_table.AblationTable | None:
    return precompute.stored_ablation_table(_info.run_dir, snapshots_of(_info.run_dir), _info.step, mode)


def ablation_table_of(info: SnapshotInfo, mode: AblationMode) -> CostlyAnalysis[head_table.AblationTable]:
    stored = _stored_ablation_table(snapshot_key(info), mode, info)

    def compute(progress: Progress) -> head_table.AblationTable:
        loaded = model_of(info)
        with loaded.use():
            pm = info.metrics.prefix_matching
            return head_table.ablation_table(loaded.model, mode, prefix_matching=pm, progress=progress)

    return CostlyAnalysis(
        key=("ablation table", snapshot_key(info), mode),
        scope=("ablation table", str(info.run_dir), mode),
        what=f"Ablate each of the {info.model_config.n_layers * info.model_config.n_heads} heads ({mode})",
        seconds=costs.ablation_table_seconds(info.model_config),
        compute=compute,
        stored=(stored is not None, stored),
    )


@st.cache_data(max_entries=16, show_spinner=False)
def _stored_phase_attribution(
    key: tuple[tuple[str, int, int], int], mode: AblationMode, _snaps: tuple[SnapshotInfo, ...]
) -> tuple[attribution.PhaseAttribution | None, bool]:
    return precompute.stored_phase_attribution(Path(key[0][0]), _snaps, mode)


def phase_attribution_of(
    run_dir: Path, snaps: Sequence[SnapshotInfo], mode: AblationMode
) -> CostlyAnalysis[attribution.PhaseAttribution | None]:
    """None as the result: the run shows no phase change (found at once, nothing to ablate)."""
    key = run_key(run_dir, snaps)
    value, found = _stored_phase_attribution(key, mode, tuple(snaps))
    no_window = not found and phase_window_of(run_dir) is None
    return CostlyAnalysis(
        key=("phase attribution", key, mode),
        scope=("phase attribution", str(run_dir), mode),
        what="Attribute the phase change to heads",
        seconds=0.0 if no_window else costs.phase_attribution_seconds(snaps[-1].model_config),
        compute=lambda progress: attribution.phase_change_attribution(list(snaps), mode, progress=progress),
        stored=(found or no_window, value),
    )


@st.cache_data(max_entries=8, show_spinner=False)
def _stored_attribution_over_training(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> dict[str, list[dict[str, object]]]:
    stored = precompute.load(Path(key[0][0]), precompute.ATTRIBUTION_OVER_TRAINING, _snaps)
    return stored if isinstance(stored, dict) else {}


def attribution_over_training_of(
    run_dir: Path, snaps: Sequence[SnapshotInfo], mode: AblationMode
) -> CostlyAnalysis[list[dict[str, object]]]:
    """Rows (step, tokens, head, score, ...) for every snapshot; the stored file is read once per run version."""
    key = run_key(run_dir, snaps)
    stored = _stored_attribution_over_training(key, tuple(snaps))
    return CostlyAnalysis(
        key=("attribution over training", key, mode),
        scope=("attribution over training", str(run_dir), mode),
        what=f"Compute the attribution over training ({len(snaps)} snapshots, {mode})",
        seconds=costs.attribution_over_training_seconds(snaps[-1].model_config, len(snaps)),
        compute=lambda progress: attribution.attribution_over_training(list(snaps), mode, progress=progress),
        stored=(mode in stored, stored.get(mode)),
    )
