"""The run + step picker in the sidebar, shared by every page through st.session_state, and mirrored in the URL.

explorer.py calls sidebar_picker() before running the page; pages call require_selection() to get the
current run, its snapshots and the chosen step (or stop with a friendly message).

Shareable links: the picker reads `?run=...&step=...` once per session, at its first render (invalid
values give a warning, never a traceback), and from then on writes the selection back to st.query_params
whenever it differs. Streamlit's widget-bound query params are not used: they reset the step on page
switches. Page-owned params (the Attention page's `text` / `preset`) are kept for the page in
link_params() and written with set_url_params().

Linked views: a chart point selection (ui/picks.py) sets the shared run/step through select(), from
the chart's on_select callback, so the sidebar picker, which runs before the page, already shows it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from icl_core.analysis.phase import phase_status
from icl_core.analysis.summary import fmt_icl, fmt_icl_prose, fmt_tokens, nearest_step
from icl_core.errors import ICLError
from icl_core.storage.runs import RunRef, discover_runs, extra_run_refs
from icl_core.storage.snapshots import SnapshotInfo, read_run_config
from ui import runs
from ui.chrome import PRESENT_VALUE, downloads_toggle, presenter_toggle, presenting
from ui.quote import user_text

RUN_KEY = "run"
STEP_KEY = "step"
SELECTION_KEY = "_selection"
RUN_VALUE = "_run_value"
STEP_VALUE = "_step_value"
STANDALONE_RERUN = "_standalone_rerun"  # the session's first page-alone run reran through explorer.py
PENDING_RUN_KEY = "_pending_run_path"  # set by the Models page after a download; applied before the picker renders

# Query parameters of a shareable link.
URL_RUN, URL_STEP, URL_PRESENT = "run", "step", "present"
# Owned by pages: the Attention page's text, preset and destination token; the Ablation page's heads and mode.
PAGE_URL_PARAMS = ("text", "preset", "dest", "heads", "mode")
URL_READ = "_url_read"  # the link was read (once per session)
URL_STEP_PENDING = "_url_step"  # the link's step, checked against the run's snapshots once they are known
URL_WARNINGS = "_url_warnings"  # what was wrong with the link; shown until the selection changes
URL_PAGE_VALUES = "_url_page_values"  # the link's page-owned params, until the page takes them


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
    return discover_runs(extra=extra_run_refs())


def _default_run(refs: list[RunRef]) -> RunRef:
    # The plain 2-layer run shows every phenomenon, so a class sees it first.
    for ref in refs:
        try:
            cfg = read_run_config(ref.path)
        except ICLError:
            continue
        if ref.source == "shipped" and cfg.model.n_layers == 2 and not cfg.model.smeared_keys:
            return ref
    return refs[0]


def shipped_by_layers(refs: list[RunRef], layers: tuple[int, ...] = (1, 2, 3)) -> dict[int, RunRef]:
    """The shipped plain (no smeared keys) run of each depth, for the paper's side-by-side figure."""
    found: dict[int, RunRef] = {}
    for ref in refs:
        try:
            cfg = read_run_config(ref.path)
        except ICLError:
            continue
        n = cfg.model.n_layers
        if ref.source == "shipped" and not cfg.model.smeared_keys and n in layers and n not in found:
            found[n] = ref
    return dict(sorted(found.items()))


def final_icl_by_layers() -> dict[int, str]:
    """'code −0.264 ± 0.028 · prose −0.154 ± 0.057' for the last snapshot of each shipped plain run, by depth."""
    out = {}
    for n, ref in shipped_by_layers(list_runs()).items():
        snaps = runs.snapshots_of(ref.path)
        if snaps:
            parts = [
                f"{name} {value}"
                for name, value in (("code", fmt_icl(snaps[-1].metrics)), ("prose", fmt_icl_prose(snaps[-1].metrics)))
                if value
            ]
            out[n] = " · ".join(parts) or "n/a"
    return out


def request_run(path: Path) -> None:
    """Select the run at `path` on the next rerun (a widget's value cannot change once it is drawn)."""
    st.session_state[PENDING_RUN_KEY] = str(Path(path).resolve())


