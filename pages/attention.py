"""Attention explorer: what every head attends to on a text, at the sidebar's run and training step."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from icl_core.analysis.phase import best_induction_head, phase_status
from icl_core.analysis.summary import fmt_tokens
from icl_core.analysis.text import MAX_TEXT_CHARS, PRESETS, TextAnalysis, TextInput, preset_text, top_attended
from icl_core.errors import ICLError
from icl_core.heads import Head, all_heads, head_name
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.storage.snapshots import SnapshotInfo
from ui import analyses, chrome, layout, picks, runs, state, strips, text_charts, timeline, vega, widget_state
from ui.blocks import block, note
from ui.export import export_buttons
from ui.heatmaps import heatmaps_html
from ui.quote import user_text
from ui.tables import Bar, html_table

CUSTOM = "Your own text"
PRESET_KEY, TEXT_KEY, QUERY_KEY = "attn_preset", "attn_text", "attn_query"  # QUERY_KEY: the destination token
QUERY_SLIDER, TEXT_ID_KEY = "attn_query_slider", "_attn_text_id"  # the slider's key is one per text (see below)
TOKEN_PICK, TOKEN_PICK_KEY = "pick", "attn_token_pick"  # the token grid's click selection
PICKS_KEY = "_attn_picks"  # how many tokens were picked in the grid: part of its key
LAYER_KEY, WINDOW_KEY, WSTART_KEY = "attn_layers", "attn_window", "attn_window_start"
ALL_LAYERS = "all layers"
FIRST_PRESET = "Repeated random tokens"
HEATMAPS_TITLE = "Attention patterns (orange outline: induction targets)"
SCORE_BARS = ("prefix-matching (probe)", "previous-token (probe)", "prefix-matching on this text")  # drawn as bars
WINDOWS, DEFAULT_WINDOW = [32, 48, 64, 96, 128], 64  # the heatmaps' "Tokens shown"
URL_TEXT_MAX = 2_000  # longer texts are not put in the link (browsers and servers cut long URLs)


def _tokenizer() -> Tokenizer:
    sel = state.current_selection()
    return runs.tokenizer_of(sel.snapshot) if sel is not None else BYTES


def _preset(name: str) -> str:
    return preset_text(name, tokenizer=_tokenizer())  # random tokens are the selected model's own


def _fill_preset() -> None:
    name = st.session_state.get(PRESET_KEY)
    if name in PRESETS:
        st.session_state[TEXT_KEY] = _preset(name)


def _mark_custom() -> None:
    st.session_state[PRESET_KEY] = CUSTOM
    chrome.cut_to_limit(TEXT_KEY)


state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("Attention explorer")
st.caption(
    "Type a text or pick a preset. Every head's attention is shown for the run and training step chosen in "
    "the sidebar. Orange marks **induction targets**: the token right after an earlier occurrence of the "
    "current token, where an induction head looks."
)
sel = state.require_selection()
info = sel.snapshot


def _from_link(link: dict[str, str]) -> None:
    """Open on the link's text (?text=...) or preset (?preset=...); a bad preset warns and keeps the default."""
    text, preset = link.get("text"), link.get("preset")
    if text is not None:
        if len(text) > MAX_TEXT_CHARS:
            st.warning(f"The link's text is {len(text):,} characters long: only the first {MAX_TEXT_CHARS:,} are used.")
            text = text[:MAX_TEXT_CHARS]
        st.session_state[TEXT_KEY] = text
        same = [p for p in PRESETS if _preset(p) == text]
        st.session_state[PRESET_KEY] = same[0] if same else CUSTOM
    elif preset is not None:
        if preset in PRESETS:
            st.session_state[PRESET_KEY] = preset
            st.session_state[TEXT_KEY] = _preset(preset)
        else:
            st.warning(f"The link's preset **{user_text(preset)}** is not one of: {', '.join(PRESETS)}.")


if TEXT_KEY not in st.session_state:
    st.session_state[PRESET_KEY] = FIRST_PRESET
    st.session_state[TEXT_KEY] = _preset(FIRST_PRESET)
link = state.link_params("text", "preset", "dest")
_from_link(link)
if st.session_state.get(PRESET_KEY) in PRESETS:  # a preset follows the run's tokenizer when the run changes
    st.session_state[TEXT_KEY] = _preset(st.session_state[PRESET_KEY])
