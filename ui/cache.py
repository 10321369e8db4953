"""The st.cache wrappers of the app (ui/stored_analyses.py holds those of analyses a run may carry): each page
interaction recomputes only what its inputs changed.

Models live in st.cache_resource (shared by all sessions, never mutated except for hooks, which are
added and removed under the model's lock); results live in st.cache_data, keyed on file paths plus
modification times so a run that is still training, or a re-downloaded one, is picked up. The two results
read on every rerun (a run's snapshot scan, a text's analysis) are shared resources instead: st.cache_data
unpickles a copy on every call. Per-run results are keyed on the run folder's signature plus its number of
snapshots. Loops over a run's snapshots load their own model copies, so they never evict the pages' models
from the small model cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from icl_core import data
from icl_core.analysis import (
    ablation,
    circuits,
    fuzzy,
    pca,
    phase,
    summary,
)
from icl_core.analysis.ablation import AblationMode, run_ablated
from icl_core.analysis.phase import PhaseWindow
from icl_core.analysis.text import TextAnalysis, TextInput, analyze_tokens, prediction_rows, prepare_text
from icl_core.errors import ICLError
from icl_core.heads import Head
from icl_core.model.tokenizer import BYTES, Tokenizer, load_tokenizer
from icl_core.storage.lock import being_written
from icl_core.storage.model_cache import LoadedModel, ModelCache
from icl_core.storage.runs import RunRef, read_train_log
from icl_core.storage.snapshots import MANIFEST, TRAIN_LOG, SnapshotInfo, SnapshotScan, load_model, scan_snapshots
from ui import training_charts, vega

# What an analysis may raise for a bad input (a corrupt checkpoint, a run without stored losses, ...):
# the pages show these as st.error instead of a traceback.
ANALYSIS_ERRORS = (ICLError, ValueError)


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


def _snapshots(signature: tuple[str, int, int]) -> list[SnapshotInfo]:
    return _scan(signature).snapshots


def snapshots_of(run_dir: Path) -> list[SnapshotInfo]:
    """The run's usable snapshots by step (a snapshot with unreadable or malformed metadata is left out)."""
    return _snapshots(run_signature(run_dir))


def skipped_snapshots_of(run_dir: Path) -> list[str]:
    """Why each left-out snapshot of the run was left out, one line each."""
    return _scan(run_signature(run_dir)).skipped


def metric_notes_of(run_dir: Path) -> list[str]:
    """Snapshots kept with some metrics left out (NaN or inf), one line each."""
    return _scan(run_signature(run_dir)).notes


@st.cache_data(max_entries=64, show_spinner=False)
def _phase_window(signature: tuple[str, int, int]) -> PhaseWindow | None:
    return phase.phase_window(_snapshots(signature))


def phase_window_of(run_dir: Path) -> PhaseWindow | None:
    return _phase_window(run_signature(run_dir))


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


# Shared, not copied (a 512-token analysis holds ~8 MB of patterns, unpickled on every rerun as cache_data);
# its arrays are read-only, so a page that tried to change one would fail instead of changing it for everyone.
@st.cache_resource(max_entries=16, show_spinner=False)
def _analysis(key: tuple[str, int], text: str, _info: SnapshotInfo) -> tuple[TextInput, TextAnalysis]:
    loaded = model_of(_info)
    prepared = prepare_text(text, _info.model_config.n_ctx, loaded.model.require_tokenizer())
    with loaded.use():
        analysis = analyze_tokens(loaded.model, prepared.tokens)
    for value in vars(analysis).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return prepared, analysis


def text_analysis(info: SnapshotInfo, text: str) -> tuple[TextInput, TextAnalysis]:
    """Encode the text and run one forward pass with attention capture (raises InputTextError, CheckpointError)."""
    return _analysis(snapshot_key(info), text, info)


@st.cache_resource(max_entries=4, show_spinner=False)
def _probes(n_ctx: int, tokenizer_key: str, _tokenizer: Tokenizer) -> ablation.AblationProbes:
    return ablation.make_probes(n_ctx, tokenizer=_tokenizer)


def probes(info: SnapshotInfo) -> ablation.AblationProbes:
    tok = tokenizer_of(info)
    return _probes(info.model_config.n_ctx, tok.key, tok)


@st.cache_resource(max_entries=4, show_spinner=False)
def _means(key: tuple[str, int], _info: SnapshotInfo) -> dict[int, torch.Tensor]:
    loaded = model_of(_info)
    with loaded.use():
        reference = data.mean_reference(_info.model_config.n_ctx, tokenizer=loaded.model.require_tokenizer())
        return ablation.head_output_means(loaded.model, reference)


def head_means(info: SnapshotInfo) -> dict[int, torch.Tensor]:
    return _means(snapshot_key(info), info)


@st.cache_resource(max_entries=2, show_spinner=False)
def _clean_patterns(key: tuple[str, int], _info: SnapshotInfo) -> ablation.CleanPatterns:
    loaded = model_of(_info)
    with loaded.use():
        return ablation.record_probe_patterns(loaded.model, probes(_info))


