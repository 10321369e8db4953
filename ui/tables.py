"""Small tables as plain HTML: the interactive pages' tables, drawn in a few milliseconds.

st.dataframe's grid takes ~300 ms of the browser's time to redraw on a 2-core machine (it was the last thing
to settle after a step change on the Attention page); these tables have at most a few dozen rows, are read,
not sorted, and must wrap instead of cutting a column ("top source", on a projector). Colours are
translucent, so the same table reads on Streamlit's light and dark themes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ui.theme import STRIP_RGB

BAR_RGB = ", ".join(map(str, STRIP_RGB))  # the token strips' blue
CSS = (
    "<style>.icl-table-box{overflow:auto}"
    ".icl-table{border-collapse:collapse;font-size:0.9rem;font-variant-numeric:tabular-nums;width:100%}"
    ".icl-table th{text-align:left;font-weight:600;padding:4px 8px;border-bottom:2px solid rgba(128,128,128,.45);"
    "position:sticky;top:0;background:var(--icl-table-head, rgba(128,128,128,.12));backdrop-filter:blur(6px)}"
    ".icl-table td{padding:3px 8px;border-bottom:1px solid rgba(128,128,128,.25);vertical-align:top}"
    ".icl-table td.num{text-align:right;white-space:nowrap}"
    ".icl-table td.bar{white-space:nowrap;min-width:6em}"
    ".icl-table tr.mark td{font-weight:600}</style>"
)


@dataclass(frozen=True)
class Bar:
    """A number drawn over a bar filling its cell from `low` to `high` (ProgressColumn's look)."""

    fmt: str = ".2f"
    low: float = 0.0
    high: float = 1.0


def _cell(value: object, column: str, bars: Mapping[str, Bar], formats: Mapping[str, str]) -> str:
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalars as Python's: np.bool_ is no bool, np.float32 no float
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    if isinstance(value, bool):
        return f"<td>{'✓' if value else ''}</td>"
    if column in bars and isinstance(value, int | float):
        bar = bars[column]
        share = min(1.0, max(0.0, (float(value) - bar.low) / ((bar.high - bar.low) or 1.0)))
        fill = (
            f"background:linear-gradient(90deg,rgba({BAR_RGB},.45) {100 * share:.1f}%,"
            f"rgba(128,128,128,.10) {100 * share:.1f}%)"
        )
        return f'<td class="bar" style="{fill}">{format(float(value), bar.fmt)}</td>'
    if column in formats and isinstance(value, int | float):
        return f'<td class="num">{format(value, formats[column])}</td>'
    if isinstance(value, int | float):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def html_table(
    df: pd.DataFrame,
    bars: Mapping[str, Bar] | None = None,
    formats: Mapping[str, str] | None = None,
    marked: pd.Series | None = None,
    max_height: int | None = None,
) -> str:
    """The frame as an HTML table (index left out). `bars`: columns drawn as bars; `formats`: format specs of
    numeric columns; `marked`: rows set in bold; `max_height`: px, the table scrolls under its header."""
    bars, formats = bars or {}, formats or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    flags = [False] * len(df) if marked is None else [bool(m) for m in marked]
    for flag, record in zip(flags, df.itertuples(index=False, name=None), strict=True):
        cells = "".join(_cell(v, c, bars, formats) for c, v in zip(df.columns, record, strict=True))
        mark = ' class="mark"' if flag else ""
        rows.append(f"<tr{mark}>{cells}</tr>")
    style = f' style="max-height:{max_height}px"' if max_height else ""
    return (
        f'{CSS}<div class="icl-table-box"{style}><table class="icl-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
