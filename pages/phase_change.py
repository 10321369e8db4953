"""Phase change: training loss, ICL score, induction scores and the loss-PCA plane against training time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from icl_core.analysis.across_runs import RunSeries
from icl_core.analysis.pca import highlighted_pca_rows
from icl_core.analysis.phase import EARLY_STAGE_LABEL, PhaseWindow, early_stage_end, induction_onset, phase_status
from icl_core.analysis.summary import (
    describe_phase_change,
    fmt_tokens,
    head_score_rows,
    icl_examples_note,
    icl_rows,
    one_layer_note,
    summary_rows,
)
from icl_core.analysis.text import repeat_lengths
from icl_core.analysis.timeline import phase_frames
from icl_core.errors import ICLError
from icl_core.heads import INDUCTION_THRESHOLD, head_name
from icl_core.model.config import ICL_FORMULA, ICL_LATE_TOKEN
from icl_core.storage.snapshots import SnapshotInfo
from ui import analyses, chrome, landscape, layout, picks, runs, state, strips, timeline, training_charts
from ui.across_runs import draw_across_runs
from ui.export import export_buttons
from ui.quote import user_text
from ui.training_charts import ICL_TITLE

LOG_AXIS_KEY = "phase_log_axis"
LOSS_TEXT_KEY = "phase_loss_text"
MIN_REPEAT = 4  # tokens: a repeated stretch at least this long counts as something induction can continue
# Code like the training text, with long names repeated: after the phase change their second occurrences are
# predicted far better (Olsson et al.'s per-token figure shows the same on prose).
LOSS_CHANGE_TEXT = """def compute_gradient_norm(parameters):
    total_squared_norm = 0.0
    for parameter in parameters:
        total_squared_norm += parameter.grad.norm() ** 2
    return total_squared_norm ** 0.5