tokenizer = _tokenizer()


@dataclass(frozen=True)
class DestinationViews:
    """What the destination's views draw for one destination token, built before any of them is drawn."""

    query: int
    picker: vega.FilledChart
    strip: str  # HTML: where each head looks from the destination
    prediction: str  # HTML: next-token prediction and the heads' summary
    loss: vega.FilledChart


def _destination_views(an: TextAnalysis, query: int, heads: list[Head], tokenizer: Tokenizer) -> DestinationViews:
    n = len(an.tokens)
    present = chrome.presenting()
    strip = block(
        f"Where each head looks from token {query} '{an.labels[query]}'",
        note(
            "Blue shading = attention weight (darker = more). Orange underline = induction target. "
            "Black outline = the destination token. Hover a token for its exact weight (none under 0.01)."
        ),
        strips.token_attention_html(an, query, heads),
    )
    actual = an.labels[query + 1] if query + 1 < n else None
    guesses = {an.labels[k] for k in np.flatnonzero(an.targets[query])}
    pred = pd.DataFrame(
        {"token": tokenizer.labels(an.top_ids[query].tolist()), "probability": an.top_probs[query].astype(float)}
    )
    pred["induction guess"] = pred["token"].isin(guesses)
    pred["actual next"] = pred["token"] == actual
    notes = [f"Actual next token: '{actual}', loss {an.losses[query]:.2f} nats."] if actual is not None else []
    if guesses:
        notes.append(f"Induction would predict: {', '.join(repr(g) for g in sorted(guesses))}.")
    else:
        notes.append("This token has not occurred before: an induction head has nothing to copy here.")
    summary = pd.DataFrame(
        [
            {
                "head": r["head"],
                "on induction targets": r["on_induction_targets"],
                "on previous token": r["on_previous_token"],
                "top source": ", ".join(f"{k}·{lab} ({w:.2f})" for k, lab, w in r["top"]),
            }
            for r in top_attended(an, query)
        ]
    )
    prediction = block(
        "Next-token prediction here",
        html_table(pred, bars={"probability": Bar(".3f")}, marked=pred["actual next"]),
        *(note(t) for t in notes),
        html_table(summary, bars={"on induction targets": Bar(), "on previous token": Bar()}),
    )
    return DestinationViews(
        query,
        text_charts.token_picker(an, query, TOKEN_PICK, present=present).ready(),
        strip,
        prediction,
        text_charts.loss_along_sequence(an, query, present=present).ready(),
    )


def _scores_html(an: TextAnalysis, heads: list[Head], info: SnapshotInfo) -> str:
    stored = info.metrics
    smear = stored.smear
    rows = []
    for layer, head in heads:
        row: dict[str, str | float | None] = {"head": head_name((layer, head))}
        for grid, label in (
            (stored.prefix_matching, "prefix-matching (probe)"),
            (stored.previous_token, "previous-token (probe)"),
            (stored.copying, "copying (eigenvalue)"),
        ):
            row[label] = grid[layer][head] if grid is not None else None
        pm = an.text_prefix_matching[layer, head]
        row["prefix-matching on this text"] = None if np.isnan(pm) else float(pm)
        if smear is not None:
            row["smear σ(α)"] = float(smear[layer][head])
        rows.append(row)
    return block(
        "Per-head scores",
        html_table(
            pd.DataFrame(rows),
            bars=dict.fromkeys(SCORE_BARS, Bar()),
            formats={"copying (eigenvalue)": "+.2f", "smear σ(α)": ".2f"},
        ),
        note(
            "Probe scores were measured when the snapshot was saved: prefix-matching on 25 random tokens "
            "repeated 4 times, previous-token on held-out text, copying = Re(Σλ)/Σ|λ| of the head's OV circuit "
            "(positive = copies). 'On this text' averages attention on induction targets over the tokens above "
            "that have an earlier occurrence"
            + ("." if an.targets.any() else "; nothing repeats in this text, so it is empty.")
        ),
    )


