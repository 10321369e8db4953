"""Colours, palettes and shared marks of every chart and HTML view: one place for each (the attention blue,
the induction orange, the run and head palettes)."""

from __future__ import annotations

from typing import Final

import altair as alt

from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN

ICL_MARKS = (ICL_EARLY_TOKEN, ICL_LATE_TOKEN)  # the ICL score's tokens, marked on every loss curve

# Attention is blue everywhere: Vega's "blues" scheme in the vector charts, its stops (vega-scale, interpolated
# linearly in RGB) in the heatmap PNGs, and its dark end for the token strips and table bars.
ATTN_SCHEME: Final = "blues"
BLUES = "cfe1f2 bed8ec a8cee5 8fc1de 74b2d7 5ba3cf 4592c6 3181bd 206fb2 125ca4 0a4a90".split()
STRIP_RGB = tuple(int(BLUES[-3][i : i + 2], 16) for i in (0, 2, 4))  # full weight, blended over white below it
MIN_ATTENTION = 0.01  # attention weights under this are left out of the vector heatmaps (drawn faint in the PNGs)

TARGET_COLOR = "#e4572e"  # induction targets and induction heads, everywhere in the app
OTHER_COLOR = "#8c8c8c"
DIVERGING: Final = "blueorange"
SELECT_COLOR = "#d62728"  # the selected step's rule
WINDOW_COLOR = "#f2a541"  # the phase-change window
ONSET_COLOR = "#7b3294"  # the induction onset's dashed rule
EARLY_STAGE_COLOR = "#9e9e9e"  # the early stage (icl_core.analysis.phase.early_stage_end)
SE_BAND_COLOR = "#0072B2"  # the ±2 standard error band around a single-run metric
SUBTITLE_COLOR = "#8a8a8a"  # mid grey: readable on Streamlit's light and dark themes alike

# One categorical palette for runs (Okabe-Ito: tells colours apart for colour-blind viewers, on light and
# dark backgrounds) and one for heads, used by every chart.
RUN_SCALE = alt.Scale(range=["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"])
HEAD_SCALE = alt.Scale(scheme="tableau20")


def legend(columns: int = 1) -> alt.Legend:
    """Every entry shown: Vega cuts a legend that is taller than its chart, so long ones go in columns."""
    return alt.Legend(columns=columns, symbolLimit=0, labelLimit=240)
