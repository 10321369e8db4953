"""What every page wears: presenter mode (large type for a projector) and the download-buttons toggle in the
sidebar, charts drawn readable on both themes, and a bad text's message instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from icl_core.analysis.text import MAX_TEXT_CHARS, TextInput
from icl_core.errors import ICLError, InputTextError
from ui import export, layout, vega
from ui.quote import user_text

PRESENT_VALUE, PRESENT_WIDGET = "_presenting", "presenter_mode"
DOWNLOADS_WIDGET = "download_buttons"  # the sidebar toggle; its value lives in export.SHOW_VALUE


Result = TypeVar("Result")


def from_text(compute: Callable[[], tuple[TextInput, Result]]) -> Result:
    """`compute()`'s result for the visitor's text, its notes (truncation, multi-byte characters) shown as warnings.
    A bad text or an unusable snapshot is shown as an error, and the page (or fragment) ends there."""
    try:
        prepared, result = compute()
    except InputTextError as exc:
        st.error(user_text(exc, 500))
        st.stop()
    except ICLError as exc:
        st.error(f"Cannot use this snapshot: {user_text(exc, 500)}")
        st.stop()
    for warning in prepared.notes:
        st.warning(warning)
    return result


_CUT = "_cut_text_{}"  # what a text box's last change was cut from, until the message is shown


def cut_to_limit(key: str) -> None:
    """A text box's on_change: text over MAX_TEXT_CHARS (a paste) is cut to it, and the box says so (text_cut_note).
    The browser's own limit (max_chars) refused an over-long paste whole, without a word."""
    text = st.session_state.get(key)
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        st.session_state[key] = text[:MAX_TEXT_CHARS]
        st.session_state[_CUT.format(key)] = len(text)


def text_cut_note(key: str) -> None:
    """The message for a text cut by cut_to_limit, once, where the page calls it (under its text box)."""
    length = st.session_state.pop(_CUT.format(key), None)
    if length:
        st.warning(f"The text was {length:,} characters long: only the first {MAX_TEXT_CHARS:,} are kept.")


def presenting() -> bool:
    """Presenter mode: large type, every token labelled, short captions (a toggle, or ?present=1 in the link)."""
    return bool(st.session_state.get(PRESENT_VALUE))


# Presenter mode's page style: everything larger for the back row, the explanatory captions hidden (the
# presenter says them), the token strips and tables bigger.
PRESENTER_CSS = """<style>
[data-testid="stMain"] { font-size: 1.25rem; }
[data-testid="stMain"] p, [data-testid="stMain"] li, [data-testid="stMain"] label { font-size: 1.25rem !important; }
[data-testid="stMain"] [data-testid="stCaptionContainer"], [data-testid="stMain"] .icl-note { display: none; }
[data-testid="stMain"] .attn-view { font-size: 22px !important; }
[data-testid="stMetricValue"], [data-testid="stMain"] [data-testid="stMetricValue"] p { font-size: 3rem !important; }
</style>"""


def _sidebar_toggle(label: str, widget: str, value: str, help_text: str) -> None:
    """A sidebar toggle whose value lives in the plain session key `value`: widget state is dropped whenever a
    widget is not drawn in a run, and each page's run draws the sidebar anew."""
    st.session_state[widget] = bool(st.session_state.get(value))
    st.sidebar.toggle(
        label,
        key=widget,
        on_change=lambda: st.session_state.__setitem__(value, st.session_state[widget]),
        help=help_text,
    )


def downloads_toggle() -> None:
    # Off by default: six download buttons took ~30 ms of the browser's JavaScript on every Attention page
    # interaction (Chrome's timeline, 2 cores), a tenth of it.
    _sidebar_toggle(
        "Download buttons",
        DOWNLOADS_WIDGET,
        export.SHOW_VALUE,
        "PNG, SVG and CSV buttons under every figure and table of data. Off, pages redraw faster.",
    )


def presenter_toggle() -> None:
    _sidebar_toggle(
        "Presenter mode",
        PRESENT_WIDGET,
        PRESENT_VALUE,
        "Large type and labels for a projector; the link gets ?present=1.",
    )
    if presenting():
        st.html(PRESENTER_CSS + layout.PRESENTER_CSS)


def memo_chart(build: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The finished spec of the chart build(*args, **kwargs) makes, in the current presenter mode, built once per
    distinct inputs (vega.memo_spec says why); show_chart and the export buttons take it as they take a chart."""
    return vega.memo_spec(presenting(), build, *args, **kwargs)


def show_chart(chart: Any, **kwargs: Any) -> Any:
    """The chart as st.altair_chart draws it (vega.vega_lite_spec: its spec, minus Altair's schema check), readable
    on light and dark themes, with presenter mode's large type when it is on."""
    if isinstance(chart, vega.FilledChart):  # finished when its layout was built
        return st.vega_lite_chart(chart.spec(), **kwargs)
    if isinstance(chart, dict):  # a spec built and cached already (memo_chart)
        return st.vega_lite_chart(chart, **kwargs)
    return st.vega_lite_chart(vega.vega_lite_spec(vega.finish(chart, presenting())), **kwargs)