def _settle_destination(an: TextAnalysis, text: str, link: dict[str, str]) -> str | None:
    """Put this text's destination token in session state (the link's, or the last token that repeats); a warning
    when the link's destination is not a position of the text."""
    n = len(an.tokens)
    has_target = np.flatnonzero(an.targets.any(axis=1))
    default = int(has_target[-1]) if len(has_target) else n - 1
    if widget_state.reset_on(QUERY_KEY, (text, n), default) or st.session_state[QUERY_KEY] not in range(n):
        st.session_state[QUERY_KEY] = default
        widget_state.renew(TEXT_ID_KEY)  # a new destination slider for a new text (destination_views says why)
    if "dest" not in link:  # the link's destination token, once the text (and so its length) is known
        return None
    dest = link.pop("dest").strip()
    if re.fullmatch(r"[0-9]+", dest) and int(dest) < n:
        st.session_state[QUERY_KEY] = int(dest)
        return None
    return f"The link's destination token **{user_text(dest)}** is not a position of this text (0–{n - 1})."


@dataclass(frozen=True)
class HeatmapChoice:
    """Which heads and tokens the heatmaps show: the heatmap controls' values."""

    layer: str  # "all layers" or "layer i"
    window: int
    start: int


def _settle_heatmap_choice(text: str, n: int, n_layers: int, query: int) -> HeatmapChoice:
    """The heatmap controls' values in session state before they are drawn (the heatmaps are built first)."""
    layer = widget_state.settle(LAYER_KEY, _layer_options(n_layers), ALL_LAYERS)
    window = min(widget_state.settle(WINDOW_KEY, WINDOWS, DEFAULT_WINDOW), n)
    if n <= window:
        return HeatmapChoice(layer, window, 0)
    # Default to the window ending at the destination token: that is where the interesting rows are.
    # Also when the slider's state is gone: a widget's state is dropped when another page is drawn.
    ending_at_query = max(0, min(query + 1 - window, n - window))
    widget_state.reset_on(WSTART_KEY, ((text, n), window, query), ending_at_query)
    return HeatmapChoice(layer, window, widget_state.settle(WSTART_KEY, range(n - window + 1), ending_at_query))


def _layer_options(n_layers: int) -> list[str]:
    return [ALL_LAYERS, *[f"layer {i}" for i in range(n_layers)]]


@dataclass(frozen=True)
class TextViews:
    """Everything drawn from one text, built before the first element of the text's views is drawn."""

    text: str
    an: TextAnalysis
    heads: list[Head]
    dest_warning: str | None
    first: DestinationViews  # for the destination token in session state when built
    heatmaps: HeatmapChoice
    shown: list[Head]  # the heads the heatmaps show
    heatmaps_html: str
    scores: str
    sel: state.Selection  # the run and step the views are of
    tokenizer: Tokenizer


def _build_text_views(
    text: str, an: TextAnalysis, sel: state.Selection, tokenizer: Tokenizer, link: dict[str, str]
) -> TextViews:
    n_layers, n_heads = an.patterns.shape[:2]
    heads = all_heads(n_layers, n_heads)
    dest_warning = _settle_destination(an, text, link)
    query = st.session_state[QUERY_KEY]
    choice = _settle_heatmap_choice(text, len(an.tokens), n_layers, query)
    shown = heads if choice.layer == ALL_LAYERS else [h for h in heads if f"layer {h[0]}" == choice.layer]
    heatmaps = heatmaps_html(
        an, shown, choice.start, choice.start + choice.window, present=chrome.presenting(), title=HEATMAPS_TITLE
    )
    first = _destination_views(an, query, heads, tokenizer)
    scores = _scores_html(an, heads, sel.snapshot)
    return TextViews(text, an, heads, dest_warning, first, choice, shown, heatmaps, scores, sel, tokenizer)


def _text_inputs(tokenizer: Tokenizer) -> None:
    c1, c2 = st.columns([1, 3])
    with c1:
        st.selectbox("Preset", [*PRESETS, CUSTOM], key=PRESET_KEY, on_change=_fill_preset, persist_state="session")
    with c2:
        st.text_area(
            "Text (read as UTF-8 bytes: one token per byte)"
            if tokenizer == BYTES
            else f"Text (read with the run's tokenizer, {tokenizer.name})",
            key=TEXT_KEY,
            height=90,
            on_change=_mark_custom,
            persist_state="session",
        )
    chrome.text_cut_note(TEXT_KEY)


