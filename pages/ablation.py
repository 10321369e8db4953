"""Ablation: switch heads off and see in-context learning break (or not), live."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from icl_core.analysis.ablation import ABLATION_MODES, AblationEffect, AblationMode
from icl_core.analysis.metrics import ICL_WINDOW, moving_average
from icl_core.analysis.summary import fmt_icl
from icl_core.analysis.text import TextInput, preset_text
from icl_core.errors import ICLError
from icl_core.heads import INDUCTION_THRESHOLD, Head, all_heads, head_name, induction_heads, random_other_head
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_FORMULA, ICL_LATE_TOKEN
from icl_core.storage.snapshots import SnapshotInfo
from ui import analyses, chrome, layout, state, text_charts, training_charts, vega, widget_state
from ui.blocks import block, note
from ui.export import export_buttons
from ui.quote import user_text
from ui.tables import Bar, html_table

MODE_KEY, THRESHOLD_KEY, TEXT_KEY = "ablation_mode", "induction_threshold", "ablation_text"
COMPARE_KEY, SEED_KEY = "_ablation_compare", "_ablation_random_seed"


def layer_key(layer: int) -> str:
    """The key of a layer's head picker; its value is the names of the layer's ablated heads."""
    return f"ablate_layer_{layer}"


def _set_heads(heads: list[Head], all_heads: list[Head]) -> None:
    for layer in sorted({h[0] for h in all_heads}):
        st.session_state[layer_key(layer)] = [head_name(h) for h in all_heads if h[0] == layer and h in heads]


def _ablate_induction(found: list[Head], all_heads: list[Head]) -> None:
    _set_heads(found, all_heads)
    st.session_state[COMPARE_KEY] = {**st.session_state.get(COMPARE_KEY, {}), "induction": found}


def _ablate_random(found: list[Head], n_layers: int, n_heads: int, all_heads: list[Head]) -> None:
    seed = st.session_state.get(SEED_KEY, 0) + 1
    st.session_state[SEED_KEY] = seed
    other = random_other_head(n_layers, n_heads, found, seed=seed)
    _set_heads([other] if other else [], all_heads)
    st.session_state[COMPARE_KEY] = {
        **st.session_state.get(COMPARE_KEY, {}),
        "induction": found,
        "random": [other] if other else [],
    }


def _apply_link(by_name: dict[str, Head], heads_all: list[Head]) -> list[str]:
    """The link's ablated heads and mode, put into their widgets' state; a warning for each thing it names wrong."""
    link = state.link_params("heads", "mode")
    warnings = []
    if "mode" in link:
        if link["mode"] in ABLATION_MODES:
            st.session_state[MODE_KEY] = link["mode"]
        else:
            warnings.append(
                f"The link's ablation mode **{user_text(link['mode'])}** is not one of: {', '.join(ABLATION_MODES)}."
            )
    if "heads" in link:
        named = [x.strip() for x in link["heads"].split(",") if x.strip()]
        _set_heads([by_name[x] for x in named if x in by_name], heads_all)
        unknown = [x for x in named if x not in by_name]
        if unknown:
            warnings.append(
                f"The link names heads this model does not have: {user_text(', '.join(unknown))} "
                f"(it has {head_name(heads_all[0])} to {head_name(heads_all[-1])})."
            )
    return warnings


def _settled_heads(n_layers: int, n_heads: int) -> list[Head]:
    """The ablated heads the layers' pickers below will return, read from their state before they are drawn."""
    chosen = []
    for layer in range(n_layers):
        names = [head_name((layer, head)) for head in range(n_heads)]
        kept = widget_state.keep_only(layer_key(layer), names)  # another run's heads: keep only this model's
        chosen += [(layer, names.index(x)) for x in kept]
    return sorted(chosen)


@dataclass
class AblationViews:
    """Everything the page draws from one ablation (heads, mode) of one snapshot, built before drawing."""

    clean: AblationEffect
    ablated: AblationEffect
    curve_df: pd.DataFrame
    curve_chart: vega.FilledChart
    comparison: pd.DataFrame
    comparison_html: str


