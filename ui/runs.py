"""What a page asks about a run: its snapshots (scanned once per version of its files), its phase window, its
training log, its loaded models and tokenizer, its overview row. Keyed on the run folder's signature (path and
modification times), so a run still training, or a re-downloaded one, is picked up.

Models live in st.cache_resource (shared by all sessions, never mutated except for hooks, which are added and
removed under the model's lock). Analyses of a run's snapshots are in ui/analyses.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from icl_core.analysis import phase, summary
from icl_core.analysis.phase import PhaseWindow
from icl_core.errors import ICLError
from icl_core.model.tokenizer import Tokenizer, load_tokenizer
from icl_core.storage.model_cache import LoadedModel, ModelCache
from icl_core.storage.runs import RunRef, read_train_log
from icl_core.storage.snapshots import (
    MANIFEST,
    TRAIN_LOG,
    SnapshotInfo,
    SnapshotScan,
    load_model,
    read_manifest,
    scan_snapshots,
)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def run_signature(run_dir: Path) -> tuple[str, int, int]:
    """Changes whenever a snapshot is added or replaced (the folder's mtime) or the manifest is rewritten."""
    run_dir = Path(run_dir)
    return (str(run_dir), _mtime(run_dir), _mtime(run_dir / MANIFEST))


# Shared, not copied: st.cache_data unpickles its value on every call, 12.6 ms for a 68-snapshot run's scan (its
# metrics), several times per rerun. Nothing changes a SnapshotInfo after the scan.
@st.cache_resource(max_entries=64, show_spinner=False)
def _scan(signature: tuple[str, int, int]) -> SnapshotScan:
    return scan_snapshots(Path(signature[0]))


def snapshots_by_signature(signature: tuple[str, int, int]) -> list[SnapshotInfo]:
    return _scan(signature).snapshots


def snapshots_of(run_dir: Path) -> list[SnapshotInfo]:
    """The run's usable snapshots by step (a snapshot with unreadable or malformed metadata is left out)."""
    return snapshots_by_signature(run_signature(run_dir))


def skipped_snapshots_of(run_dir: Path) -> list[str]:
    """Why each left-out snapshot of the run was left out, one line each."""
    return _scan(run_signature(run_dir)).skipped


def metric_notes_of(run_dir: Path) -> list[str]:
    """Snapshots kept with some metrics left out (NaN or inf), one line each."""
    return _scan(run_signature(run_dir)).notes


@st.cache_data(max_entries=64, show_spinner=False)
def _phase_window(signature: tuple[str, int, int]) -> PhaseWindow | None:
    return phase.phase_window(snapshots_by_signature(signature))


def phase_window_of(run_dir: Path) -> PhaseWindow | None:
    return _phase_window(run_signature(run_dir))


@st.cache_data(max_entries=64, show_spinner=False)
def _source_repo(signature: tuple[str, int, int]) -> str | None:
    try:
        source = read_manifest(Path(signature[0])).get("source")
    except ICLError:
        return None
    repo = source.get("repo_id") if isinstance(source, dict) else None
    return repo if isinstance(repo, str) else None


def source_repo_of(run_dir: Path) -> str | None:
    """The Hub repo an imported run came from (its manifest's source), or None for a run trained here."""
    return _source_repo(run_signature(run_dir))


@st.cache_data(max_entries=64, show_spinner=False)
def _train_log(path: str, mtime: int) -> list[dict[str, float]]:
    return read_train_log(Path(path))


def train_log_of(run_dir: Path) -> list[dict[str, float]]:
    return _train_log(str(run_dir), _mtime(Path(run_dir) / TRAIN_LOG))


def snapshot_key(info: SnapshotInfo) -> tuple[str, int]:
    return (str(info.weights_path), _mtime(info.weights_path))


@st.cache_resource(show_spinner=False)
def _models() -> ModelCache:
    return ModelCache()  # one per process, shared by every session; evicts by memory (ICL_MODEL_CACHE_MB)


def model_of(info: SnapshotInfo) -> LoadedModel:
    """The snapshot's model (raises CheckpointError for missing or corrupt weights)."""
    return _models().get(snapshot_key(info), lambda: load_model(info))


def tokenizer_of(info: SnapshotInfo) -> Tokenizer:
    """The tokenizer the snapshot's model reads (bytes, or an imported run's BPE tokenizer)."""
    return load_tokenizer(info.model_config.tokenizer, info.run_dir)


@st.cache_data(max_entries=128, show_spinner=False)
def _overview(signature: tuple[str, int, int], name: str, source: str) -> dict:
    ref = RunRef(name, Path(signature[0]), source)
    try:
        snaps = snapshots_by_signature(signature)
    except ICLError:
        snaps = None  # run_overview reports the error in its row
    return summary.run_overview(ref, snaps)


def run_overview(ref: RunRef) -> dict:
    return _overview(run_signature(ref.path), ref.name, ref.source)


def run_key(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> tuple[tuple[str, int, int], int]:
    """Cache key of a run-level result: the run folder's signature and how many snapshots it has."""
    return run_signature(Path(run_dir)), len(snaps)