def _link_the_text(text: str) -> None:
    """The link says which text this is: the preset's name (editing the text switches the preset to CUSTOM), or
    the text itself when it is short enough."""
    preset_now = st.session_state.get(PRESET_KEY)
    if preset_now in PRESETS:
        state.set_url_params(preset=preset_now, text=None)
    elif len(text) <= URL_TEXT_MAX:
        state.set_url_params(text=text, preset=None)
    else:
        state.set_url_params(text=None, preset=None)
        st.caption(f"This text is over {URL_TEXT_MAX:,} characters: the page's link does not include it.")


def _pick_destination(key: str, n: int) -> None:
    position = picks.picked_number(picks.picked_point(st.session_state.get(key), TOKEN_PICK), "position")
    if isinstance(position, int) and 0 <= position < n:
        st.session_state[QUERY_KEY] = position
        widget_state.renew(PICKS_KEY)


@st.fragment
def destination_views(views: TextViews) -> None:
    """Everything that depends on the destination token alone: moving it reruns only this part of the page."""
    timeline.follow_commit()
    sel, an, n = views.sel, views.an, len(views.an.tokens)
    query = st.session_state[QUERY_KEY]
    shown = views.first if views.first.query == query else _destination_views(an, query, views.heads, views.tokenizer)
    # A new slider for each text, not the same one with a new value: Streamlit's slider applies a value set by the
    # server in an effect after the browser has painted, so the old thumb stayed on screen ~30-50 ms past the rest
    # of the page (the last change of a new text, in a MutationObserver's record).
    slider_key = widget_state.renewed_key(QUERY_SLIDER, TEXT_ID_KEY)
    if st.session_state.get(slider_key) != query:  # a pick in the grid, or the link, moved it
        st.session_state[slider_key] = query
    st.select_slider(
        "Destination token (the one whose attention you see)",
        options=list(range(n)),
        key=slider_key,
        on_change=lambda: st.session_state.__setitem__(QUERY_KEY, st.session_state[slider_key]),
        format_func=lambda i: f"{i} · {an.labels[i]}",
    )
    state.set_url_params(dest=str(query))

    # A key that changes after each pick: a picked token never stays selected in the browser (picking it again
    # after the slider moved would otherwise send nothing). Not one per destination: a new text moves the
    # destination, and a new key makes the browser build the chart anew (~40 ms) instead of swapping its data.
    picker_key = widget_state.renewed_key(TOKEN_PICK_KEY, PICKS_KEY)
    chrome.show_chart(
        shown.picker, key=picker_key, on_select=lambda: _pick_destination(picker_key, n), selection_mode=TOKEN_PICK
    )
    over_training = st.container()  # filled last: the current step's views come first, then the timeline
    left, right = layout.panels("strip", [3, 2], gap="large")
    left.html(shown.strip)
    right.html(shown.prediction)
    chrome.show_chart(shown.loss, width="stretch")
    export_buttons(shown.loss, shown.loss.table, f"per-token loss {sel.run.name} step {sel.step}")
    st.caption(
        "Orange bars: the current token occurred earlier, so an induction head can predict what follows it. "
        "After the phase change these bars drop on repeated text."
    )
    with over_training:
        choice = views.heatmaps
        timeline.text_section(sel, views.text, query, views.heads, choice.start, min(choice.window, n - choice.start))


def _heatmap_section(views: TextViews) -> None:
    st.subheader("Attention heatmaps")
    sel, an, n, choice = views.sel, views.an, len(views.an.tokens), views.heatmaps
    hc1, hc2, hc3 = st.columns([2, 1, 2])
    hc1.radio("Heads", _layer_options(an.patterns.shape[0]), key=LAYER_KEY, horizontal=True, persist_state="session")
    hc2.selectbox("Tokens shown", WINDOWS, key=WINDOW_KEY, persist_state="session")
    if n > choice.window:
        hc3.slider("First token shown", 0, n - choice.window, key=WSTART_KEY)
    else:
        hc3.caption(f"All {n} tokens shown.")
    st.html(views.heatmaps_html)

    def _vector_heatmaps() -> vega.FilledChart:  # the files are the vector chart, built only on a click
        end = choice.start + choice.window
        return text_charts.attention_heatmaps(an, views.shown, choice.start, end, present=chrome.presenting())

    # The heads and tokens shown above; the CSV holds every cell of the vector chart (weights under 0.01 are left out).
    export_buttons(_vector_heatmaps, lambda: _vector_heatmaps().table, f"attention {sel.run.name} step {sel.step}")