@st.cache_data(max_entries=256, show_spinner=False)
def _effect(
    key: tuple[str, int], heads: tuple[Head, ...], mode: AblationMode, _info: SnapshotInfo
) -> ablation.AblationEffect:
    loaded = model_of(_info)
    means = head_means(_info) if mode == AblationMode.MEAN and heads else None
    # Recording clean patterns once per snapshot halves the cost of every pattern-preserving ablation after it.
    needs_clean = (
        mode == AblationMode.PATTERN_PRESERVING and heads and min(h[0] for h in heads) < _info.model_config.n_layers - 1
    )
    clean = _clean_patterns(snapshot_key(_info), _info) if needs_clean else None
    pr = probes(_info)
    with loaded.use():
        return ablation.ablation_effect(loaded.model, list(heads), mode, pr, means, clean)


def ablation_effect(
    info: SnapshotInfo, heads: list[Head] | tuple[Head, ...], mode: AblationMode
) -> ablation.AblationEffect:
    """Measured on fixed small batches; the empty head set is the clean model, shared by every mode."""
    heads_t = tuple(sorted((int(a), int(b)) for a, b in heads))
    return _effect(snapshot_key(info), heads_t, mode if heads_t else AblationMode.ZERO, info)


@st.cache_data(max_entries=64, show_spinner=False)
def _predictions(key: tuple[str, int], text: str, heads: tuple[Head, ...], mode: AblationMode, _info: SnapshotInfo):
    loaded = model_of(_info)
    tokenizer = loaded.model.require_tokenizer()
    prepared = prepare_text(text, _info.model_config.n_ctx, tokenizer)
    means = head_means(_info) if mode == AblationMode.MEAN and heads else None
    with loaded.use(), torch.no_grad():
        clean = loaded.model(prepared.tokens[None])
        ablated = run_ablated(loaded.model, prepared.tokens, list(heads), mode, means)
    return prepared, prediction_rows(prepared.tokens, clean, ablated, tokenizer=tokenizer)


def ablated_predictions(info: SnapshotInfo, text: str, heads: list[Head], mode: AblationMode):
    """(TextInput, rows) comparing clean and ablated next-token predictions on typed text."""
    heads_t = tuple(sorted((int(a), int(b)) for a, b in heads))
    return _predictions(snapshot_key(info), text, heads_t, mode, info)


@st.cache_data(max_entries=16, show_spinner=False)
def _pca(signatures: tuple[tuple[str, str, int, int], ...], focus: str) -> pca.PCATable | None:
    per_run, broken = {}, {}
    for name, path, m1, m2 in signatures:
        try:
            per_run[name] = _snapshots((path, m1, m2))
        except ICLError as exc:
            broken[name] = f"unreadable ({exc})"
    table = pca.pca_table(per_run, focus)
    if table is not None:
        table.skipped.update(broken)
    return table


def _plane_signatures(runs: dict[str, Path], focus: str) -> tuple[tuple[str, str, int, int], ...]:
    """The runs the shared PCA plane is fitted on, keyed by their files (paths + mtimes). A run still being
    trained joins it when its job ends, unless it is the focus: each of its new snapshots would refit the plane
    and redraw every visitor's chart (a 2-core server spent ~20% of its time in that SVD while one job trained)."""
    return tuple(
        sorted((name, *run_signature(path)) for name, path in runs.items() if name == focus or not being_written(path))
    )


def pca_of(runs: dict[str, Path], focus: str) -> pca.PCATable | None:
    """Joint PCA over the runs (_plane_signatures); recomputed only when their files change."""
    sigs = _plane_signatures(runs, focus)
    table = _pca(sigs, focus)
    if table is not None:
        kept = {sig[0] for sig in sigs}
        table.skipped.update(
            {name: "still training: joins the plane when its job ends" for name in runs if name not in kept}
        )
    return table


@st.cache_data(max_entries=16, show_spinner=False)
def _pca_rings(signatures: tuple[tuple[str, str, int, int], ...], focus: str) -> list[dict[str, Any]]:
    table = _pca(signatures, focus)
    focus_sig = next(sig for sig in signatures if sig[0] == focus)
    snaps = _snapshots(focus_sig[1:])
    return [] if table is None else pca.rings_over_training(table, focus, [(s.step, s.tokens_seen) for s in snaps])


def pca_rings_of(runs: dict[str, Path], focus: str) -> list[dict[str, Any]]:
    """The PCA plane's rings at every snapshot of the focus run (pca.rings_over_training), for its timeline."""
    return _pca_rings(_plane_signatures(runs, focus), focus)


@st.cache_data(max_entries=128, show_spinner=False)
def _overview(signature: tuple[str, int, int], name: str, source: str) -> dict:
    ref = RunRef(name, Path(signature[0]), source)
    try:
        snaps = _snapshots(signature)
    except ICLError:
        snaps = None  # run_overview reports the error in its row
    return summary.run_overview(ref, snaps)


def run_overview(ref: RunRef) -> dict:
    return _overview(run_signature(ref.path), ref.name, ref.source)


# ---------------------------------------------------------------------------------------------
# Weight-only analyses


