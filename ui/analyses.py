"""Every analysis a page shows, by what the page asks for: a text's forward pass, ablations and their probes, the
joint PCA plane, circuits, fuzzy copying, and the costly ones (every head ablated, every snapshot scored). A run's
snapshots, models and tokenizer are in ui/runs.py.

One convention: a function returns what the page shows. A costly one (seconds to minutes of server CPU) returns it
at once when the run carries it precomputed (`python -m icl_core.analysis.precompute`) or this server has it;
otherwise it draws a button stating its cost in its place (ui/costly.py) and returns None until the visitor asks.

Results live in st.cache_data, keyed on the weights file plus its modification time (ui/runs.snapshot_key) so a
run that is still training, or a re-downloaded one, is picked up; a text's analysis, read on every rerun, is a
shared resource instead (st.cache_data unpickles a copy on every call). Loops over a run's snapshots load their
own model copies, so they never evict the pages' models from the small model cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from icl_core import data
from icl_core.analysis import (
    ablation,
    attribution,
    circuits,
    costs,
    fuzzy,
    head_table,
    llc,
    llc_over_training,
    pca,
    precompute,
    robustness,
)
from icl_core.analysis.ablation import AblationMode, run_ablated
from icl_core.analysis.text import TextAnalysis, TextInput, analyze_tokens, prediction_rows, prepare_text
from icl_core.errors import ICLError
from icl_core.heads import Head
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.storage.lock import being_written
from icl_core.storage.snapshots import SnapshotInfo
from ui.costly import CostlyAnalysis, Progress, costly_result
from ui.runs import (
    model_of,
    phase_window_of,
    run_key,
    run_signature,
    snapshot_key,
    snapshots_by_signature,
    snapshots_of,
    tokenizer_of,
)

# What an analysis may raise for a bad input (a corrupt checkpoint, a run without stored losses, ...):
# the pages show these as st.error instead of a traceback.
ANALYSIS_ERRORS = (ICLError, ValueError)


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
            per_run[name] = snapshots_by_signature((path, m1, m2))
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
    snaps = snapshots_by_signature(focus_sig[1:])
    return [] if table is None else pca.rings_over_training(table, focus, [(s.step, s.tokens_seen) for s in snaps])


def pca_rings_of(runs: dict[str, Path], focus: str) -> list[dict[str, Any]]:
    """The PCA plane's rings at every snapshot of the focus run (pca.rings_over_training), for its timeline."""
    return _pca_rings(_plane_signatures(runs, focus), focus)


# ---------------------------------------------------------------------------------------------
# Circuits (weights only)


@st.cache_data(max_entries=32, show_spinner=False)
def _composition(key: tuple[str, int], _info: SnapshotInfo) -> circuits.CompositionScores:
    loaded = model_of(_info)
    with loaded.use():
        return circuits.composition_matrices(circuits.attn_only(loaded.model))


def composition_of(info: SnapshotInfo) -> circuits.CompositionScores:
    """Baseline-subtracted K/Q/V composition (raises ValueError for a 1-layer model)."""
    return _composition(snapshot_key(info), info)


@st.cache_data(max_entries=32, show_spinner=False)
def _copying(key: tuple[str, int], _info: SnapshotInfo) -> list[dict[str, object]]:
    loaded = model_of(_info)
    with loaded.use():
        return circuits.copying_table(circuits.attn_only(loaded.model))


def copying_of(info: SnapshotInfo) -> list[dict[str, object]]:
    return _copying(snapshot_key(info), info)


@st.cache_data(max_entries=64, show_spinner=False)
def _circuit(
    key: tuple[str, int], kind: circuits.CircuitKind, head: Head, prev: Head | None, n_tokens: int, _info: SnapshotInfo
) -> circuits.CircuitMatrix:
    loaded = model_of(_info)
    tokens = circuits.readable_tokens(n_tokens, loaded.model.require_tokenizer())
    model = circuits.attn_only(loaded.model)
    with loaded.use():
        if kind == "qk":
            return circuits.full_qk_circuit(model, *head, tokens=tokens)
        if kind == "kqk":
            if prev is None:
                raise ValueError("a K-composition circuit needs the previous-token head")
            return circuits.k_composition_qk_circuit(model, *head, prev_head=prev, tokens=tokens)
        return circuits.full_ov_circuit(model, *head, tokens=tokens)


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


# ---------------------------------------------------------------------------------------------
# Costly: read from the run's stored analyses, else behind ui.costly's button (None until asked)


@st.cache_data(max_entries=32, show_spinner=False)
def _stored_ablation_table(
    key: tuple[str, int], mode: AblationMode, _info: SnapshotInfo
) -> head_table.AblationTable | None:
    return precompute.stored_ablation_table(_info.run_dir, snapshots_of(_info.run_dir), _info.step, mode)


def ablation_table(info: SnapshotInfo, mode: AblationMode, ask_key: str) -> head_table.AblationTable | None:
    """Every head of the snapshot ablated alone (head_table.ablation_table)."""
    stored = _stored_ablation_table(snapshot_key(info), mode, info)

    def compute(progress: Progress) -> head_table.AblationTable:
        loaded = model_of(info)
        with loaded.use():
            pm = info.metrics.prefix_matching
            return head_table.ablation_table(loaded.model, mode, prefix_matching=pm, progress=progress)

    analysis = CostlyAnalysis(
        key=("ablation table", snapshot_key(info), mode),
        scope=("ablation table", str(info.run_dir), mode),
        what=f"Ablate each of the {info.model_config.n_layers * info.model_config.n_heads} heads ({mode})",
        seconds=costs.ablation_table_seconds(info.model_config),
        compute=compute,
        stored=(stored is not None, stored),
    )
    return costly_result(analysis, ask_key)