def _build_views(info: SnapshotInfo, chosen: list[Head], mode: AblationMode) -> AblationViews:
    clean = analyses.ablation_effect(info, [], mode)
    ablated = analyses.ablation_effect(info, chosen, mode)
    curve_df = pd.concat(
        [
            pd.DataFrame({"index": np.arange(len(e.loss_curve)), "loss": moving_average(e.loss_curve), "series": name})
            for name, e in (("clean", clean), ("ablated", ablated))  # the heads are named above the chart
            if chosen or name == "clean"
        ],
        ignore_index=True,
    )
    curve_chart = training_charts.loss_curves(
        curve_df,
        "In-context loss curve (held-out text, 9-token moving average)",
        present=chrome.presenting(),
        series=("clean", "ablated"),  # one layout with or without the ablated curve: toggles only swap the data
    ).ready()
    compare = st.session_state.get(COMPARE_KEY, {})
    scenarios: list[tuple[str, list[Head]]] = [("clean", [])]
    if compare.get("induction"):
        scenarios.append(
            (f"induction heads ({', '.join(head_name(h) for h in compare['induction'])})", compare["induction"])
        )
    if compare.get("random"):
        scenarios.append((f"random other head ({head_name(compare['random'][0])})", compare["random"]))
    if chosen and sorted(chosen) not in [sorted(h) for _, h in scenarios]:
        scenarios.append((f"your selection ({_names(chosen)})", chosen))
    # A table with bars, not a Vega chart: updating a chart's data cost the browser ~60 ms of every head toggle
    # (Chrome's profiler, a facet chart of a few bars), a table a few. The downloads still draw the chart.
    rows = []
    for name, hs in scenarios:
        e = analyses.ablation_effect(info, hs, mode)
        rows.append(
            {
                "scenario": name,
                "loss on second copy": e.second_half_loss,
                "gain from the repeat": e.first_half_loss - e.second_half_loss,
            }
        )
    comparison = pd.DataFrame(rows)
    measures = ["loss on second copy", "gain from the repeat"]
    low, high = min(0.0, float(comparison[measures].min().min())), max(0.0, float(comparison[measures].max().max()))
    hint = "Press Ablate induction heads, then Ablate a random other head, to compare the two here."
    comparison_html = block(
        _comparison_title(mode),
        note("Nats, on the repeated random tokens; one bar scale for both columns."),
        html_table(comparison, bars=dict.fromkeys(measures, Bar(".3f", low, high))),
        *([note(hint)] if len(scenarios) == 1 else []),
    )
    return AblationViews(clean, ablated, curve_df, curve_chart, comparison, comparison_html)


def _names(heads: list[Head]) -> str:
    return ", ".join(head_name(h) for h in heads) or "nothing (clean model)"


def _comparison_title(mode: AblationMode) -> str:
    return f"Comparison ({mode} ablation)"


def _predictions_views(rows: list[dict]) -> tuple[str | None, str]:
    """(the summary line over the tokens seen before, or None; the predictions table as HTML)."""
    pred = pd.DataFrame(rows)
    rep = pred[pred["repeat"]]
    summary = (
        f"Mean loss on tokens that occurred before: **{rep['clean_loss'].mean():.2f}** clean → "
        f"**{rep['ablated_loss'].mean():.2f}** ablated (over the last {len(pred)} positions)."
        if len(rep)
        else None
    )
    table = pred.rename(
        columns={
            "clean_top": "clean: top",
            "clean_p": "clean: p",
            "clean_loss": "clean: loss",
            "ablated_top": "ablated: top",
            "ablated_p": "ablated: p",
            "ablated_loss": "ablated: loss",
            "repeat": "seen before",
        }
    )
    numbers = {c: ".2f" for c in ("clean: p", "ablated: p", "clean: loss", "ablated: loss")}
    return summary, html_table(table, formats=numbers, marked=table["seen before"], max_height=300)


Predicted = tuple[TextInput, tuple[str | None, str] | None]  # the text's notes; its summary and table, if any


def _build_all(
    info: SnapshotInfo, chosen: list[Head], mode: AblationMode, text: str
) -> tuple[AblationViews | ICLError, Predicted | ICLError]:
    """(the ablation's views or why the snapshot is unusable; the text's (TextInput, predictions) or its error)."""
    try:
        views: AblationViews | ICLError = _build_views(info, chosen, mode)
    except ICLError as exc:
        views = exc
    try:
        prepared, rows = analyses.ablated_predictions(info, text, chosen, mode)
        predicted: Predicted | ICLError = (prepared, _predictions_views(rows) if rows else None)
    except ICLError as exc:  # shown under the text box (chrome.from_text)
        predicted = exc
    return views, predicted