@st.cache_data(max_entries=32, show_spinner=False)
def _depth_panel(
    signature: tuple[str, int, int], title: str, x_domain: tuple[int, int] | None, log_x: bool, present: bool
) -> dict[str, Any]:
    run_dir = Path(signature[0])
    snaps = snapshots_of(run_dir)
    both = pd.DataFrame(summary.icl_rows(summary.summary_rows(snaps)))
    if both.empty:
        return {}
    window = phase_window_of(run_dir)
    tokens = {s.step: s.tokens_seen for s in snaps}
    chart = training_charts.over_training(
        both,
        "icl_score",
        title,
        "ICL score (nats)",
        (tokens[window.start_step], tokens[window.end_step]) if window else None,
        color="series" if both["series"].nunique() > 1 else None,
        se="icl_score_se",
        points=False,
        height=200,
        x_domain=x_domain,
        log_x=log_x,
        early_stage_end=phase.early_stage_end(snaps),
    )
    return vega.vega_lite_spec(vega.finish(chart, present))


def depth_panel(
    run_dir: Path, title: str, x_domain: tuple[int, int] | None, log_x: bool, present: bool
) -> dict[str, Any]:
    """The ICL score of one run on both evaluation sets, as a panel of the side-by-side figure (a Vega-Lite spec;
    {} if the run has no ICL score). Built once per run version and axis: it does not follow the selected step,
    and building three charts took ~60-150 ms of every Phase change page rerun."""
    return _depth_panel(run_signature(run_dir), title, x_domain, log_x, present)


def run_key(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> tuple[tuple[str, int, int], int]:
    """Cache key of a run-level result: the run folder's signature and how many snapshots it has."""
    return run_signature(Path(run_dir)), len(snaps)


# ---------------------------------------------------------------------------------------------
# Circuits


@st.cache_data(max_entries=32, show_spinner=False)
def _composition(key: tuple[str, int], _info: SnapshotInfo) -> circuits.CompositionScores:
    loaded = model_of(_info)
    with loaded.use():
        return circuits.composition_matrices(loaded.model)


def composition_of(info: SnapshotInfo) -> circuits.CompositionScores:
    """Baseline-subtracted K/Q/V composition (raises ValueError for a 1-layer model)."""
    return _composition(snapshot_key(info), info)


@st.cache_data(max_entries=32, show_spinner=False)
def _copying(key: tuple[str, int], _info: SnapshotInfo) -> list[dict[str, object]]:
    loaded = model_of(_info)
    with loaded.use():
        return circuits.copying_table(loaded.model)


def copying_of(info: SnapshotInfo) -> list[dict[str, object]]:
    return _copying(snapshot_key(info), info)


@st.cache_data(max_entries=64, show_spinner=False)
def _circuit(
    key: tuple[str, int], kind: circuits.CircuitKind, head: Head, prev: Head | None, n_tokens: int, _info: SnapshotInfo
) -> circuits.CircuitMatrix:
    loaded = model_of(_info)
    tokens = circuits.readable_tokens(n_tokens, loaded.model.require_tokenizer())
    with loaded.use():
        if kind == "qk":
            return circuits.full_qk_circuit(loaded.model, *head, tokens=tokens)
        if kind == "kqk":
            if prev is None:
                raise ValueError("a K-composition circuit needs the previous-token head")
            return circuits.k_composition_qk_circuit(loaded.model, *head, prev_head=prev, tokens=tokens)
        return circuits.full_ov_circuit(loaded.model, *head, tokens=tokens)


def circuit_of(
    info: SnapshotInfo, kind: circuits.CircuitKind, head: Head, n_tokens: int, prev: Head | None = None
) -> circuits.CircuitMatrix:
    """kind: 'qk' (direct QK), 'kqk' (QK through K-composition with `prev`), 'ov' (OV)."""
    return _circuit(snapshot_key(info), kind, (head[0], head[1]), (prev[0], prev[1]) if prev else None, n_tokens, info)


@st.cache_data(max_entries=32, show_spinner=False)
def _fuzzy(key: tuple[str, int], _info: SnapshotInfo) -> tuple[dict[str, fuzzy.FuzzyResult], list[tuple[str, str]]]:
    loaded = model_of(_info)
    with loaded.use():
        results = fuzzy.fuzzy_probe(loaded.model)
        tokenizer = loaded.model.require_tokenizer()
        nn = fuzzy.nearest_neighbours(loaded.model)
        if tokenizer == BYTES:
            shown = [ord(c) for c in "aeinostAEINOST"]
        else:
            shown = circuits.readable_tokens(14, tokenizer)
        examples = list(zip(tokenizer.labels(shown), tokenizer.labels([int(nn[t]) for t in shown]), strict=True))
    return results, examples


def fuzzy_of(info: SnapshotInfo) -> tuple[dict[str, fuzzy.FuzzyResult], list[tuple[str, str]]]:
    """Fuzzy probe results per perturbation, and a few (letter, its nearest neighbour in W_E) examples."""
    return _fuzzy(snapshot_key(info), info)
