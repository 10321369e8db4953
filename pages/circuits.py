"""Circuits: composition and copying scores, and one head's full QK and OV circuits, read off the weights."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from icl_core.analysis.circuits import NOT_WEIGHT_ONLY
from icl_core.analysis.phase import best_induction_head, early_stage_end
from icl_core.analysis.summary import fmt_tokens
from icl_core.heads import Head, all_heads, head_name
from ui import analyses, chrome, head_charts, layout, runs, state, training_charts, widget_state
from ui.export import Chartish, export_buttons
from ui.quote import user_text

HEAD_KEY, PREV_KEY, NTOK_KEY = "circuits_head", "circuits_prev_head", "circuits_n_tokens"
KIND_KEY, COPY_KEY = "circuits_kind_over_training", "circuits_copy_metric"


state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("Circuits: what the weights say")
st.caption(
    "Elhage et al. 2021 read a head's job straight off its weights. The model has no LayerNorm, so every number "
    "here is an exact product of weight matrices: no data, no forward pass. An induction head **K-composes** "
    "with a previous-token head (its keys read what that head wrote) and its OV circuit **copies**."
)
sel = state.require_selection()
info = sel.snapshot
cfg = info.model_config
heads = all_heads(cfg.n_layers, cfg.n_heads)
names = [head_name(h) for h in heads]
by_name: dict[str, Head] = dict(zip(names, heads, strict=True))
best = best_induction_head(info)
st.markdown(
    f"**{sel.run.name}** at step {sel.step:,} ({fmt_tokens(info.tokens_seen)} tokens): "
    f"{cfg.n_layers} layer{'s' if cfg.n_layers > 1 else ''} × {cfg.n_heads} heads"
    + (", smeared keys" if cfg.smeared_keys else "")
    + "."
)

try:
    runs.model_of(info)
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot load this snapshot: {user_text(exc, 500)}")
    st.stop()
if cfg.has_mlps:  # a Pythia-style import: no score on this page reads what the model computes
    st.info(NOT_WEIGHT_ONLY)
    st.stop()

# --- Composition -------------------------------------------------------------------------------
st.subheader("Composition between layers")
comp = None
if cfg.n_layers < 2:
    st.info(
        "This is a **1-layer** model: there is no earlier layer for a head to compose with, so layer-0 × layer-1 "
        "composition scores do not apply. "
        + (
            "Its smeared keys do the previous-token step inside each head, which is how it can still form "
            "induction heads."
            if cfg.smeared_keys
            else "Without smeared keys it cannot form induction heads at all (the paper's 1-layer control)."
        )
    )
else:
    try:
        comp = analyses.composition_of(info)
    except analyses.ANALYSIS_ERRORS as exc:
        st.error(f"Cannot compute composition scores: {user_text(exc, 500)}")
    if comp is not None:
        chart: Chartish = head_charts.composition_heatmaps(comp)
        chrome.show_chart(chart, width="content")
        export_buttons(chart, comp.records(), "composition_scores")
        if best is not None and best[0] >= 1:
            col = comp.cols.index(best)
            k_col = comp.scores["K"][:, col]
            partner = comp.rows[int(pd.Series(k_col).idxmax())]
            prev_scores = info.metrics.previous_token
            prev_txt = ""
            if prev_scores is not None:
                prev_txt = f" (its previous-token score: {prev_scores[partner[0]][partner[1]]:.2f})"
            st.markdown(
                f"The best induction head at this step, **{head_name(best)}**, K-composes most with "
                f"**{head_name(partner)}**{prev_txt}: score {float(k_col.max()):+.3f} above the baseline."
            )
        st.caption(
            "K: the later head's keys read the earlier head's output; Q: its queries do; V: its values do. "
            "Scores are ‖W_QK W_OVᵀ‖ / (‖W_QK‖ ‖W_OV‖) and the like (Elhage et al.), minus the mean score of "
            "random matrices of the same shapes and rank, so 0 means 'no more aligned than chance'."
        )

# --- Copying -----------------------------------------------------------------------------------
st.subheader("Copying scores")
copy_rows = None
try:
    copy_rows = analyses.copying_of(info)
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot compute copying scores: {user_text(exc, 500)}")
if copy_rows:
    left, right = layout.panels("copying", [3, 2])
    with left:
        chart = head_charts.copying_bars(copy_rows)
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, copy_rows, "copying_scores")
    with right:
        table = pd.DataFrame(copy_rows).drop(columns=["layer"])
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "eigenvalue": st.column_config.NumberColumn("eigenvalue", format="%+.3f"),
                "empirical": st.column_config.NumberColumn("empirical", format="%+.3f"),
                "own_top1": st.column_config.NumberColumn("own token top-1", format="percent"),
            },
        )
    st.caption(
        "**Eigenvalue** (Elhage et al.): Re(Σλ)/Σ|λ| over the eigenvalues of the OV circuit W_U W_OV W_E; positive "
        "= copying. **Empirical** (Olsson et al.): the share of the head's mean-subtracted, ReLU'd direct-path logit "
        "increase that goes to the attended token, rescaled from 0…0.5 to −1…1; with 257 byte tokens even a clean "
        "copier scores low on it, so **own token top-1** (how often the attended token is the head's largest logit) "
        "is shown beside it."
    )

# --- One head's full circuits --------------------------------------------------------------------
st.subheader("One head's full QK and OV circuits")
default_head = head_name(best) if best else names[-1]
widget_state.settle(HEAD_KEY, names, default_head)  # a run with other heads resets it
c1, c2, c3 = st.columns([1, 1, 2])
head_label = c1.selectbox("Head", names, key=HEAD_KEY, help="Default: the best induction head at this step.")
head = by_name[head_label]
n_tokens = c3.slider(
    "Tokens shown",
    10,
    60,
    30,
    5,
    key=NTOK_KEY,
    help="The most frequent printable bytes of the training text, most frequent first (␣ is the space).",
)
earlier = [h for h in heads if h[0] < head[0]]
prev: Head | None = None
if earlier:
    prev_names = [head_name(h) for h in earlier]
    default_prev = prev_names[0]
    if comp is not None and head in comp.cols:
        k_col = comp.scores["K"][:, comp.cols.index(head)]
        ranked = [comp.rows[i] for i in k_col.argsort()[::-1] if comp.rows[i] in earlier]
        default_prev = head_name(ranked[0]) if ranked else default_prev
    # The partner follows the head: a stale partner from another head is replaced by this head's best one.
    widget_state.reset_on(PREV_KEY, head_label, default_prev)
    widget_state.settle(PREV_KEY, prev_names, default_prev)
    prev_name = c2.selectbox(
        "Earlier head (K-composition)",
        prev_names,
        key=PREV_KEY,
        help="Default: the earlier head this head K-composes with most.",
    )
    prev = by_name[prev_name]

try:
    qk = analyses.circuit_of(info, "qk", head, n_tokens)
    ov = analyses.circuit_of(info, "ov", head, n_tokens)
    kqk = analyses.circuit_of(info, "kqk", head, n_tokens, prev) if prev else None
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot compute this head's circuits: {user_text(exc, 500)}")
else:
    left, right = layout.panels("qk", 2)
    with left:
        chart = head_charts.circuit_heatmap(qk, "direct path: query token's embedding vs key token's embedding")
        chrome.show_chart(chart, width="content")
        export_buttons(chart, qk.records(), f"qk_circuit_{head_label}")
    with right:
        if kqk is not None and prev is not None:
            chart = head_charts.circuit_heatmap(
                kqk, f"keys carry what {head_name(prev)} copied in: a bright diagonal = induction"
            )
            chrome.show_chart(chart, width="content")
            export_buttons(chart, kqk.records(), f"kcomp_qk_circuit_{head_label}_{head_name(prev)}")
        else:
            st.info(
                f"{head_label} is in layer 0: no earlier head writes into its keys, so it has no K-composition "
                "circuit. Its QK circuit (left) sees token identities only (and positions, not shown)."
            )
    left, right = layout.panels("ov", 2)
    with left:
        chart = head_charts.circuit_heatmap(
            ov, "row: the token attended to · column: the logit it raises (row mean removed)", "logit"
        )
        chrome.show_chart(chart, width="content")
        export_buttons(chart, ov.records(), f"ov_circuit_{head_label}")
    with right:
        st.markdown(
            "**How to read these.** The QK circuit scores how much a query token wants to attend to a key token "
            "(W_E W_Q W_Kᵀ W_Eᵀ/√d_head). An induction head's *direct* QK circuit is usually unremarkable: its "
            "pattern comes through K-composition, where the key position carries the *previous* token written there "
            "by an earlier head, so a bright **diagonal** means 'attend to where the current token came just "
            "before'. The OV circuit (W_E W_OV W_U) says which logits the head raises when it attends to a token: a "
            "bright **diagonal** means it copies that token."
        )
        if cfg.smeared_keys:
            st.caption(
                "This run has smeared keys: each key mixes positions j and j−1, which these weight-only "
                "matrices leave out (they use the unsmeared W_QK)."
            )

# --- Over training -------------------------------------------------------------------------------
st.subheader("Over training")
try:
    rows = analyses.circuits_over_training(sel.run.path, sel.snapshots, ask_key="btn_circuits_over_training")
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot compute scores over training: {user_text(exc, 500)}")
    st.stop()
if rows is None:
    st.stop()  # waiting for the visitor's click
comp_rows, copy_over = rows
window = runs.phase_window_of(sel.run.path)
stage_end = early_stage_end(sel.snapshots)
tokens_at = {s.step: s.tokens_seen for s in sel.snapshots}
window_tokens = (tokens_at[window.start_step], tokens_at[window.end_step]) if window else None
selected_tokens = info.tokens_seen or None
left, right = layout.panels("over-training", 2)
with left:
    if not comp_rows:
        st.info("Composition over training needs at least two layers.")
    else:
        kind = st.radio(
            "Composition",
            ["K", "Q", "V"],
            key=KIND_KEY,
            horizontal=True,
            format_func=head_charts.KIND_LABEL.get,
        )
        df = pd.DataFrame(comp_rows)
        mine = df[(df["kind"] == kind) & ((df["late"] == head_label) | (df["early"] == head_label))]
        shown = mine if not mine.empty else df[df["kind"] == kind]
        shown = shown.rename(columns={"pair": "series"})
        chart = training_charts.over_training(
            shown,
            "score",
            f"{head_charts.KIND_LABEL[kind]} of the pairs with {head_label}"
            if not mine.empty
            else f"{head_charts.KIND_LABEL[kind]}, every pair",
            "score − baseline",
            window_tokens,
            selected_tokens,
            color="series",
            points=False,
            early_stage_end=stage_end,
        )
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, shown, "composition_over_training")
with right:
    metric = st.radio(
        "Copying score",
        ["eigenvalue", "empirical", "own_top1"],
        key=COPY_KEY,
        horizontal=True,
        format_func=lambda m: {"own_top1": "own token top-1"}.get(m, m),
    )
    df = pd.DataFrame(copy_over)
    chart = training_charts.over_training(
        df,
        metric,
        f"Copying score ({metric.replace('_', ' ')}) per head",
        "score",
        window_tokens,
        selected_tokens,
        color="head",
        points=False,
        early_stage_end=stage_end,
    )
    chrome.show_chart(chart, width="stretch")
    export_buttons(chart, df, "copying_over_training")
st.caption(
    "Against tokens seen (log scale; the step is in the tooltip). Shaded orange: the phase change; grey: the early "
    "stage (before byte frequencies are learned); red rule: the selected step. Computed from every snapshot's "
    "weights once per run, then cached."
)
