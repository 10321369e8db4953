"""Page layout that holds at a projector's width: panels that stack instead of squashing, rows that wrap.

Streamlit's columns keep their share of the width down to a 640 px window and stack only below it. At 1024 px
(a classroom projector) with the sidebar open, a page's two chart columns were ~270 px each: legends took the
plot's room, titles and metric values were cut with an ellipsis, and a facet chart ran past the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

PANEL_MIN_REM = 21  # a chart with a legend on its right stays readable down to this width (336 px)
_PANELS = "panels-"  # prefix of a panel row's container key; Streamlit gives the container the class st-key-<key>

# One style for every page (ui/nav draws it): the side margins shrink on mid-sized windows, and the columns of
# a panel row wrap onto new lines, each at least PANEL_MIN_REM wide, when the row has no room for them.
PAGE_CSS = f"""<style>
@media (max-width: 1279px) {{
  [data-testid="stMainBlockContainer"] {{ padding-left: 1.5rem; padding-right: 1.5rem; }}
}}
[class*="st-key-{_PANELS}"] [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap; row-gap: 1.5rem; }}
[class*="st-key-{_PANELS}"] [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
  min-width: min(100%, {PANEL_MIN_REM}rem);
}}
</style>"""


PRESENTER_PANEL_MIN_REM = 30  # presenter mode's larger type: a legend of head names takes twice the room

# Added to the page's style in presenter mode (ui/state): at 1280 px its chart pairs had ~120 px plots.
PRESENTER_CSS = f"""<style>
[class*="st-key-{_PANELS}"] [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
  min-width: min(100%, {PRESENTER_PANEL_MIN_REM}rem);
}}
</style>"""


def panels(name: str, spec: int | Sequence[float], **kwargs: Any) -> list[DeltaGenerator]:
    """st.columns(spec) whose columns stack when the page is too narrow for each to get PANEL_MIN_REM.

    `name`: unique on the page and the same on every rerun (the container's key: a new key would make the
    browser rebuild everything inside, charts included)."""
    with st.container(key=f"{_PANELS}{name}"):
        return st.columns(spec, **kwargs)


def wrapping_row(**kwargs: Any) -> DeltaGenerator:
    """A horizontal row whose elements wrap onto a new line rather than being cut: give them width="content"."""
    return st.container(horizontal=True, wrap=True, gap="medium", **kwargs)
