"""Linked views: a click on a chart point selects its run and step for every page (state.select)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from ui.state import RUN_VALUE, STEP_VALUE, select


def picked_point(state: Any, param: str) -> Mapping[str, Any] | None:
    """The last point a chart's selection parameter `param` picked (its fields), or None."""
    if not isinstance(state, Mapping):
        return None
    selection = state.get("selection")
    picked = selection.get(param) if isinstance(selection, Mapping) else None
    if isinstance(picked, Mapping):  # a point selection without fields comes as a dict of lists
        picked = [picked]
    if not isinstance(picked, (list, tuple)) or not picked:
        return None
    point = picked[-1]
    return point if isinstance(point, Mapping) else None


def picked_number(point: Mapping[str, Any] | None, field: str) -> int | float | None:
    """The number a picked point carries in `field` (the last one, for a list), or None if it carries none."""
    value = point.get(field) if point is not None else None
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN
        return None
    return value


def chart_pick(state: Any, param: str, run: str | None = None) -> tuple[str | None, int] | None:
    """(run, step) of the point a chart's selection parameter `param` picked, or None (nothing picked).

    `state` is what st.altair_chart(..., on_select=..., key=k) keeps in st.session_state[k]:
    {"selection": {param: [{"run": ..., "step": ...}, ...]}} for a point selection over those fields.
    The chart's own `run` field wins over `run` (the run the chart is about); the last picked point wins.
    """
    point = picked_point(state, param)
    step = picked_number(point, "step")
    if step is None:
        return None
    picked_run = point.get("run", run) if point is not None else run
    return (str(picked_run) if picked_run is not None else None), int(step)


def apply_chart_pick(key: str, param: str, run: str | None = None) -> None:
    """on_select callback of a chart drawn with `key`: its picked point becomes the shared run/step."""
    picked = chart_pick(st.session_state.get(key), param, run)
    if picked is not None:
        select(*picked)


def selection_key(base: str) -> str:
    """A chart key that changes with the shared selection, so a picked point never stays selected in the browser.

    (Picking the same point again after the slider moved would otherwise send no event.)
    """
    return f"{base}_{st.session_state.get(RUN_VALUE)}_{st.session_state.get(STEP_VALUE)}"