CircuitRows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


@st.cache_data(max_entries=8, show_spinner=False)
def _stored_circuits_over_training(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> CircuitRows | None:
    stored = precompute.load(Path(key[0][0]), precompute.CIRCUITS_OVER_TRAINING, _snaps)
    return (stored["composition"], stored["copying"]) if stored is not None else None


def circuits_over_training(run_dir: Path, snaps: Sequence[SnapshotInfo], ask_key: str) -> CircuitRows | None:
    """Composition (long: step, tokens, kind, pair, early, late, score, raw) and copying rows for every snapshot."""
    key = run_key(run_dir, snaps)
    stored = _stored_circuits_over_training(key, tuple(snaps))
    analysis = CostlyAnalysis(
        key=("circuits over training", key),
        scope=("circuits over training", str(run_dir)),
        what=f"Score the circuits of all {len(snaps)} snapshots",
        seconds=costs.circuits_over_training_seconds(snaps[-1].model_config, len(snaps)),
        compute=lambda progress: precompute.circuits_rows(snaps, progress),
        stored=(stored is not None, stored),
    )
    return costly_result(analysis, ask_key)


@st.cache_data(max_entries=16, show_spinner=False)
def _stored_phase_attribution(
    key: tuple[tuple[str, int, int], int], mode: AblationMode, _snaps: tuple[SnapshotInfo, ...]
) -> tuple[attribution.PhaseAttribution | None, bool]:
    return precompute.stored_phase_attribution(Path(key[0][0]), _snaps, mode)


def phase_attribution(
    run_dir: Path, snaps: Sequence[SnapshotInfo], mode: AblationMode, ask_key: str
) -> attribution.PhaseAttribution | None:
    """The phase change attributed to heads. Ask only where ui.runs.phase_window_of finds a window: without
    one there is nothing to attribute (the attribution uses that same window)."""
    if phase_window_of(run_dir) is None:
        raise ValueError("this run shows no phase change: there is nothing to attribute")
    key = run_key(run_dir, snaps)
    value, found = _stored_phase_attribution(key, mode, tuple(snaps))

    def compute(progress: Progress) -> attribution.PhaseAttribution:
        result = attribution.phase_change_attribution(list(snaps), mode, progress=progress)
        if result is None:  # the snapshots changed since phase_window_of read them
            raise ValueError("this run shows no phase change: there is nothing to attribute")
        return result

    analysis = CostlyAnalysis(
        key=("phase attribution", key, mode),
        scope=("phase attribution", str(run_dir), mode),
        what="Attribute the phase change to heads",
        seconds=costs.phase_attribution_seconds(snaps[-1].model_config),
        compute=compute,
        stored=(found, value),
    )
    return costly_result(analysis, ask_key)


@st.cache_data(max_entries=8, show_spinner=False)
def _stored_attribution_over_training(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> dict[str, list[dict[str, object]]]:
    stored = precompute.load(Path(key[0][0]), precompute.ATTRIBUTION_OVER_TRAINING, _snaps)
    return stored if isinstance(stored, dict) else {}


def attribution_over_training(
    run_dir: Path, snaps: Sequence[SnapshotInfo], mode: AblationMode, ask_key: str
) -> list[dict[str, object]] | None:
    """Rows (step, tokens, head, score, ...) for every snapshot; the stored file is read once per run version."""
    key = run_key(run_dir, snaps)
    stored = _stored_attribution_over_training(key, tuple(snaps))
    analysis = CostlyAnalysis(
        key=("attribution over training", key, mode),
        scope=("attribution over training", str(run_dir), mode),
        what=f"Compute the attribution over training ({len(snaps)} snapshots, {mode})",
        seconds=costs.attribution_over_training_seconds(snaps[-1].model_config, len(snaps)),
        compute=lambda progress: attribution.attribution_over_training(list(snaps), mode, progress=progress),
        stored=(mode in stored, stored.get(mode)),
    )
    return costly_result(analysis, ask_key)


# ---------------------------------------------------------------------------------------------
# The loss landscape: LLC estimates stored beside the run (icl_core.analysis.llc_over_training)


@st.cache_data(max_entries=16, show_spinner=False)
def _stored_llc(
    key: tuple[tuple[str, int, int], int], heads: bool, file_mtime: int, _snaps: tuple[SnapshotInfo, ...]
) -> dict[int, Any]:
    run_dir = Path(key[0][0])
    if heads:
        return llc_over_training.stored_rllc(run_dir, _snaps)
    return llc_over_training.stored_llc(run_dir, _snaps)


def _estimates(run_dir: Path, snaps: Sequence[SnapshotInfo], heads: bool) -> dict[int, Any]:
    # Keyed on the file's mtime too: a background task adds an estimate to it after every snapshot.
    path = llc_over_training.estimates_path(run_dir, heads)
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    return _stored_llc(run_key(run_dir, snaps), heads, mtime, tuple(snaps))


def llc_of(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> dict[int, llc.LLCEstimate]:
    """The stored LLC estimate of each snapshot that has one, by step."""
    return _estimates(run_dir, snaps, heads=False)


def rllc_of(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> dict[int, dict[str, llc.LLCEstimate]]:
    """Each head's stored refined LLC: step -> head name -> estimate."""
    return _estimates(run_dir, snaps, heads=True)


@st.cache_data(max_entries=32, show_spinner=False)
def _window_spread(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> robustness.WindowSpread | None:
    return precompute.stored_window_spread(Path(key[0][0]), _snaps)


def window_spread_of(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> robustness.WindowSpread | None:
    """The phase-change window over other draws of the prefix-matching probe, where the run carries them."""
    return _window_spread(run_key(run_dir, snaps), tuple(snaps))