def _apply_pending(refs: list[RunRef]) -> None:
    pending = st.session_state.pop(PENDING_RUN_KEY, None)
    if pending:
        for ref in refs:
            if str(ref.path.resolve()) == pending:
                st.session_state[RUN_VALUE] = ref.name
                st.session_state.pop(STEP_VALUE, None)


def set_step(step: int) -> None:
    """Change the shared step (call from a widget callback: the sidebar slider follows on this rerun)."""
    st.session_state[STEP_VALUE] = int(step)
    st.session_state.pop(URL_WARNINGS, None)


def select(run: str | None, step: int) -> None:
    """Change the shared run (None: keep it) and step, from a callback; every page then shows that snapshot."""
    if run is not None:
        st.session_state[RUN_VALUE] = run
    set_step(step)


def _remember_run() -> None:
    st.session_state[RUN_VALUE] = st.session_state[RUN_KEY]
    st.session_state.pop(URL_WARNINGS, None)


def step_slider(key: str, steps: list[int], label: str, format_func: Any, help: str | None = None) -> int:
    """A slider over `steps` bound to the one shared step (STEP_VALUE): it shows it, and moving it changes it.

    The sidebar's slider and any page's own step slider are drawn by this, so they can never disagree.
    """
    # Set even when equal: a widget drawn from another script (page) gets a new id and would reset.
    st.session_state[key] = st.session_state[STEP_VALUE]
    value = st.select_slider(
        label, options=steps, key=key, on_change=_take_step, args=(key,), format_func=format_func, help=help
    )
    return int(value)


def _take_step(key: str) -> None:
    set_step(st.session_state[key])


def _read_url_once(by_name: Mapping[str, RunRef]) -> None:
    """Take the run, step and page params of the link the session was opened with (first render only)."""
    if st.session_state.get(URL_READ):
        return
    st.session_state[URL_READ] = True
    params = st.query_params.to_dict()
    warnings: list[str] = []
    run = params.get(URL_RUN)
    if run is not None:
        if run in by_name:
            st.session_state[RUN_VALUE] = run
            st.session_state.pop(STEP_VALUE, None)
        else:
            known = ", ".join(user_text(name) for name in by_name)
            warnings.append(f"The link asks for run **{user_text(run)}**, which this app does not have ({known}).")
    if params.get(URL_PRESENT, "").strip().lower() in ("1", "true", "yes", "on"):
        st.session_state[PRESENT_VALUE] = True
    step = params.get(URL_STEP)
    if step is not None:
        digits = step.strip().replace(",", "").replace("_", "")
        if re.fullmatch(r"-?[0-9]+", digits):  # ASCII only: int() would also read "٣" as 3
            st.session_state[URL_STEP_PENDING] = int(digits)
        else:
            warnings.append(
                f"The link's step **{user_text(step)}** is not a number: showing the last snapshot instead."
            )
    page_values = {k: params[k] for k in PAGE_URL_PARAMS if k in params}
    if page_values:
        st.session_state[URL_PAGE_VALUES] = page_values
    if warnings:
        st.session_state[URL_WARNINGS] = warnings


def _apply_url_step(run: RunRef, steps: list[int]) -> None:
    wanted = st.session_state.pop(URL_STEP_PENDING, None)
    if wanted is None:
        return
    nearest = nearest_step(steps, wanted)
    if nearest != wanted:
        st.session_state.setdefault(URL_WARNINGS, []).append(
            f"Run **{run.name}** has no snapshot at step {wanted:,}: showing the nearest one, step {nearest:,}."
        )
    st.session_state[STEP_VALUE] = nearest


def link_params(*keys: str) -> dict[str, str]:
    """The page-owned params `keys` of the link the session was opened with; each given out once."""
    values = st.session_state.get(URL_PAGE_VALUES) or {}
    return {k: values.pop(k) for k in keys if k in values}


def set_url_params(**values: str | None) -> None:
    """Put these values in the URL (None removes a key), sending nothing when the URL already says so."""
    current = st.query_params.to_dict()
    wanted = {k: v for k, v in {**current, **values}.items() if v is not None}
    if wanted != current:
        st.query_params.from_dict(wanted)


def _show_url_warnings() -> None:
    for text in st.session_state.get(URL_WARNINGS, []):
        st.warning(text, icon=":material/link_off:")


