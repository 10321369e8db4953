"""The run + step picker in the sidebar, shared by every page through st.session_state.

app.py calls sidebar_picker() before running the page; pages call require_selection() to get the
current run, its snapshots and the chosen step (or stop with a friendly message).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from icl_core import explore
from icl_core.errors import ICLError
from icl_core.runs import RunRef, discover_runs
from icl_core.snapshots import SnapshotInfo, read_run_config
from ui import compute

RUN_KEY = "run"
STEP_KEY = "step"
SELECTION_KEY = "_selection"
RUN_VALUE = "_run_value"
STEP_VALUE = "_step_value"
PENDING_RUN_KEY = "_pending_run_path"  # set by the Models page after a download; applied before the picker renders


@dataclass(frozen=True)
class Selection:
    run: RunRef
    snapshots: tuple[SnapshotInfo, ...]
    step: int

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snapshots]

    @property
    def snapshot(self) -> SnapshotInfo:
        return next(s for s in self.snapshots if s.step == self.step)

    @property
    def index(self) -> int:
        return self.steps.index(self.step)


def list_runs() -> list[RunRef]:
    """Shipped, trained and downloaded runs, plus folders named in ICL_EXTRA_RUNS_DIRS."""
    return discover_runs(extra=explore.extra_run_refs())


def _default_run(runs: list[RunRef]) -> RunRef:
    # The plain 2-layer run shows every phenomenon, so a class sees it first.
    for ref in runs:
        try:
            cfg = read_run_config(ref.path)
        except ICLError:
            continue
        if ref.source == "shipped" and cfg.model.n_layers == 2 and not cfg.model.smeared_keys:
            return ref
    return runs[0]


def request_run(path: Path) -> None:
    """Select the run at `path` on the next rerun (a widget's value cannot change once it is drawn)."""
    st.session_state[PENDING_RUN_KEY] = str(Path(path).resolve())


def _apply_pending(runs: list[RunRef]) -> None:
    pending = st.session_state.pop(PENDING_RUN_KEY, None)
    if pending:
        for ref in runs:
            if str(ref.path.resolve()) == pending:
                st.session_state[RUN_VALUE] = ref.name
                st.session_state.pop(STEP_VALUE, None)


def set_step(step: int) -> None:
    """Change the shared step (call from a widget callback: the sidebar slider follows on this rerun)."""
    st.session_state[STEP_VALUE] = int(step)


def _remember_run() -> None:
    st.session_state[RUN_VALUE] = st.session_state[RUN_KEY]


def _remember_step() -> None:
    st.session_state[STEP_VALUE] = st.session_state[STEP_KEY]


_fmt_tokens = explore.fmt_tokens


def sidebar_picker() -> Selection | None:
    """Draw the run and step widgets in the sidebar and store the Selection in session state."""
    st.session_state[SELECTION_KEY] = None
    runs = list_runs()
    with st.sidebar:
        st.subheader("Run and training step")
        if not runs:
            st.info("No runs found. Train one on the **Train** page or download one on the **Models** page.")
            return None
        by_name = {r.name: r for r in runs}
        _apply_pending(runs)
        # The canonical choice lives in plain session keys: widget state is dropped whenever a widget is
        # not drawn in a run, and other pages (the phase-change slider, the Models page) change it too.
        if st.session_state.get(RUN_VALUE) not in by_name:
            st.session_state[RUN_VALUE] = _default_run(runs).name
        # Set even when equal: a widget drawn from another script (page) gets a new id and would reset.
        st.session_state[RUN_KEY] = st.session_state[RUN_VALUE]
        name = st.selectbox(
            "Run",
            list(by_name),
            key=RUN_KEY,
            on_change=_remember_run,
            format_func=lambda n: f"{n}  ·  {by_name[n].source}",
            help="Shipped runs come with the app; trained ones from the Train page; hub ones from the Models page.",
        )
        run = by_name[name]
        try:
            snaps = compute.snapshots_of(run.path)
        except ICLError as exc:
            st.error(f"Cannot read this run: {exc}")
            return None
        if not snaps:
            st.warning("This run has no snapshots yet (is it still starting?). Pick another run or wait.")
            return None
        steps = [s.step for s in snaps]
        wanted = st.session_state.get(STEP_VALUE)
        if wanted not in steps:
            # A new run, or a step this run lacks (other schedule, still training): keep the nearest one.
            wanted = explore.nearest_step(steps, wanted) if isinstance(wanted, int) else steps[-1]
            st.session_state[STEP_VALUE] = wanted
        st.session_state[STEP_KEY] = wanted
        tokens = {s.step: s.tokens_seen for s in snaps}
        step = st.select_slider(
            "Training step",
            options=steps,
            key=STEP_KEY,
            on_change=_remember_step,
            format_func=lambda s: f"{s:,}",
            help="Snapshots are log-spaced: dense early, sparse late, like Olsson et al.",
        )
        selection = Selection(run, tuple(snaps), int(step))
        window = compute.phase_window_of(run.path)
        icl = selection.snapshot.metrics.get("icl_score")
        icl_txt = f" · ICL score {icl:+.3f}" if isinstance(icl, (int, float)) else ""
        st.caption(
            f"Snapshot {selection.index + 1} of {len(steps)} · {_fmt_tokens(tokens[step])} tokens seen{icl_txt} · "
            f"{explore.phase_status(window, selection.step)}"
        )
    st.session_state[SELECTION_KEY] = selection
    return selection


_local = threading.local()  # one script thread per session: marks "app.py drew the sidebar in this run"


@contextmanager
def app_run() -> Iterator[None]:
    """Wrap app.py's sidebar + page run, so pages know the picker was drawn for them."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False


def ensure_sidebar() -> None:
    """Draw the picker (and register the menu) if the page runs without app.py; call it first on every page.

    Streamlit runs a file in pages/ on its own while it still believes the folder is a legacy
    auto-discovered pages folder: on a server's very first run when that is opened on a page's URL,
    and in AppTest's switch_page. Registering our navigation switches it to app.py for later runs.
    """
    if not getattr(_local, "active", False):
        from ui import nav

        nav.navigation()
        sidebar_picker()


def current_selection() -> Selection | None:
    """What the sidebar picked in this run (pages call ensure_sidebar() first)."""
    return st.session_state.get(SELECTION_KEY)


def require_selection() -> Selection:
    """The sidebar's selection, or stop the page with a message saying what to do."""
    sel = current_selection()
    if sel is None:
        st.info("Pick a run with at least one snapshot in the sidebar (or train / download one first).")
        st.stop()
    return sel


fmt_tokens = explore.fmt_tokens