def _pair_section(views: TextViews) -> None:
    """One head at two training steps, side by side: before vs after the phase change by default."""
    sel, info = views.sel, views.sel.snapshot
    st.subheader("One head at two steps")
    # Off by default: two more heatmaps on every rerun would slow each interaction down for everyone.
    if not st.toggle(
        "Compare one head at two training steps", key="attn_pair_on", help="Before vs after the phase change."
    ):
        return
    try:
        window_pc = runs.phase_window_of(sel.run.path)
    except ICLError:
        window_pc = None
    by_step = {s.step: s for s in sel.snapshots}
    default_pair = (window_pc.start_step, window_pc.end_step) if window_pc else (sel.steps[0], sel.step)
    best = best_induction_head(info)
    names = [head_name(h) for h in views.heads]
    # Defaults follow the run: a value the current run lacks (another run, another model) is reset.
    widget_state.settle("attn_pair_head", names, head_name(best) if best else names[-1])
    widget_state.settle("attn_pair_a", sel.steps, default_pair[0])
    widget_state.settle("attn_pair_b", sel.steps, default_pair[1])
    pick_cols = st.columns([1, 2, 2])
    head_pick = pick_cols[0].selectbox("Head", names, key="attn_pair_head")
    step_a = pick_cols[1].select_slider("Earlier step", sel.steps, key="attn_pair_a", format_func=lambda v: f"{v:,}")
    step_b = pick_cols[2].select_slider("Later step", sel.steps, key="attn_pair_b", format_func=lambda v: f"{v:,}")
    pair_head = views.heads[names.index(head_pick)]
    start, end = views.heatmaps.start, views.heatmaps.start + views.heatmaps.window
    for col, pair_step in zip(layout.panels("pair", 2), (step_a, step_b), strict=True):
        with col:
            try:
                _, other = analyses.text_analysis(by_step[pair_step], views.text)
            except ICLError as exc:
                st.error(f"Cannot use step {pair_step:,}: {user_text(exc, 300)}")
                continue
            tokens_seen = fmt_tokens(by_step[pair_step].tokens_seen)
            status = f" · {phase_status(window_pc, pair_step)}" if window_pc else ""
            st.markdown(f"**Step {pair_step:,}** ({tokens_seen} tokens seen){status}")
            st.html(heatmaps_html(other, [pair_head], start, end, present=chrome.presenting()))


@st.fragment
def text_views(sel: state.Selection, tokenizer: Tokenizer, link: dict[str, str]) -> None:
    """The text and everything drawn from it: a new text reruns only this part of the page, not the sidebar.
    Built first, then drawn (ui/widget_state.py)."""
    text = st.session_state.get(TEXT_KEY, "")  # the text area below shows and returns this value
    try:
        computed: tuple[TextInput, TextAnalysis] | ICLError = analyses.text_analysis(sel.snapshot, text)
    except ICLError as exc:  # shown under the text area (chrome.from_text)
        computed = exc
    analysis = None if isinstance(computed, ICLError) else computed[1]
    drawable = analysis is not None and len(analysis.tokens) >= 2  # a text with a token to look at
    views = _build_text_views(text, analysis, sel, tokenizer, link) if analysis is not None and drawable else None

    _text_inputs(tokenizer)
    _link_the_text(text)

    def _analysis() -> tuple[TextInput, TextAnalysis]:
        if isinstance(computed, ICLError):
            raise computed
        return computed

    chrome.from_text(_analysis)  # a bad text's message (and the end of the fragment), or the text's notes
    if views is None:
        st.info("Type at least one more character: with only the start token there is nothing to attend to.")
        st.stop()
    if views.dest_warning:
        st.warning(views.dest_warning)
    destination_views(views)
    _heatmap_section(views)
    _pair_section(views)
    st.html(views.scores)


text_views(sel, tokenizer, link)
