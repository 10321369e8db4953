"""Cached loaders and computations: every page interaction recomputes only what its inputs changed.

Models live in st.cache_resource (shared by all sessions, never mutated except for hooks, which are
added and removed under the model's lock); results live in st.cache_data, keyed on file paths plus
modification times so a run that is still training, or a re-downloaded one, is picked up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from icl_core import explore
from icl_core.ablation import Head, run_ablated
from icl_core.errors import ICLError
from icl_core.model import AttnOnlyTransformer
from icl_core.phase import PhaseWindow
from icl_core.runs import RunRef
from icl_core.snapshots import MANIFEST, SnapshotInfo, list_snapshots

# Two cores shared by every visitor: one forward at a time per process uses them best.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def run_signature(run_dir: Path) -> tuple[str, int, int]:
    """Changes whenever a snapshot is added or replaced (the folder's mtime) or the manifest is rewritten."""
    run_dir = Path(run_dir)
    return (str(run_dir), _mtime(run_dir), _mtime(run_dir / MANIFEST))


@st.cache_data(max_entries=64, show_spinner=False)
def _snapshots(signature: tuple[str, int, int]) -> list[SnapshotInfo]:
    return list_snapshots(Path(signature[0]))


def snapshots_of(run_dir: Path) -> list[SnapshotInfo]:
    """The run's snapshots by step; raises CheckpointError (an ICLError) for unreadable metadata."""
    return _snapshots(run_signature(run_dir))


@st.cache_data(max_entries=64, show_spinner=False)
def _phase_window(signature: tuple[str, int, int]) -> PhaseWindow | None:
    return explore.phase_window(_snapshots(signature))


def phase_window_of(run_dir: Path) -> PhaseWindow | None:
    return _phase_window(run_signature(run_dir))


@st.cache_data(max_entries=64, show_spinner=False)
def _train_log(path: str, mtime: int) -> list[dict[str, float]]:
    return explore.read_train_log(Path(path))


def train_log_of(run_dir: Path) -> list[dict[str, float]]:
    return _train_log(str(run_dir), _mtime(Path(run_dir) / explore.TRAIN_LOG))


@dataclass
class LoadedModel:
    model: AttnOnlyTransformer
    lock: threading.Lock  # hooks are registered on the shared model: one forward at a time


def snapshot_key(info: SnapshotInfo) -> tuple[str, int]:
    return (str(info.weights_path), _mtime(info.weights_path))


@st.cache_resource(max_entries=8, show_spinner=False)
def _model(key: tuple[str, int], _info: SnapshotInfo) -> LoadedModel:
    from icl_core.snapshots import load_model

    return LoadedModel(load_model(_info), threading.Lock())


def model_of(info: SnapshotInfo) -> LoadedModel:
    """The snapshot's model (raises CheckpointError for missing or corrupt weights)."""
    return _model(snapshot_key(info), info)


@st.cache_data(max_entries=16, show_spinner=False)  # a 512-token analysis holds ~8 MB of patterns
def _analysis(key: tuple[str, int], text: str, _info: SnapshotInfo) -> tuple[explore.TextInput, explore.TextAnalysis]:
    prepared = explore.prepare_text(text, _info.model_config.n_ctx)
    loaded = model_of(_info)
    with loaded.lock:
        return prepared, explore.analyze_tokens(loaded.model, prepared.tokens)


def text_analysis(info: SnapshotInfo, text: str) -> tuple[explore.TextInput, explore.TextAnalysis]:
    """Encode the text and run one forward pass with attention capture (raises InputTextError, CheckpointError)."""
    return _analysis(snapshot_key(info), text, info)


@st.cache_resource(max_entries=4, show_spinner=False)
def probes(n_ctx: int) -> explore.AblationProbes:
    return explore.make_probes(n_ctx)


@st.cache_resource(max_entries=4, show_spinner=False)
def _means(key: tuple[str, int], _info: SnapshotInfo) -> dict[int, torch.Tensor]:
    loaded = model_of(_info)
    with loaded.lock:
        return explore.compute_head_means(loaded.model, explore.mean_reference(_info.model_config.n_ctx))


def head_means(info: SnapshotInfo) -> dict[int, torch.Tensor]:
    return _means(snapshot_key(info), info)


@st.cache_resource(max_entries=2, show_spinner=False)
def _clean_patterns(key: tuple[str, int], _info: SnapshotInfo) -> explore.CleanPatterns:
    loaded = model_of(_info)
    with loaded.lock:
        return explore.record_probe_patterns(loaded.model, probes(_info.model_config.n_ctx))


@st.cache_data(max_entries=256, show_spinner=False)
def _effect(key: tuple[str, int], heads: tuple[Head, ...], mode: str, _info: SnapshotInfo) -> explore.AblationEffect:
    loaded = model_of(_info)
    means = head_means(_info) if mode == "mean" and heads else None
    # Recording clean patterns once per snapshot halves the cost of every pattern-preserving ablation after it.
    needs_clean = mode == "pattern-preserving" and heads and min(h[0] for h in heads) < _info.model_config.n_layers - 1
    clean = _clean_patterns(snapshot_key(_info), _info) if needs_clean else None
    pr = probes(_info.model_config.n_ctx)
    with loaded.lock:
        return explore.ablation_effect(loaded.model, list(heads), mode, pr, means, clean)


def ablation_effect(info: SnapshotInfo, heads: list[Head] | tuple[Head, ...], mode: str) -> explore.AblationEffect:
    """Measured on fixed small batches; the empty head set is the clean model, shared by every mode."""
    heads_t = tuple(sorted((int(a), int(b)) for a, b in heads))
    return _effect(snapshot_key(info), heads_t, mode if heads_t else "zero", info)


@st.cache_data(max_entries=64, show_spinner=False)
def _predictions(key: tuple[str, int], text: str, heads: tuple[Head, ...], mode: str, _info: SnapshotInfo):
    prepared = explore.prepare_text(text, _info.model_config.n_ctx)
    loaded = model_of(_info)
    means = head_means(_info) if mode == "mean" and heads else None
    with loaded.lock, torch.no_grad():
        clean = loaded.model(prepared.tokens[None])
        ablated = run_ablated(loaded.model, prepared.tokens, list(heads), mode, means)
    return prepared, explore.prediction_rows(prepared.tokens, clean, ablated)


def ablated_predictions(info: SnapshotInfo, text: str, heads: list[Head], mode: str):
    """(TextInput, rows) comparing clean and ablated next-token predictions on typed text."""
    heads_t = tuple(sorted((int(a), int(b)) for a, b in heads))
    return _predictions(snapshot_key(info), text, heads_t, mode, info)


@st.cache_data(max_entries=16, show_spinner=False)
def _pca(signatures: tuple[tuple[str, str, int, int], ...], focus: str) -> explore.PCATable | None:
    per_run, broken = {}, {}
    for name, path, m1, m2 in signatures:
        try:
            per_run[name] = _snapshots((path, m1, m2))
        except ICLError as exc:
            broken[name] = f"unreadable ({exc})"
    table = explore.pca_table(per_run, focus)
    if table is not None:
        table.skipped.update(broken)
    return table


def pca_of(runs: dict[str, Path], focus: str) -> explore.PCATable | None:
    """Joint PCA over all runs; recomputed only when a run's files change (paths + mtimes are the key)."""
    sigs = tuple(sorted((name, *run_signature(path)) for name, path in runs.items()))
    return _pca(sigs, focus)


def smooth(values: np.ndarray, window: int = 9) -> np.ndarray:
    """Centred moving average (edges use what is there), to read a noisy small-batch loss curve."""
    if len(values) < window:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


@st.cache_data(max_entries=128, show_spinner=False)
def _overview(signature: tuple[str, int, int], name: str, source: str) -> dict:
    ref = RunRef(name, Path(signature[0]), source)
    try:
        snaps = _snapshots(signature)
    except ICLError:
        snaps = None  # run_overview reports the error in its row
    return explore.run_overview(ref, snaps)


def run_overview(ref: RunRef) -> dict:
    return _overview(run_signature(ref.path), ref.name, ref.source)