state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
sel = state.require_selection()
info = sel.snapshot
cfg = info.model_config
heads_all = all_heads(cfg.n_layers, cfg.n_heads)
by_name = {head_name(h): h for h in heads_all}
pm = info.metrics.prefix_matching
link_warnings = _apply_link(by_name, heads_all)
if TEXT_KEY not in st.session_state:
    st.session_state[TEXT_KEY] = preset_text("Repeated English sentence")

text = st.session_state[TEXT_KEY]
# Built first, then drawn (ui/widget_state.py): from the heads and the mode the widgets below will return.
built = widget_state.Prebuilt(
    lambda heads_and_mode: _build_all(info, *heads_and_mode, text),
    (_settled_heads(cfg.n_layers, cfg.n_heads), st.session_state.get(MODE_KEY, ABLATION_MODES[0])),
)

st.title("Ablation: which heads carry in-context learning?")
st.caption(
    "Switch heads off and measure, on held-out data, what the model loses. The test that matters: random tokens "
    "repeated twice. The first copy is unpredictable; the second copy is predictable only by looking back, "
    "which is exactly what induction heads do."
)
for warning in link_warnings:
    st.warning(warning)
top = st.columns([2, 1])
with top[0]:
    mode = st.radio(
        "Ablation mode",
        list(ABLATION_MODES),
        key=MODE_KEY,
        horizontal=True,
        persist_state="session",
        captions=[m.help for m in ABLATION_MODES],
    )
with top[1]:
    threshold = st.slider(
        "Induction head threshold (prefix-matching score)",
        0.0,
        0.95,
        INDUCTION_THRESHOLD,
        0.05,
        key=THRESHOLD_KEY,
        persist_state="session",
        help="Heads in layers ≥ 1 (any layer in a 1-layer model) scoring above this count as induction heads.",
    )
found = induction_heads(pm, threshold) if pm is not None else []

st.subheader("Heads (selected = ablated)")
st.caption("Click heads to switch them off. Next to each head: its prefix-matching (induction) score at this step.")
# One multi-select per layer, not a toggle per head: every element is redrawn by the browser on each click, and
# two pickers instead of 8 toggles (and their rows) took ~30 ms off a head toggle (20-action probe).
chosen: list[Head] = []
for layer in range(cfg.n_layers):
    names = [head_name((layer, head)) for head in range(cfg.n_heads)]
    shown = {name: f"{name} · {pm[layer][head]:.2f}" if pm is not None else name for head, name in enumerate(names)}
    picked = st.pills(
        f"Layer {layer}",
        names,
        selection_mode="multi",
        key=layer_key(layer),
        format_func=shown.__getitem__,
        persist_state="session",
    )
    chosen += [by_name[x] for x in picked]
chosen.sort()
views, predicted = built.as_drawn((chosen, mode))
# The ablated heads and the mode go into the page's link, so it opens on this very ablation.
state.set_url_params(heads=",".join(head_name(h) for h in chosen) or None, mode=mode if chosen else None)

buttons = st.container(horizontal=True, vertical_alignment="center")
buttons.button(
    "Ablate induction heads",
    on_click=_ablate_induction,
    args=(found, heads_all),
    type="primary",
    key="btn_ablate_induction",
    disabled=not found,
    help="Heads whose prefix-matching score is above the threshold." if found else "No head is above the threshold.",
)
buttons.button(
    "Ablate a random other head",
    on_click=_ablate_random,
    args=(found, cfg.n_layers, cfg.n_heads, heads_all),
    key="btn_ablate_random",
)
buttons.button("Clear all", on_click=_set_heads, args=([], heads_all), key="btn_clear")
if found:
    buttons.caption(f"Induction heads at this step: {', '.join(head_name(h) for h in found)}.")
else:
    buttons.caption("No induction head at this step (none above the threshold): try a later step or a lower threshold.")