def sidebar_picker() -> Selection | None:
    """Draw the run and step widgets in the sidebar, store the Selection in session state and mirror it in the URL."""
    selection = _picker()
    presenter_toggle()
    downloads_toggle()
    _show_url_warnings()
    if selection is not None:
        set_url_params(**{URL_RUN: selection.run.name, URL_STEP: str(selection.step)})
    set_url_params(**{URL_PRESENT: "1" if presenting() else None})
    return selection


def _picker() -> Selection | None:
    st.session_state[SELECTION_KEY] = None
    refs = list_runs()
    with st.sidebar:
        st.subheader("Run and training step")
        if not refs:
            st.info("No runs found. Train one on the **Train** page or download one on the **Models** page.")
            return None
        by_name = {r.name: r for r in refs}
        _read_url_once(by_name)
        _apply_pending(refs)
        # The canonical choice lives in plain session keys: widget state is dropped whenever a widget is
        # not drawn in a run, and other pages (the phase-change slider, the Models page) change it too.
        if st.session_state.get(RUN_VALUE) not in by_name:
            st.session_state[RUN_VALUE] = _default_run(refs).name
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
            snaps = runs.snapshots_of(run.path)
        except ICLError as exc:
            st.error(f"Cannot read this run: {user_text(exc, 500)}")
            return None
        skipped = runs.skipped_snapshots_of(run.path)
        if skipped:
            st.warning(
                f"{len(skipped)} snapshot(s) of this run are left out: "
                + "; ".join(user_text(line, 200) for line in skipped[:3])
                + (" …" if len(skipped) > 3 else "")
            )
        notes = runs.metric_notes_of(run.path)
        if notes:
            st.warning(
                "Some stored metrics hold NaN or inf and are shown as n/a: "
                + "; ".join(user_text(line, 200) for line in notes[:3])
                + (" …" if len(notes) > 3 else "")
            )
        if not snaps:
            st.warning("This run has no snapshots yet (is it still starting?). Pick another run or wait.")
            return None
        steps = [s.step for s in snaps]
        _apply_url_step(run, steps)
        wanted = st.session_state.get(STEP_VALUE)
        if wanted not in steps:
            # A new run, or a step this run lacks (other schedule, still training): keep the nearest one.
            wanted = nearest_step(steps, wanted) if isinstance(wanted, int) else steps[-1]
            st.session_state[STEP_VALUE] = wanted
        tokens = {s.step: s.tokens_seen for s in snaps}
        step = step_slider(
            STEP_KEY,
            steps,
            "Training step",
            format_func=lambda s: f"{s:,}",
            help="Snapshots are log-spaced: dense early, sparse late, like Olsson et al.",
        )
        selection = Selection(run, tuple(snaps), int(step))
        window = runs.phase_window_of(run.path)
        icl = fmt_icl(selection.snapshot.metrics)
        icl_txt = f" · ICL score {icl}" if icl else ""
        st.caption(
            f"Snapshot {selection.index + 1} of {len(steps)} · {fmt_tokens(tokens[step])} tokens seen{icl_txt} · "
            f"{phase_status(window, selection.step)}"
        )
    st.session_state[SELECTION_KEY] = selection
    return selection


_local = threading.local()  # one script thread per session: marks "explorer.py drew the sidebar in this run"


@contextmanager
def app_run() -> Iterator[None]:
    """Wrap explorer.py's sidebar + page run, so pages know the picker was drawn for them."""
    _local.active = True
    try:
        yield
    finally:
        _local.active = False


def ensure_sidebar() -> None:
    """Draw the picker (and register the menu) if the page runs without explorer.py; call it first on every page.

    Streamlit runs a file in pages/ on its own while it still believes the folder is a legacy
    auto-discovered pages folder: on a server's very first run when that is opened on a page's URL,
    and in AppTest's switch_page. Registering our navigation switches it to explorer.py for later runs.

    On that first run the page's widgets get ids of the page-alone script; the next run (through explorer.py)
    gives them other ids, so the visitor's first click on any of them would be dropped. So the first
    page-alone run of a session reruns at once, before drawing a widget: every widget the visitor sees
    then belongs to an explorer.py run.
    """
    if not getattr(_local, "active", False):
        from ui import nav

        nav.navigation()
        if not st.session_state.get(STANDALONE_RERUN):
            st.session_state[STANDALONE_RERUN] = True
            st.rerun()
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