gradient_norm = compute_gradient_norm(model.parameters())
"""
PICK = "pick"  # the charts' click-selection parameter


def pickable_chart(chart, base_key: str, run: str | None = None) -> None:
    """Draw a chart whose clicked point becomes the shared run/step (`run`: the run the chart is about)."""
    key = picks.selection_key(base_key)
    chrome.show_chart(
        chart,
        width="stretch",
        key=key,
        on_select=lambda: picks.apply_chart_pick(key, PICK, run),
        selection_mode=PICK,
    )


def chart_with_export(chart, data: pd.DataFrame, name: str, pick_key: str | None = None) -> None:
    """The chart (clickable when `pick_key` is given), then PNG / SVG / CSV buttons (built only when clicked)."""
    if pick_key:
        pickable_chart(chart, pick_key)
    else:
        chrome.show_chart(chart, width="stretch")
    export_buttons(chart, data, name)


def depth_panel(
    snaps: list[SnapshotInfo], window: PhaseWindow | None, title: str, x_domain: tuple[int, int] | None, log_x: bool
) -> dict[str, Any]:
    """One run's ICL score on both evaluation sets, as a panel of the side-by-side figure ({} when the run has
    none); its spec is built once per run version and axis (chrome.memo_chart), as it does not follow the step."""
    both = pd.DataFrame(icl_rows(summary_rows(snaps)))
    if both.empty:
        return {}
    tokens = {s.step: s.tokens_seen for s in snaps}
    return chrome.memo_chart(
        training_charts.over_training,
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
        early_stage_end=early_stage_end(snaps),
    )


state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("The phase change")
st.caption(
    "Olsson et al.: at one point in training, induction heads form, the ICL score drops, the loss bumps and the "
    "per-token-loss trajectory turns, all at once. Press ▶ Play or drag the timeline and watch the red rule, the "
    "rings and the numbers move; or click a point on the ICL-score, prefix-matching or PCA chart. Every page "
    "follows the step you stop at."
)
sel = state.require_selection()
step = sel.step
snaps = list(sel.snapshots)
tokens_at = {s.step: s.tokens_seen for s in snaps}
# Every chart over training shares this x-range, so the phase window and the selected step line up across them.
seen = [t for t in tokens_at.values() if t > 0]
x_domain = (min(seen), max(seen)) if seen else None
if not seen and any(s.step > 0 for s in snaps):  # a step-labelled import without its tokens per step
    st.warning(
        f"**{user_text(sel.run.name)}** records no tokens seen (its checkpoints are labelled by training step, and "
        "no tokens per step were given when it was imported): the charts over training, drawn against tokens "
        "seen, stay empty. Import it again on the Models page with its tokens per step (batch size × context)."
    )

try:
    window = runs.phase_window_of(sel.run.path)
except ICLError as exc:
    st.error(user_text(exc, 500))
    window = None
# Scrub and play through training in the browser: the metric row and the selected step's rule and rings on every
# chart here follow it with no server round trip; pausing or letting go makes it the app's step.
timeline.draw(phase_frames(snaps, window, step), key=f"phase_timeline_{sel.run.name}")

log_x = st.toggle(
    "Log token axis",
    key=LOG_AXIS_KEY,
    help="Off: tokens seen on a linear axis, as Olsson et al. draw it; the change is a short stretch followed by "
    "a long plateau. On: a log axis, which spreads out the first few hundred thousand tokens.",
)
stage_end = early_stage_end(snaps)
window_tokens = (tokens_at[window.start_step], tokens_at[window.end_step]) if window else None
sentence = describe_phase_change(window, snaps)
if window is None:
    cfg = sel.snapshot.model_config
    st.info(f"**{sel.run.name}**: {sentence}." + (f" {one_layer_note(cfg)}" if one_layer_note(cfg) else ""))
else:
    st.success(
        f"**{sel.run.name}**: {sentence}. The selected step is **{phase_status(window, step)}**. "
        "Shaded orange on the charts."
    )
    spread = analyses.window_spread_of(sel.run.path, snaps)
    if spread is not None and spread.start and spread.end and spread.decades:
        st.caption(
            f"The window is located on one draw of the prefix-matching probe. Over {spread.n_draws} draws (this "
            f"one and {spread.n_draws - 1} of other random bytes), {spread.n_found} find one: it starts at "
            f"{fmt_tokens(spread.start[0])}–{fmt_tokens(spread.start[1])} and ends at {fmt_tokens(spread.end[0])}–"
            f"{fmt_tokens(spread.end[1])} tokens ({spread.decades[0]:.2f}–{spread.decades[1]:.2f} decades wide)."
        )

onset = induction_onset(snaps)
onset_tokens = (tokens_at[onset[0]] or None) if onset else None
if onset:
    st.markdown(
        f":violet[**Induction heads form**] at step {onset[0]:,} ({fmt_tokens(tokens_at[onset[0]])} tokens): "
        f"{head_name(onset[1])}'s prefix-matching score passes {INDUCTION_THRESHOLD} and stays "
        "above it (dashed violet line on the charts)."
    )
else:
    st.markdown(
        f"No candidate head ever reaches a prefix-matching score of {INDUCTION_THRESHOLD}: "
        "no induction head has formed in this run (yet)."
    )

rows = summary_rows(snaps)
summary = pd.DataFrame(rows)
if log_x and not tokens_at[step]:
    st.caption("Step 0 has seen no tokens, so the red rule cannot be placed on the log-scale axes.")
frames = training_charts.timeline_frames([s.tokens_seen for s in snaps])
# Every chart over training here: one x-range, and the timeline's rule.
axes = {"x_domain": x_domain, "log_x": log_x, "early_stage_end": stage_end, "timeline": frames}

c1, c2 = layout.panels("scores", 2)
with c1:
    if summary["icl_score"].notna().sum() == 0:
        st.info(
            f"This run recorded no ICL score: it needs a context over {ICL_LATE_TOKEN} tokens (the score is "
            f"{ICL_FORMULA}), "
            "so its in-context learning shows only in the prefix-matching scores."
        )
    else:
        icl = pd.DataFrame(icl_rows(rows))
        chart_with_export(
            chrome.memo_chart(
                training_charts.over_training,
                icl,
                "icl_score",
                ICL_TITLE,
                "nats",
                window_tokens,
                onset_tokens=onset_tokens,
                pick=PICK,
                se="icl_score_se",
                subtitle=training_charts.ICL_SUBTITLE,
                color="series" if icl["series"].nunique() > 1 else None,
                **axes,
            ),
            icl,
            f"{sel.run.name} ICL score",
            "pick_icl",
        )
        counts = icl_examples_note(sel.snapshot.metrics)
        if counts:
            st.caption(f"Examples each score averages at step {step:,}: {counts}.")
    repeated = pd.DataFrame(icl_rows(rows, ("icl_score_repeated",)))
    if not repeated.empty:  # runs evaluated before this score existed have none
        chart_with_export(
            chrome.memo_chart(
                training_charts.over_training,
                repeated,
                "icl_score",
                "ICL score on repeated random tokens",
                "nats",
                window_tokens,
                onset_tokens=onset_tokens,
                pick=PICK,
                se="icl_score_se",
                subtitle=training_charts.REPEATED_SUBTITLE,
                **axes,
            ),
            repeated,
            f"{sel.run.name} ICL score on repeated random tokens",
            "pick_icl_repeated",
        )
with c2:
    heads = pd.DataFrame([r for s in snaps for r in head_score_rows(s) if r["metric"] == "prefix_matching"])
    if heads.empty:
        st.info("This run did not record prefix-matching scores.")
    else:
        chart_with_export(
            chrome.memo_chart(
                training_charts.over_training,
                heads,
                "value",
                "Prefix-matching score per head",
                "prefix-matching score",
                window_tokens,
                onset_tokens=onset_tokens,
                color="head",
                points=False,
                pick=PICK,
                **axes,
            ),
            heads,
            f"{sel.run.name} prefix-matching",
            "pick_heads",
        )

c3, c4 = layout.panels("losses", 2)
with c3:
    log = runs.train_log_of(sel.run.path)
    parts = [pd.DataFrame({"tokens": summary["tokens"], "loss": summary["heldout_loss"], "series": "held-out loss"})]
    if log:
        parts.insert(
            0,
            pd.DataFrame(
                {"tokens": [r["tokens"] for r in log], "loss": [r["loss"] for r in log], "series": "training loss"}
            ),
        )
    losses = pd.concat(parts, ignore_index=True)
    chart_with_export(
        chrome.memo_chart(
            training_charts.over_training,
            losses,
            "loss",
            "Training and held-out loss",
            "loss (nats)",
            window_tokens,
            onset_tokens=onset_tokens,
            color="series",
            points=False,
            **axes,
        ),
        losses,
        f"{sel.run.name} loss",
    )
with c4:
    last = snaps[-1]
    curves: list[dict[str, Any]] = []
    for label, snap in (
        ("step 0", snaps[0]),
        (f"step {step:,} (selected)", sel.snapshot),
        (f"step {last.step:,} (final)", last),
    ):
        curve = snap.metrics.loss_curve
        if curve is not None and snap.step not in {c["step"] for c in curves}:
            curves.append({"step": snap.step, "label": label, "curve": curve})
    if curves:
        df = pd.concat(
            [pd.DataFrame({"index": range(len(c["curve"])), "loss": c["curve"], "series": c["label"]}) for c in curves],
            ignore_index=True,
        )
        chosen = [c["label"] for c in curves if c["step"] != snaps[0].step] or [curves[0]["label"]]
        chart = training_charts.loss_curves(
            df,
            "Loss at each token index",
            on_top=f"step {step:,} (selected)",
            y_from=chosen,
            present=chrome.presenting(),
        )
        chart_with_export(chart, df, f"{sel.run.name} loss curves")
        if len(chosen) < len(curves):
            st.caption("The y-axis fits the selected and final steps; step 0's curve (about ln 257 nats) is cut.")
    else:
        st.info("This run did not record loss curves.")

if stage_end:
    st.caption(
        f"Grey: the {EARLY_STAGE_LABEL} (until {fmt_tokens(stage_end)} tokens, when the held-out loss first "
        "reaches the entropy of the byte frequencies). Its ICL swing is positional: see the tour."
        + ("" if log_x else " On this linear axis it is a sliver at the left edge; the log axis spreads it out.")
    )

landscape.draw_llc_section(sel.run.path, snaps, step, window_tokens, axes)

st.subheader("1, 2 and 3 layers side by side")
by_layers = state.shipped_by_layers(state.list_runs())
if len(by_layers) < 2:
    st.info("The shipped 1-, 2- and 3-layer runs are not all here, so there is nothing to compare side by side.")
else:
    columns = layout.panels("layers", len(by_layers))
    for (n_layers, ref), column in zip(by_layers.items(), columns, strict=True):
        with column:
            title = f"{n_layers} layer{'s' * (n_layers > 1)} ({ref.name})"
            run_snaps, run_window = runs.snapshots_of(ref.path), runs.phase_window_of(ref.path)
            spec = depth_panel(run_snaps, run_window, title, x_domain, log_x)
            if not spec:
                st.info(f"{ref.name} recorded no ICL score.")
                continue
            chrome.show_chart(spec, width="stretch")
            st.caption(describe_phase_change(run_window, run_snaps) + ".")
    st.caption(
        "Olsson et al.'s figure: the same ICL score against tokens seen, one panel per depth, on both evaluation "
        "sets (held-out code and English prose; band ±2 s.e.). Only models with two or more layers fall, inside "
        "their orange window."
    )

st.subheader("Every run on one axis")
draw_across_runs(
    [RunSeries(ref.name, runs.snapshots_of(ref.path), runs.phase_window_of(ref.path)) for ref in state.list_runs()]
)

st.subheader("Per-token loss: before and after")
before_default = window.start_step if window else snaps[0].step
after_default = window.end_step if window else snaps[-1].step
pair = st.select_slider(
    "Compare the loss of each token at two steps",
    options=sel.steps,
    value=(before_default, after_default),
    key=f"phase_loss_pair_{sel.run.name}",  # a run's own steps: a new pair, at its window, for another run
    format_func=lambda s: f"step {s:,} · {fmt_tokens(tokens_at[s])}",
)
text = st.text_area(
    "Text", value=LOSS_CHANGE_TEXT, key=LOSS_TEXT_KEY, height=140, on_change=chrome.cut_to_limit, args=(LOSS_TEXT_KEY,)
)
chrome.text_cut_note(LOSS_TEXT_KEY)
by_step = {s.step: s for s in snaps}
try:
    _, before = analyses.text_analysis(by_step[pair[0]], text)
    prepared, after = analyses.text_analysis(by_step[pair[1]], text)
except analyses.ANALYSIS_ERRORS as exc:
    st.error(user_text(exc, 500))
else:
    change = after.losses - before.losses
    st.html(strips.loss_change_html(after.labels, change))
    # Loss i predicts token i + 1 from position i: an induction head can copy it where the text up to i repeats
    # an earlier stretch (a single repeated byte is too common to count).
    repeated = repeat_lengths(after.tokens)[:-1] >= MIN_REPEAT
    parts = [f"Mean change {change.mean():+.3f} nats over {len(change)} tokens"]
    if repeated.any() and (~repeated).any():
        parts.append(
            f"{change[repeated].mean():+.3f} on the {int(repeated.sum())} tokens that continue a stretch of "
            f"{MIN_REPEAT}+ tokens seen earlier (what induction heads copy), {change[~repeated].mean():+.3f} on "
            "the rest"
        )
    st.caption(
        f"Each token shaded by loss at step {pair[1]:,} − loss at step {pair[0]:,}: **blue = predicted better "
        "later**, red = worse (darkest at ±3 nats; hover for the value). "
        + "; ".join(parts)
        + ". "
        + " ".join(prepared.notes)
    )

st.subheader("Per-token-loss PCA")
run_paths = {r.name: r.path for r in state.list_runs()}
table = analyses.pca_of(run_paths, sel.run.name)
if table is None:
    st.info("Not enough snapshots with stored per-token losses to draw the PCA plane.")
else:
    highlighted = highlighted_pca_rows(table, sel.run.name, step, tokens_at[step])
    rings = analyses.pca_rings_of(run_paths, sel.run.name)  # every frame's, so the rings follow the timeline
    left, right = layout.panels("pca", [2, 1])
    with left:
        chart_with_export(
            chrome.memo_chart(training_charts.pca_chart, table.rows, rings, table.explained, pick=PICK, timeline=True),
            pd.DataFrame(table.rows),
            f"{sel.run.name} loss PCA",
            "pick_pca",
        )
    with right:
        st.markdown(
            f"Each point is one snapshot: its losses on a fixed set of {table.n_examples:,} held-out tokens (one "
            "per example, the same for every model in the plane), projected on the two main directions of "
            "variation across **all** runs. "
            "In the paper, runs with a phase change **turn sharply** there. Here (held-out code) the 3-layer "
            "and 2-layer smeared-key runs do, at their window's start; the plain 2-layer run's sharpest turn "
            "moves with how it is measured (README: the turn statistic)."
        )
        first_in_plane = min((r["step"] for r in table.rows if r["run"] == sel.run.name), default=None)
        if first_in_plane is not None and step < first_in_plane:
            st.caption(
                f"Step {step:,} is not in the plane: it starts at step {first_in_plane:,}, because the first "
                "few dozen steps (every model leaving uniform predictions) would swamp both components. "
                "The rings mark the nearest snapshots."
            )
        st.markdown(
            "\n".join(f"- **{h['run']}**: step {h['step']:,} ({fmt_tokens(h['tokens'])} tokens)" for h in highlighted)
        )
        for name, why in sorted(table.skipped.items()):
            st.caption(f"Not shown: {name}: {why}.")
