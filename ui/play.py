"""Play: the shared step animating through a run's snapshots, one every PLAY_INTERVAL_S, for a class to watch."""

from __future__ import annotations

import time

import streamlit as st

from ui.state import STEP_VALUE, set_step

PLAY_KEY = "_playing"  # the step is animating through the snapshots
LAST_ADVANCE_KEY = "_play_last_advance"
PLAY_INTERVAL_S = 1.5  # seconds per snapshot: time for a teacher to say what changed


def next_step(steps: list[int], step: int) -> int | None:
    """The snapshot after `step`, or None at the last one."""
    later = [s for s in steps if s > step]
    return later[0] if later else None


def _toggle_play(steps: list[int]) -> None:
    playing = not st.session_state.get(PLAY_KEY, False)
    st.session_state[PLAY_KEY] = playing
    st.session_state.pop(LAST_ADVANCE_KEY, None)
    if playing and next_step(steps, st.session_state.get(STEP_VALUE, steps[-1])) is None:
        set_step(steps[0])  # at the end: play from the start


def play_button(steps: list[int], key: str) -> None:
    """▶ Play / ⏸ Pause: animates the shared step through the snapshots, every page's views following it."""
    playing = bool(st.session_state.get(PLAY_KEY))
    st.button(
        "⏸ Pause" if playing else "▶ Play",
        key=key,
        on_click=_toggle_play,
        args=(steps,),
        help=f"Step through the snapshots, one every {PLAY_INTERVAL_S:g} s.",
    )
    if playing:
        _advance(steps)


@st.fragment(run_every=PLAY_INTERVAL_S)
def _advance(steps: list[int]) -> None:
    # Runs once inside every full run, then on its timer: only a timer run (or the first after Play) moves on.
    if not st.session_state.get(PLAY_KEY):
        return
    last = st.session_state.get(LAST_ADVANCE_KEY)
    now = time.monotonic()
    if last is not None and now - last < PLAY_INTERVAL_S * 0.8:
        return
    st.session_state[LAST_ADVANCE_KEY] = now
    nxt = next_step(steps, st.session_state.get(STEP_VALUE, steps[-1]))
    if nxt is None:
        st.session_state[PLAY_KEY] = False
    else:
        set_step(nxt)
    st.rerun(scope="app")
