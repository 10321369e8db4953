"""Download buttons under a chart: PNG and SVG of the figure (vl-convert, icl_core.export) and CSV of its data.

The bytes are built lazily: st.download_button takes a callable (checked on streamlit 1.67), which Streamlit runs on
its own thread only when the button is clicked, so drawing a page renders no image. The builders below are
plain functions (no st.* calls, safe on that thread) with a small LRU cache keyed on the chart's spec JSON,
so clicking twice, or PNG after SVG of the same chart, does not convert again.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeAlias

import altair as alt
import pandas as pd
import streamlit as st

from icl_core import export as core_export

EXPORT_WIDTH = 640  # charts drawn with width="stretch" have no width of their own; give the file a sensible one

Table: TypeAlias = pd.DataFrame | Sequence[Mapping[str, Any]]
Chartish: TypeAlias = core_export.HasSpec | Mapping[str, Any]  # an Altair chart, a FilledChart, a spec
Deferred = Callable[[], Any]  # built only when its button is clicked (a chart or table too slow for every rerun)

SHOW_VALUE = "_download_buttons"  # session key: the sidebar's "Download buttons" toggle (ui/state)
_lock = threading.Lock()  # vl-convert calls from several click threads: one conversion at a time on 2 cores


def export_spec(chart: Chartish) -> dict[str, Any]:
    """The chart's Vega-Lite spec with a fixed width where it has none (single or layered charts only)."""
    spec = core_export.chart_spec(chart)
    compound = any(k in spec for k in ("facet", "hconcat", "vconcat", "concat", "repeat"))
    if not compound and "width" not in spec:
        spec = {**spec, "width": EXPORT_WIDTH}
    return spec


def _spec_json(chart: Chartish) -> str:
    return json.dumps(export_spec(chart), sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _png(spec_json: str) -> bytes:
    with _lock:
        return core_export.chart_to_png(json.loads(spec_json))


@lru_cache(maxsize=16)
def _svg(spec_json: str) -> bytes:
    with _lock:
        return core_export.chart_to_svg(json.loads(spec_json)).encode("utf-8")


def png_bytes(chart: Chartish) -> bytes:
    """PNG image of the chart (scale 2)."""
    return _png(_spec_json(chart))


def svg_bytes(chart: Chartish) -> bytes:
    """SVG of the chart, UTF-8; titles and labels stay text."""
    return _svg(_spec_json(chart))


def csv_bytes(data: Table) -> bytes:
    """CSV of the chart's data (a DataFrame or a list of records)."""
    return core_export.table_to_csv(data)


def file_stem(name: str) -> str:
    """A safe file name (and key part) from a chart name: 'K-composition (L1H0)' -> 'k-composition_l1h0'."""
    stem = re.sub(r"[^a-z0-9._-]+", "_", name.strip().lower()).strip("_")
    return stem or "chart"


def showing() -> bool:
    """Whether the visitor turned the download buttons on (sidebar)."""
    return bool(st.session_state.get(SHOW_VALUE))


def export_buttons(
    chart: Chartish | Deferred | None, data: Table | Deferred | None, name: str, key_prefix: str = "export"
) -> None:
    """PNG, SVG (when there is a chart) and CSV (when there is data) download buttons in one row.

    `name` gives the file names and the widget keys, so it must be unique on the page. A callable chart or
    data is called only when its button is clicked. Drawn only when the sidebar's "Download buttons" is on.
    """
    if not showing():
        return

    def built(thing: Any) -> Any:
        return thing() if callable(thing) and not isinstance(thing, alt.TopLevelMixin) else thing

    stem = file_stem(name)
    row = st.container(horizontal=True, gap="small")
    # (label, builder, mime, icon, help): bytes are built only when a button is clicked.
    buttons = []
    if chart is not None:
        buttons += [
            (
                "PNG",
                lambda: png_bytes(built(chart)),
                "image/png",
                ":material/image:",
                "The figure as a PNG image (2x resolution).",
            ),
            (
                "SVG",
                lambda: svg_bytes(built(chart)),
                "image/svg+xml",
                ":material/draw:",
                "The figure as an SVG (vector; titles and labels stay editable text).",
            ),
        ]
    if data is not None:
        buttons.append(
            (
                "CSV",
                lambda: csv_bytes(built(data)),
                "text/csv",
                ":material/table:",
                "The numbers behind the figure as a CSV table.",
            )
        )
    for label, build, mime, icon, help_text in buttons:
        ext = label.lower()
        row.download_button(
            label,
            build,
            file_name=f"{stem}.{ext}",
            mime=mime,
            key=f"{key_prefix}_{stem}_{ext}",
            icon=icon,
            on_click="ignore",
            help=help_text,
        )
