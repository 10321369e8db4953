"""Head attribution: which heads carry in-context learning, which caused the phase change, and fuzzy copying."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from icl_core.analysis import fuzzy
from icl_core.analysis.ablation import ABLATION_MODES, AblationMode
from icl_core.analysis.metrics import ICL_WINDOW
from icl_core.analysis.phase import early_stage_end
from icl_core.analysis.summary import fmt_icl, fmt_tokens, one_layer_note, summary_rows
from icl_core.errors import ICLError
from icl_core.heads import INDUCTION_THRESHOLD
from icl_core.model.config import ICL_FORMULA
from ui import analyses, chrome, head_charts, layout, runs, state, training_charts, widget_state
from ui.export import Chartish, export_buttons
from ui.quote import user_text

MODE_KEY, SORT_KEY = "attr_table_mode", "attr_table_sort"
ATTR_MODE_KEY, OVER_KEY = "attribution_mode", "btn_attr_over_training"
COMPARE_KEY = "compare_runs"
SORT_LABEL = {"delta_icl": "ICL score change", "delta_second_half": "Second-copy loss change"}
FUZZY_LABEL = {"exact": "exact repeat", "case": "case flipped", "neighbour": "nearest neighbour"}

state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("Head attribution")
st.caption(
    "Which heads does in-context learning depend on? Ablate every head alone and measure, attribute the phase "
    "change to heads as Olsson et al. do, test whether induction heads also copy *fuzzy* repeats, and compare runs."
)
sel = state.require_selection()
info = sel.snapshot
cfg = info.model_config
snaps = list(sel.snapshots)
tokens_at = {s.step: s.tokens_seen for s in snaps}

# --- Per-head ablation table ----------------------------------------------------------------------
st.subheader(f"Ablating one head at a time · step {sel.step:,}")
c1, c2 = st.columns([2, 1])
mode = c1.radio(
    "Ablation mode",
    list(ABLATION_MODES),
    key=MODE_KEY,
    horizontal=True,
    format_func=lambda m: AblationMode(m).label,
    help=" · ".join(f"{m.value}: {m.help}" for m in AblationMode),
)
sort_by = c2.radio("Sort by", list(SORT_LABEL), key=SORT_KEY, horizontal=True, format_func=SORT_LABEL.get)
table = None
try:
    table = analyses.ablation_table(info, mode, ask_key="btn_ablation_table")
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot ablate this snapshot's heads: {user_text(exc, 500)}")
if table is not None:
    df = pd.DataFrame(table.records())
    key = sort_by if table.clean_icl is not None else "delta_second_half"
    df = df.sort_values([key, "layer", "index"], ascending=[False, True, True], ignore_index=True)
    metrics = layout.wrapping_row()
    stored_icl = fmt_icl(info.metrics)
    metrics.metric(
        f"Clean ICL score, windowed estimate ({table.n_examples} examples)",
        f"{table.clean_icl:+.3f}" if table.clean_icl is not None else "n/a",
        help="The same windowed estimate as the Ablation page, on the batch the Δ column is measured on. "
        + (f"This snapshot's ICL score (exact, stored) is {stored_icl}." if stored_icl else ""),
        width="content",
    )
    metrics.metric("Clean second-copy loss", f"{table.clean_second_half:.3f}", width="content")
    metrics.metric("Induction heads (★)", ", ".join(df.loc[df["is_induction"], "head"]) or "none", width="content")
    left, right = layout.panels("table", [3, 2])
    with left:
        shown = df.assign(head=[f"★ {h}" if i else h for h, i in zip(df["head"], df["is_induction"], strict=True)])
        st.dataframe(
            shown[
                [
                    "head",
                    "is_induction",
                    "prefix_matching",
                    "delta_icl",
                    "icl_score",
                    "delta_second_half",
                    "second_half_loss",
                ]
            ],
            hide_index=True,
            column_config={
                "is_induction": st.column_config.CheckboxColumn("induction head"),
                "prefix_matching": st.column_config.NumberColumn("prefix-matching", format="%.2f"),
                "delta_icl": st.column_config.NumberColumn("Δ ICL score (windowed)", format="%+.3f"),
                "icl_score": st.column_config.NumberColumn("ICL score (windowed, ablated)", format="%+.3f"),
                "delta_second_half": st.column_config.NumberColumn("Δ second-copy loss", format="%+.3f"),
                "second_half_loss": st.column_config.NumberColumn("second-copy loss (ablated)", format="%.3f"),
            },
        )
    with right:
        chart: Chartish = head_charts.head_bars(
            df,
            key,
            f"{SORT_LABEL[key]} ({mode} ablation)",
            "Δ nats (ablated − clean)",
        )
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, df, f"ablation_table_{mode}")
    st.caption(
        f"ICL score here: the windowed estimate, {ICL_FORMULA} on {table.n_examples} held-out examples "
        f"averaged over ±{ICL_WINDOW} token indices around each (the Ablation page's estimate), "
        f"**positive Δ = less in-context learning**. Second-copy loss: {table.n_repeated} sequences of "
        f"{table.repeat_len} random tokens repeated twice; positive Δ = the head helped predict the repeat. "
        f"★ = induction head (stored prefix-matching score above {INDUCTION_THRESHOLD}, layers ≥ 1)."
        + (" This model's context is too short for an ICL score." if table.clean_icl is None else "")
    )

# --- Attribution of the phase change ----------------------------------------------------------------
st.subheader("Attribution of the phase change to heads")
st.caption(
    "Olsson et al.: take the change of every held-out token's loss across the phase change (the unit "
    "*before-and-after vector*) and dot it with each head's ablation-change vector (loss ablated − clean) at the "
    "end of the phase change. Heads whose removal undoes the phase change score strongly **negative**."
)
attr_mode = st.radio(
    "Ablation used for the attribution",
    list(ABLATION_MODES),
    index=list(ABLATION_MODES).index(AblationMode.PATTERN_PRESERVING),
    key=ATTR_MODE_KEY,
    horizontal=True,
    format_func=lambda m: AblationMode(m).label,
)
attr = None
if runs.phase_window_of(sel.run.path) is None:
    st.info(
        f"**{sel.run.name}** shows no phase change, so there is nothing to attribute."
        + (f" {one_layer_note(cfg)}" if one_layer_note(cfg) else "")
    )
else:
    try:
        attr = analyses.phase_attribution(sel.run.path, snaps, attr_mode, ask_key="btn_phase_attribution")
    except analyses.ANALYSIS_ERRORS as exc:
        st.error(f"Cannot attribute the phase change: {user_text(exc, 500)}")
if attr is not None:
    adf = pd.DataFrame(attr.records())
    left, right = layout.panels("attribution", 2)
    with left:
        chart = head_charts.head_bars(adf, "score", "Attribution of the phase change per head", "attribution score")
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, adf, f"phase_attribution_{attr_mode}")
        st.caption(
            f"Window: step {attr.start_step:,} → {attr.end_step:,} ({fmt_tokens(tokens_at[attr.start_step])} → "
            f"{fmt_tokens(tokens_at[attr.end_step])} tokens), {attr.n_examples} held-out tokens, {attr_mode} "
            "ablation at the end of the window. Score = (unit before-and-after vector) · (ablation-change vector)."
        )
    with right:
        st.caption(
            "Over training: every head's ablation-change vector at every snapshot, dotted with the same "
            "before-and-after vector. Induction heads' scores fall as they form."
        )
        over: list[dict[str, Any]] | None = []
        try:
            over = analyses.attribution_over_training(sel.run.path, snaps, attr_mode, ask_key=OVER_KEY)
        except analyses.ANALYSIS_ERRORS as exc:
            st.error(f"Cannot compute the attribution over training: {user_text(exc, 500)}")
        if over:
            odf = pd.DataFrame(over)
            window = attr.window
            chart = training_charts.over_training(
                odf,
                "score",
                "Attribution per head over training",
                "attribution score",
                (tokens_at[window.start_step], tokens_at[window.end_step]),
                info.tokens_seen or None,
                color="head",
                points=False,
                early_stage_end=early_stage_end(snaps),
            )
            chrome.show_chart(chart, width="stretch")
            export_buttons(chart, odf, f"attribution_over_training_{attr_mode}")

# --- Fuzzy copying ---------------------------------------------------------------------------------
st.subheader(f"Fuzzy copying · step {sel.step:,}")
st.caption(
    "Olsson et al. report induction heads that also complete [A*][B*] … [A] → [B] when A* only *resembles* A. Each "
    "probe is random letters X shown twice, the first copy perturbed: exact, case flipped (a ↔ A), or every token "
    "replaced by its nearest neighbour in the model's own embedding."
)
try:
    results, examples = analyses.fuzzy_of(info)
except analyses.ANALYSIS_ERRORS as exc:
    st.error(f"Cannot run the fuzzy copying probe: {user_text(exc, 500)}")
else:
    rows = fuzzy.fuzzy_rows(results)
    left, right = layout.panels("fuzzy", [3, 2])
    with left:
        chart = head_charts.fuzzy_prefix_bars(rows, FUZZY_LABEL)
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, rows, "fuzzy_prefix_matching")
    with right:
        ldf = pd.DataFrame(
            [
                {"repeat": FUZZY_LABEL[k], "measure": measure, "loss": round(value, 4)}
                for k, r in results.items()
                for measure, value in (
                    ("true next token", r.second_half_loss),
                    ("literal copy of the perturbed match", r.copied_loss),
                )
            ]
        )
        chart = head_charts.fuzzy_loss_bars(ldf)
        chrome.show_chart(chart, width="stretch")
        export_buttons(chart, ldf, "fuzzy_second_copy_loss")
    if examples:
        st.caption(
            "Nearest neighbours at this step: "
            + ", ".join(f"`{a}`→`{b}`" for a, b in examples)
            + ". The second copy is the true X: a head that matches fuzzily attends to the token after the "
            "perturbed match, and the true next token's loss stays low."
        )

# --- Compare runs ----------------------------------------------------------------------------------
st.subheader("Compare runs")
compared = {r.name: r for r in state.list_runs()}
widget_state.keep_only(COMPARE_KEY, compared, default=[sel.run.name])
chosen = st.multiselect(
    "Runs", list(compared), key=COMPARE_KEY, help="Overlay the chosen runs' ICL score and best induction head score."
)
parts: list[dict[str, Any]] = []
stage_ends: list[int | None] = []
for name in chosen:
    try:
        run_snaps = runs.snapshots_of(compared[name].path)
        parts.extend({**row, "series": name} for row in summary_rows(run_snaps))
        stage_ends.append(early_stage_end(run_snaps))
    except ICLError as exc:
        st.warning(f"{user_text(name)}: cannot read this run ({user_text(exc, 500)}).")
if not chosen:
    st.info("Pick one or more runs to compare.")
elif parts:
    cdf = pd.DataFrame(parts)
    left, right = layout.panels("compare-runs", 2)
    for col, y, title, y_title, what in (
        (
            left,
            "icl_score",
            "ICL score",
            f"{ICL_FORMULA}, nats",
            "ICL scores (they need a context over 500 tokens)",
        ),
        (right, "max_prefix_matching", "Best induction head score", "prefix-matching score", "prefix-matching scores"),
    ):
        with col:
            if cdf[y].notna().any():
                icl = y == "icl_score"
                chart = training_charts.over_training(
                    cdf,
                    y,
                    title,
                    y_title,
                    color="series",
                    points=False,
                    early_stage_end=max((e for e in stage_ends if e), default=None),
                    se="icl_score_se" if icl else None,
                    subtitle=training_charts.ICL_SUBTITLE if icl else "",
                )
                chrome.show_chart(chart, width="stretch")
                export_buttons(chart, cdf[["series", "step", "tokens", y]], f"compare_{y}")
            else:
                st.info(f"None of the chosen runs recorded {what}.")
