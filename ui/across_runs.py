"""The Phase change page's section with every run on one token axis (icl_core/analysis/across_runs.py). A section
takes its inputs as arguments (the page composes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import altair as alt
import pandas as pd
import streamlit as st

from icl_core.analysis.across_runs import RunSeries, across_runs_rows
from icl_core.model.config import ICL_FORMULA
from ui import chrome
from ui.theme import RUN_SCALE, legend

UNITS_NOTE = (
    f"Each run's ICL score ({ICL_FORMULA}) in its own tokens, on the Python standard library's held-out source. "
    "Our runs read bytes; imported runs read BPE tokens of ~4 bytes each, so their 500 tokens span ~4× more text "
    "and their tokens seen count a larger unit. The curves share an axis, not a unit: compare where each falls "
    "against its own window (shaded in its colour), not the heights or the token counts across units."
)


def across_runs_chart(points: list[dict[str, Any]], windows: list[dict[str, Any]]) -> alt.LayerChart:
    data = pd.DataFrame(points)
    color = alt.Color("run:N", title=None, scale=RUN_SCALE, legend=legend(1 + (data["run"].nunique() - 1) // 4))
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens seen, each run in its own unit (log scale)")
    y = alt.Y("icl_score:Q", title="ICL score (nats)", scale=alt.Scale(zero=False))
    tips = ["run", "unit", alt.Tooltip("tokens:Q", format=","), alt.Tooltip("icl_score:Q", format="+.3f")]
    layers: list[alt.Chart] = []
    if windows:
        layers.append(
            alt.Chart(pd.DataFrame(windows)).mark_rect(opacity=0.12).encode(x="start:Q", x2="end:Q", color=color)
        )
    layers.append(alt.Chart(data).mark_line(strokeWidth=1.8).encode(x=x, y=y, color=color, tooltip=tips))
    chart = alt.layer(*layers).properties(
        title=alt.TitleParams(
            "Every run, one token axis", subtitle=f"{ICL_FORMULA} in each run's own tokens · shaded: its window"
        ),
        height=260,
    )
    return cast(alt.LayerChart, chart)


def draw_across_runs(runs: Sequence[RunSeries]) -> None:
    """The chart of every run with an ICL score, or a note where fewer than two have one."""
    points, windows = across_runs_rows(runs)
    if len({p["run"] for p in points}) < 2:
        st.info("Fewer than two runs here have an ICL score: there is nothing to set side by side.")
        return
    chrome.show_chart(chrome.memo_chart(across_runs_chart, points, windows), width="stretch")
    st.caption(UNITS_NOTE)
