"""Analyses that cost seconds to minutes of server CPU (every head ablated, every snapshot scored) on a run that
carries no precomputed results: behind a button that states the measured cost, then run with a progress bar,
one at a time on a shared server (icl_core.server_policy.heavy_work), the result kept for every visitor.

A visitor's click is remembered per `scope` (a run, an analysis and a mode), so sliding to another step of the
same run computes its table at once instead of asking again. Results live here, not in st.cache_data: the
progress bar is drawn while the analysis runs, and st.cache_data would record those drawing calls and replay
them on a later hit, where the bar no longer exists.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import streamlit as st

from icl_core.analysis.costs import say_seconds
from icl_core.server_policy import heavy_work, heavy_work_busy

T = TypeVar("T")
Progress = Callable[[int, int], None]

ASKED_KEY = "_costly_asked"  # session state: the scopes this visitor asked to compute
BUTTON_FROM_S = 1.0  # cheaper analyses run without asking (the shipped models' phase attribution, ~0.6 s)
MAX_RESULTS = 32  # results kept for every visitor (an ablation table is a few kB, over-training rows ~1 MB)

_results: OrderedDict[Hashable, object] = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True)
class CostlyAnalysis(Generic[T]):
    key: Hashable  # the result's identity on this server (run signature, step, mode, ...)
    scope: Hashable  # what one click allows: e.g. every step of this run in this mode
    what: str  # "Ablate every head at this step", shown on the button and the progress bar
    seconds: float  # icl_core.analysis.costs' estimate
    compute: Callable[[Progress], T]
    stored: tuple[bool, T | None] = (False, None)  # (found, value): precomputed beside the run, instant


def known(key: Hashable) -> bool:
    with _lock:
        return key in _results


def _get(key: Hashable) -> tuple[bool, object]:
    with _lock:
        if key not in _results:
            return False, None
        _results.move_to_end(key)
        return True, _results[key]


def _put(key: Hashable, value: object) -> None:
    with _lock:
        _results[key] = value
        _results.move_to_end(key)
        while len(_results) > MAX_RESULTS:
            _results.popitem(last=False)


def _asked() -> set[Hashable]:
    return st.session_state.setdefault(ASKED_KEY, set())


def compute_now(analysis: CostlyAnalysis[T]) -> T:
    """The result: from this server's store, else computed here with a progress bar (errors propagate, nothing
    is stored for them)."""
    found, value = _get(analysis.key)
    if found:
        return value  # type: ignore[return-value]
    bar = st.progress(0.0, text=f"{analysis.what}: starting ({say_seconds(analysis.seconds)})…")
    if heavy_work_busy():
        bar.progress(0.0, text="Waiting: another visitor's analysis runs first (one at a time on this server)…")
    try:
        with heavy_work():
            found, value = _get(analysis.key)  # another session may have computed it while this one waited
            if not found:

                def progress(done: int, total: int) -> None:
                    bar.progress(done / max(total, 1), text=f"{analysis.what}: {done} of {total}")

                value = analysis.compute(progress)
                _put(analysis.key, value)
    finally:
        bar.empty()
    return value  # type: ignore[return-value]


def costly_result(analysis: CostlyAnalysis[T], button_key: str) -> T | None:
    """The result when this server has it or the visitor asked for it; otherwise a button stating the cost, and
    None. The click is handled by a callback, so its own rerun already computes."""
    found, value = analysis.stored
    if found:
        return value
    if known(analysis.key) or analysis.scope in _asked() or analysis.seconds < BUTTON_FROM_S:
        return compute_now(analysis)
    st.button(
        f"{analysis.what} ({say_seconds(analysis.seconds)} of server CPU)",
        key=button_key,
        on_click=_asked().add,
        args=(analysis.scope,),
        help="Measured cost on two idle CPU cores (benchmarks/analysis_cost.py); longer while other visitors' "
        "analyses run: they run one at a time on a shared server. The result is then kept for every visitor.",
    )
    return None
