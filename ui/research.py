"""Cached computations and chart builders for the research pages (Circuits, Head attribution).

Caching follows ui/compute.py: per-snapshot results are keyed on the weights file and its mtime
(compute.snapshot_key), per-run results on the run folder's signature plus the number of snapshots, so a
run that is still training gets new numbers when a snapshot lands. Shared models come from
compute.model_of and are used under their lock (the ablation hooks are registered on them); loops over a
run's snapshots load their own copies, so they never evict the pages' models from the small model cache.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from icl_core import attribution, circuits, fuzzy
from icl_core.ablation import Head
from icl_core.errors import ICLError
from icl_core.explore import induction_heads
from icl_core.snapshots import SnapshotInfo, load_model
from icl_core.tokenizer import token_labels
from ui import compute

# What an analysis may raise for a bad input (a corrupt checkpoint, a run without stored losses, ...):
# the pages show these as st.error instead of a traceback.
ANALYSIS_ERRORS = (ICLError, ValueError)

KIND_LABEL = {"K": "K-composition", "Q": "Q-composition", "V": "V-composition"}
INDUCTION_COLOR = "#e4572e"  # as charts.TARGET_COLOR: induction heads everywhere in the app
OTHER_COLOR = "#8c8c8c"
DIVERGING = "blueorange"


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


@contextmanager
def one_thread() -> Iterator[None]:
    """Run weight-only analyses (many tiny matrix products) on one torch thread.

    Threads do not speed up 64 x 64 products, and on two cores shared with other work a second thread's
    spin-waiting slowed the over-training loop from 3 s to minutes. Reference-counted, so overlapping
    sessions restore the setting only when the last one leaves.
    """
    global _threads_users, _threads_saved
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def run_key(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> tuple[tuple[str, int, int], int]:
    """Cache key of a run-level result: the run folder's signature and how many snapshots it has."""
    return compute.run_signature(Path(run_dir)), len(snaps)


def best_induction_head(info: SnapshotInfo) -> Head | None:
    """The head with the highest stored prefix-matching score in layers >= 1 (any layer of a 1-layer model)."""
    pm = info.metrics.get("prefix_matching")
    if not isinstance(pm, list) or not pm:
        return None
    found = induction_heads(pm, threshold=-1.0)
    return found[0] if found else None


def stored_prefix_matching(info: SnapshotInfo) -> list[list[float]] | None:
    pm = info.metrics.get("prefix_matching")
    cfg = info.model_config
    if isinstance(pm, list) and len(pm) == cfg.n_layers and all(len(r) == cfg.n_heads for r in pm):
        return [[float(v) for v in row] for row in pm]
    return None


# ---------------------------------------------------------------------------------------------
# Circuits


@st.cache_data(max_entries=32, show_spinner=False)
def _composition(key: tuple[str, int], _info: SnapshotInfo) -> circuits.CompositionScores:
    loaded = compute.model_of(_info)
    with loaded.lock, one_thread():
        return circuits.composition_matrices(loaded.model)


def composition_of(info: SnapshotInfo) -> circuits.CompositionScores:
    """Baseline-subtracted K/Q/V composition (raises ValueError for a 1-layer model)."""
    return _composition(compute.snapshot_key(info), info)


@st.cache_data(max_entries=32, show_spinner=False)
def _copying(key: tuple[str, int], _info: SnapshotInfo) -> list[dict[str, object]]:
    loaded = compute.model_of(_info)
    with loaded.lock, one_thread():
        return circuits.copying_table(loaded.model)


def copying_of(info: SnapshotInfo) -> list[dict[str, object]]:
    return _copying(compute.snapshot_key(info), info)


@st.cache_data(max_entries=64, show_spinner=False)
def _circuit(
    key: tuple[str, int], kind: str, head: Head, prev: Head | None, n_tokens: int, _info: SnapshotInfo
) -> circuits.CircuitMatrix:
    loaded = compute.model_of(_info)
    tokens = circuits.readable_tokens(n_tokens)
    with loaded.lock, one_thread():
        if kind == "qk":
            return circuits.full_qk_circuit(loaded.model, *head, tokens=tokens)
        if kind == "kqk":
            return circuits.k_composition_qk_circuit(loaded.model, *head, prev_head=prev, tokens=tokens)
        return circuits.full_ov_circuit(loaded.model, *head, tokens=tokens)


