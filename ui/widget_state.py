"""Widgets whose values a page sets or reads before they are drawn: the two rendering tricks the pages use, named
once here (why they are needed, measured: ARCHITECTURE.md, "Two rendering tricks").

1. Build, then draw (`Prebuilt`): a page builds every view from the widgets' values in session state before it
   draws its first element, then draws the widgets and the views together.
2. Widgets the server moves (`settle`, `reset_on`, `keep_only`, `renewed_key`): a value the page changes itself
   (a new run without the old choice, a link, a click in a chart) is written to session state before its widget
   is drawn; a widget that would otherwise paint a stale value is drawn under a new key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from typing import Any, Generic, TypeVar

import streamlit as st

K = TypeVar("K")
V = TypeVar("V")


class Prebuilt(Generic[K, V]):
    """Views built before the widgets they depend on are drawn, from `inputs` (the widgets' values as session
    state holds them), and rebuilt only if the drawn widgets return something else (not expected)."""

    def __init__(self, build: Callable[[K], V], inputs: K) -> None:
        self._build, self._inputs = build, inputs
        self.views = build(inputs)

    def as_drawn(self, inputs: K) -> V:
        """The views for what the widgets returned once drawn."""
        if inputs != self._inputs:
            self._inputs, self.views = inputs, self._build(inputs)
        return self.views


def settle(key: str, options: Collection[Any], default: Any) -> Any:
    """The widget `key`'s value, reset to `default` when it is not one of `options` (another run's head, a step the
    run lacks, a value left by another page); call before the widget is drawn."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    return st.session_state[key]


def keep_only(key: str, options: Collection[Any], default: list[Any] | None = None) -> list[Any]:
    """A multi-select's values without those no longer among `options` (another run's); `default` (filtered
    alike) when it has none yet."""
    values = st.session_state.get(key)
    if values is None and default is None:
        return []
    kept = [v for v in (values if values is not None else default or []) if v in options]
    if kept != values:
        st.session_state[key] = kept
    return kept


def reset_on(key: str, signature: Hashable, value: Any) -> bool:
    """Set widget `key` to `value` once per new `signature` (a new text, another head), leaving what the person
    chose since alone; True when it was reset."""
    seen = f"_reset_on_{key}"
    if st.session_state.get(seen) == signature and key in st.session_state:
        return False
    st.session_state[key], st.session_state[seen] = value, signature
    return True


def renewed_key(base: str, counter: str) -> str:
    """A widget key that changes each time `renew(counter)` is called: the widget is drawn anew, not updated."""
    return f"{base}_{st.session_state.get(counter, 0)}"


def renew(counter: str) -> None:
    st.session_state[counter] = st.session_state.get(counter, 0) + 1
