"""Figures and tables as files: PNG and SVG of Altair charts (vl-convert, no browser), CSV of tables."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pandas as pd
import vl_convert as vlc


class HasSpec(Protocol):
    """An Altair chart, or anything else that gives its Vega-Lite spec the same way (ui.vega.FilledChart)."""

    def to_dict(self) -> dict[str, Any]: ...


def chart_spec(chart: HasSpec | Mapping[str, Any]) -> dict[str, Any]:
    """The Vega-Lite spec (a dict) of an Altair chart; a dict spec is passed through."""
    if isinstance(chart, Mapping):
        return dict(chart)
    return chart.to_dict()


def _vl_version(spec: Mapping[str, Any]) -> str | None:
    # Render with the Vega-Lite the spec was written for when vl-convert bundles it ("v6.4.1" -> "6.4"),
    # else vl-convert's newest.
    schema = str(spec.get("$schema", ""))
    marker = "/vega-lite/v"
    if marker not in schema:
        return None
    parts = schema.split(marker, 1)[1].split(".json", 1)[0].split(".")
    wanted = ".".join(parts[:2])
    return wanted if wanted in vlc.get_vegalite_versions() else None


def chart_to_png(chart: HasSpec | Mapping[str, Any], scale: float = 2.0) -> bytes:
    """PNG image bytes; scale 2 gives a sharp image on high-density screens and in slides."""
    spec = chart_spec(chart)
    return vlc.vegalite_to_png(spec, vl_version=_vl_version(spec), scale=scale)


def chart_to_svg(chart: HasSpec | Mapping[str, Any]) -> str:
    """SVG text; labels and the title stay <text> elements, so they remain searchable and editable."""
    spec = chart_spec(chart)
    return vlc.vegalite_to_svg(spec, vl_version=_vl_version(spec))


def table_to_csv(table: pd.DataFrame | Sequence[Mapping[str, Any]]) -> bytes:
    """UTF-8 CSV bytes of a DataFrame or a list of records (columns in first-seen order, no index)."""
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame.from_records(list(table))
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")