if isinstance(views, ICLError):
    st.error(f"Cannot use this snapshot: {user_text(views, 500)}")
    st.stop()
assert not isinstance(views, ICLError)  # st.stop() ended the run above
clean, ablated = views.clean, views.ablated


def _delta(a: float | None, b: float | None, ablating: bool = bool(chosen)) -> str | None:
    return f"{a - b:+.3f} vs clean" if a is not None and b is not None and ablating else None


st.subheader(f"Ablated: {_names(chosen)}")
metrics = layout.wrapping_row()
metrics.metric(
    "Loss on the first copy",
    f"{ablated.first_half_loss:.3f}",
    _delta(ablated.first_half_loss, clean.first_half_loss),
    delta_color="inverse",
    width="content",
)
metrics.metric(
    "Loss on the second copy",
    f"{ablated.second_half_loss:.3f}",
    _delta(ablated.second_half_loss, clean.second_half_loss),
    delta_color="inverse",
    width="content",
)
metrics.metric(
    "Gain from the repeat",
    f"{ablated.first_half_loss - ablated.second_half_loss:.3f}",
    _delta(ablated.first_half_loss - ablated.second_half_loss, clean.first_half_loss - clean.second_half_loss),
    help="first-copy loss − second-copy loss: how much seeing the sequence once helps",
    width="content",
)
icl_value = f"{ablated.icl_score:+.3f}" if ablated.icl_score is not None else "n/a"
stored_icl = fmt_icl(info.metrics)
metrics.metric(
    f"ICL score, windowed estimate ({len(analyses.probes(sel.snapshot).heldout)} examples)",
    icl_value,
    _delta(ablated.icl_score, clean.icl_score),
    delta_color="inverse",
    help=f"loss(≈{ICL_LATE_TOKEN}) − loss(≈{ICL_EARLY_TOKEN}) on a small held-out batch, to compare ablations "
    "live: negative = in-context learning. Not this snapshot's ICL score"
    + (
        f", which is {stored_icl} ({ICL_FORMULA} exactly, on the run's held-out set; the windowed estimate "
        "differs from it by the batch's noise and by the averaging over neighbouring tokens)."
        if stored_icl
        else "."
    ),
    width="content",
)
probes = analyses.probes(sel.snapshot)
st.caption(
    f"Measured on {len(probes.repeated)} sequences of {probes.half_len} random tokens shown twice, and on "
    f"{len(probes.heldout)} held-out examples for the loss curve; the ICL score here averages tokens "
    f"{ICL_EARLY_TOKEN - ICL_WINDOW}–{ICL_EARLY_TOKEN + ICL_WINDOW} and "
    f"{ICL_LATE_TOKEN - ICL_WINDOW}–{ICL_LATE_TOKEN + ICL_WINDOW} "
    f"({ICL_FORMULA}, negative = in-context learning) to steady the small batch."
    + (f" This snapshot's ICL score (exact, stored): {stored_icl}." if stored_icl else "")
)

left, right = layout.panels("results", 2)
with left:
    chrome.show_chart(views.curve_chart, width="stretch")
    export_buttons(views.curve_chart, views.curve_df, f"ablation loss curve {sel.run.name} step {sel.step}")
with right:
    st.html(views.comparison_html)

    comparison = views.comparison

    def _long_form() -> pd.DataFrame:  # the downloads' table and chart, built only on a click
        return comparison.melt(id_vars="scenario", var_name="measure", value_name="value")

    export_buttons(
        lambda: text_charts.comparison_bars(_long_form(), _comparison_title(mode), present=chrome.presenting()),
        _long_form,
        f"ablation comparison {sel.run.name} step {sel.step}",
    )

st.subheader("Predictions on your text")
st.text_input("Text", key=TEXT_KEY, persist_state="session", on_change=chrome.cut_to_limit, args=(TEXT_KEY,))
chrome.text_cut_note(TEXT_KEY)


def _predicted(found: Predicted | ICLError = predicted) -> Predicted:
    if isinstance(found, ICLError):
        raise found
    return found


shown_predictions = chrome.from_text(_predicted)
if shown_predictions is None:
    st.info("Type at least two characters to see predictions.")
    st.stop()
summary, predictions_html = shown_predictions
if summary:
    st.markdown(summary)
st.html(predictions_html)