def circuit_of(
    info: SnapshotInfo, kind: str, head: Head, n_tokens: int, prev: Head | None = None
) -> circuits.CircuitMatrix:
    """kind: 'qk' (direct QK), 'kqk' (QK through K-composition with `prev`), 'ov' (OV)."""
    return _circuit(compute.snapshot_key(info), kind, tuple(head), tuple(prev) if prev else None, n_tokens, info)


@st.cache_data(max_entries=8, show_spinner=False)
def _circuits_over_training(
    key: tuple[tuple[str, int, int], int], _snaps: tuple[SnapshotInfo, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    comp_rows: list[dict[str, Any]] = []
    copy_rows: list[dict[str, Any]] = []
    with one_thread():
        for snap in _snaps:
            _score_snapshot(snap, comp_rows, copy_rows)
    return comp_rows, copy_rows


def _score_snapshot(snap: SnapshotInfo, comp_rows: list[dict[str, Any]], copy_rows: list[dict[str, Any]]) -> None:
    model = load_model(snap)  # a private copy: tiny, and it keeps the shared model cache for the pages
    base = {"step": snap.step, "tokens": snap.tokens_seen}
    if model.cfg.n_layers >= 2:
        for r in circuits.composition_matrices(model).records():
            comp_rows.append({**base, "kind": r["kind"], "pair": f"{r['early']} → {r['late']}", **r})
    for r in circuits.copying_table(model):
        copy_rows.append({**base, **r})


def circuits_over_training(
    run_dir: Path, snaps: Sequence[SnapshotInfo]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Composition (long: step, tokens, kind, pair, early, late, score, raw) and copying rows for every snapshot."""
    return _circuits_over_training(run_key(run_dir, snaps), tuple(snaps))


# ---------------------------------------------------------------------------------------------
# Attribution


@st.cache_data(max_entries=32, show_spinner=False)
def _ablation_table(key: tuple[str, int], mode: str, _info: SnapshotInfo) -> attribution.AblationTable:
    loaded = compute.model_of(_info)
    with loaded.lock:
        return attribution.ablation_table(loaded.model, mode, prefix_matching=stored_prefix_matching(_info))


def ablation_table_of(info: SnapshotInfo, mode: str) -> attribution.AblationTable:
    return _ablation_table(compute.snapshot_key(info), mode, info)


@st.cache_data(max_entries=16, show_spinner=False)
def _phase_attribution(
    key: tuple[tuple[str, int, int], int], mode: str, _snaps: tuple[SnapshotInfo, ...]
) -> attribution.PhaseAttribution | None:
    return attribution.phase_change_attribution(list(_snaps), mode)


def phase_attribution_of(run_dir: Path, snaps: Sequence[SnapshotInfo], mode: str):
    return _phase_attribution(run_key(run_dir, snaps), mode, tuple(snaps))


@st.cache_data(max_entries=8, show_spinner=False)
def _attribution_over_training(
    key: tuple[tuple[str, int, int], int], mode: str, _snaps: tuple[SnapshotInfo, ...]
) -> list[dict[str, object]]:
    return attribution.attribution_over_training(list(_snaps), mode)


def attribution_over_training_of(run_dir: Path, snaps: Sequence[SnapshotInfo], mode: str) -> list[dict[str, object]]:
    return _attribution_over_training(run_key(run_dir, snaps), mode, tuple(snaps))


@st.cache_data(max_entries=32, show_spinner=False)
def _fuzzy(key: tuple[str, int], _info: SnapshotInfo) -> tuple[dict[str, fuzzy.FuzzyResult], list[tuple[str, str]]]:
    loaded = compute.model_of(_info)
    with loaded.lock:
        results = fuzzy.fuzzy_probe(loaded.model)
        examples: list[tuple[str, str]] = []
        if loaded.model.cfg.d_vocab > 122:
            nn = fuzzy.nearest_neighbours(loaded.model)
            letters = [ord(c) for c in "aeinostAEINOST"]
            examples = list(zip(token_labels(letters), token_labels([int(nn[t]) for t in letters]), strict=True))
    return results, examples


def fuzzy_of(info: SnapshotInfo) -> tuple[dict[str, fuzzy.FuzzyResult], list[tuple[str, str]]]:
    """Fuzzy probe results per perturbation, and a few (letter, its nearest neighbour in W_E) examples."""
    return _fuzzy(compute.snapshot_key(info), info)


# ---------------------------------------------------------------------------------------------
# Charts (data in, chart out, no st.* calls)


def _head_axis(n_heads: int) -> alt.Axis:
    # Every head labelled (Vega would drop "overlapping" ones in a narrow column); upright when there are many.
    return alt.Axis(labelAngle=0 if n_heads <= 12 else -90, labelOverlap=False)


def composition_heatmaps(comp: circuits.CompositionScores) -> alt.FacetChart:
    """K, Q and V composition side by side: earlier heads down, later heads across, baseline subtracted."""
    df = pd.DataFrame(comp.records())
    df["composition"] = df["kind"].map(KIND_LABEL)
    df["score"] = df["score"].round(3)
    df["raw"] = df["raw"].round(3)
    top = float(max(df["score"].abs().max(), 0.05))
    base = alt.Chart().encode(
        x=alt.X("late:N", title="later head (reads)", sort=comp.col_labels, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("early:N", title="earlier head (writes)", sort=comp.row_labels),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            "score:Q",
            scale=alt.Scale(scheme=DIVERGING, domain=[-top, top], domainMid=0),
            title="score − baseline",
        ),
        tooltip=["composition", "early", "late", alt.Tooltip("score:Q", format="+.3f"), alt.Tooltip("raw:Q")],
    )
    text = base.mark_text(fontSize=11).encode(text=alt.Text("score:Q", format="+.2f"))
    n = max(len(comp.col_labels), 1)
    return (
        alt.layer(rect, text, data=df)
        .properties(width=min(46 * n, 300), height=min(30 * len(comp.row_labels), 300))
        .facet(column=alt.Column("composition:N", title=None, sort=[KIND_LABEL[k] for k in circuits.COMPOSITION_KINDS]))
        .properties(
            title=alt.TitleParams(
                "Composition scores, random baseline subtracted",
                subtitle=f"baseline (mean score of random matrices of the same shapes) = {comp.baseline:.3f}",
            )
        )
    )


def copying_bars(rows: list[dict[str, object]]) -> alt.Chart:
    """Per head: eigenvalue (Elhage et al.) and empirical (Olsson et al.) copying scores, both in [-1, 1]."""
    df = pd.DataFrame(rows)
    long = df.melt(
        id_vars=["head", "layer"], value_vars=["eigenvalue", "empirical"], var_name="score", value_name="value"
    )
    long["value"] = long["value"].round(3)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=list(df["head"]), axis=_head_axis(len(df))),
            xOffset=alt.XOffset("score:N"),
            y=alt.Y("value:Q", title="copying score", scale=alt.Scale(domain=[-1, 1])),
            color=alt.Color("score:N", title=None),
            tooltip=["head", "score", alt.Tooltip("value:Q", format="+.3f")],
        )
        .properties(title="Copying scores per head (positive = copies the attended token)", height=240)
    )


def circuit_heatmap(cm: circuits.CircuitMatrix, subtitle: str = "", value_title: str = "score") -> alt.Chart:
    """A token x token matrix as a heatmap, rows and columns in the matrix's own order (diverging around 0)."""
    m = np.asarray(cm.matrix, dtype=float)
    rows, cols = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    df = pd.DataFrame(
        {
            "row": np.asarray(cm.row_labels, dtype=object)[rows.ravel()],
            "col": np.asarray(cm.col_labels, dtype=object)[cols.ravel()],
            "value": np.round(m.ravel(), 3),
        }
    ).dropna()
    finite = m[np.isfinite(m)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    cell = int(np.clip(380 / max(m.shape[1], 1), 8, 16))  # fits a half-width column unscaled
    font = int(np.clip(cell - 2, 7, 12))
    return (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X(
                "col:N",
                title=cm.col_axis,
                sort=list(cm.col_labels),
                axis=alt.Axis(
                    labelAngle=0, labelFont="monospace", labelFontSize=font, orient="top", labelOverlap=False
                ),
            ),
            y=alt.Y(
                "row:N",
                title=cm.row_axis,
                sort=list(cm.row_labels),
                axis=alt.Axis(labelFont="monospace", labelOverlap=False),
            ),
            color=alt.Color(
                "value:Q", scale=alt.Scale(scheme=DIVERGING, domain=[-top, top], domainMid=0), title=value_title
            ),
            tooltip=[
                alt.Tooltip("row:N", title=cm.row_axis),
                alt.Tooltip("col:N", title=cm.col_axis),
                alt.Tooltip("value:Q", format="+.3f"),
            ],
        )
        .properties(
            title=alt.TitleParams(cm.title, subtitle=subtitle) if subtitle else cm.title,
            width=cell * m.shape[1],
            height=cell * m.shape[0],
            # Streamlit fits a plain chart's axes and legend *inside* width x height, squeezing the cells under
            # their labels; "pad" keeps one label per cell.
            autosize=alt.AutoSizeParams(type="pad", contains="padding"),
        )
    )


def head_bars(df: pd.DataFrame, y: str, title: str, y_title: str, sort: list[str] | None = None) -> alt.Chart:
    """One bar per head, induction heads in the app's induction colour (df: head, is_induction, y)."""
    data = df.copy()
    data["kind"] = np.where(data["is_induction"], "induction head", "other head")
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=sort or list(data["head"]), axis=_head_axis(len(data))),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=alt.Color(
                "kind:N",
                title=None,
                scale=alt.Scale(domain=["induction head", "other head"], range=[INDUCTION_COLOR, OTHER_COLOR]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=["head", "kind", alt.Tooltip(f"{y}:Q", format="+.3f")],
        )
        .properties(title=title, height=300)
    )


def fuzzy_prefix_bars(rows: list[dict[str, object]], kinds_label: dict[str, str]) -> alt.Chart:
    """Per head: prefix-matching score on exact, case-flipped and nearest-neighbour repeats."""
    df = pd.DataFrame(rows)
    df["repeat"] = df["kind"].map(kinds_label)
    df["prefix_matching"] = df["prefix_matching"].round(3)
    order = [kinds_label[k] for k in fuzzy.PERTURBATIONS if k in kinds_label]
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=list(dict.fromkeys(df["head"])), axis=_head_axis(df["head"].nunique())),
            xOffset=alt.XOffset("repeat:N", sort=order),
            y=alt.Y("prefix_matching:Q", title="prefix-matching score", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("repeat:N", title="first copy", sort=order),
            tooltip=["head", "repeat", alt.Tooltip("prefix_matching:Q", format=".3f")],
        )
        .properties(title="Fuzzy prefix matching: attention to the token after the perturbed match", height=240)
    )


def fuzzy_loss_bars(df: pd.DataFrame) -> alt.Chart:
    """Second-copy loss of the true next token and of the literal copy, per perturbation (df: repeat, measure, loss)."""
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y(
                "repeat:N",
                title=None,
                sort=list(dict.fromkeys(df["repeat"])),
                axis=alt.Axis(labelLimit=200, labelOverlap=False),
            ),
            yOffset=alt.YOffset("measure:N"),
            x=alt.X("loss:Q", title="loss (nats)"),
            color=alt.Color(
                "measure:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=300)
            ),
            tooltip=["repeat", "measure", alt.Tooltip("loss:Q", format=".3f")],
        )
        .properties(title="Loss on the second copy", height=240)
    )
