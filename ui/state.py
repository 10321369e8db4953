"""The run + step picker in the sidebar, shared by every page through st.session_state, and mirrored in the URL.

explorer.py calls sidebar_picker() before running the page; pages call require_selection() to get the
current run, its snapshots and the chosen step (or stop with a friendly message).

Shareable links: the picker reads `?run=...&step=...` once per session, at its first render (invalid
values give a warning, never a traceback), and from then on writes the selection back to st.query_params
whenever it differs. Streamlit's widget-bound query params are not used: they reset the step on page
switches. Page-owned params (the Attention page's `text` / `preset`) are kept for the page in
link_params() and written with set_url_params().

Linked views: a chart point selection (see chart_pick) sets the shared run/step through select(), from
the chart's on_select callback, so the sidebar picker, which runs before the page, already shows it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from icl_core.analysis.phase import phase_status
from icl_core.analysis.summary import fmt_icl, fmt_icl_prose, fmt_tokens, nearest_step
from icl_core.analysis.text import TextInput
from icl_core.errors import ICLError, InputTextError
from icl_core.storage.runs import RunRef, discover_runs, extra_run_refs
from icl_core.storage.snapshots import SnapshotInfo, read_run_config
from ui import cache, export, layout, vega
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
PRESENT_VALUE, PRESENT_WIDGET = "_presenting", "presenter_mode"
DOWNLOADS_WIDGET = "download_buttons"  # the sidebar toggle; its value lives in export.SHOW_VALUE
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


def shipped_by_layers(runs: list[RunRef], layers: tuple[int, ...] = (1, 2, 3)) -> dict[int, RunRef]:
    """The shipped plain (no smeared keys) run of each depth, for the paper's side-by-side figure."""
    found: dict[int, RunRef] = {}
    for ref in runs:
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
        snaps = cache.snapshots_of(ref.path)
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
    st.session_state.pop(URL_WARNINGS, None)


def select(run: str | None, step: int) -> None:
    """Change the shared run (None: keep it) and step, from a callback; every page then shows that snapshot."""
    if run is not None:
        st.session_state[RUN_VALUE] = run
    set_step(step)


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
    picked_run = point.get("run", run)
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


Result = TypeVar("Result")


def from_text(compute: Callable[[], tuple[TextInput, Result]]) -> Result:
    """`compute()`'s result for the visitor's text, its notes (truncation, multi-byte characters) shown as warnings.
    A bad text or an unusable snapshot is shown as an error, and the page (or fragment) ends there."""
    try:
        prepared, result = compute()
    except InputTextError as exc:
        st.error(user_text(exc, 500))
        st.stop()
    except ICLError as exc:
        st.error(f"Cannot use this snapshot: {user_text(exc, 500)}")
        st.stop()
    for warning in prepared.notes:
        st.warning(warning)
    return result


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
    _presenter_toggle()
    _downloads_toggle()
    _show_url_warnings()
    if selection is not None:
        set_url_params(**{URL_RUN: selection.run.name, URL_STEP: str(selection.step)})
    set_url_params(**{URL_PRESENT: "1" if presenting() else None})
    return selection


def presenting() -> bool:
    """Presenter mode: large type, every token labelled, short captions (a toggle, or ?present=1 in the link)."""
    return bool(st.session_state.get(PRESENT_VALUE))


# Presenter mode's page style: everything larger for the back row, the explanatory captions hidden (the
# presenter says them), the token strips and tables bigger.
PRESENTER_CSS = """<style>
[data-testid="stMain"] { font-size: 1.25rem; }
[data-testid="stMain"] p, [data-testid="stMain"] li, [data-testid="stMain"] label { font-size: 1.25rem !important; }
[data-testid="stMain"] [data-testid="stCaptionContainer"], [data-testid="stMain"] .icl-note { display: none; }
[data-testid="stMain"] .attn-view { font-size: 22px !important; }
[data-testid="stMetricValue"], [data-testid="stMain"] [data-testid="stMetricValue"] p { font-size: 3rem !important; }
</style>"""


def _sidebar_toggle(label: str, widget: str, value: str, help_text: str) -> None:
    """A sidebar toggle whose value lives in the plain session key `value`: widget state is dropped whenever a
    widget is not drawn in a run, and each page's run draws the sidebar anew."""
    st.session_state[widget] = bool(st.session_state.get(value))
    st.sidebar.toggle(
        label,
        key=widget,
        on_change=lambda: st.session_state.__setitem__(value, st.session_state[widget]),
        help=help_text,
    )


def _downloads_toggle() -> None:
    # Off by default: six download buttons took ~30 ms of the browser's JavaScript on every Attention page
    # interaction (Chrome's timeline, 2 cores), a tenth of it.
    _sidebar_toggle(
        "Download buttons",
        DOWNLOADS_WIDGET,
        export.SHOW_VALUE,
        "PNG, SVG and CSV buttons under every figure and table of data. Off, pages redraw faster.",
    )


def _presenter_toggle() -> None:
    _sidebar_toggle(
        "Presenter mode",
        PRESENT_WIDGET,
        PRESENT_VALUE,
        "Large type and labels for a projector; the link gets ?present=1.",
    )
    if presenting():
        st.html(PRESENTER_CSS + layout.PRESENTER_CSS)


def show_chart(chart: Any, **kwargs: Any) -> Any:
    """The chart as st.altair_chart draws it (vega.vega_lite_spec: its spec, minus Altair's schema check), readable
    on light and dark themes, with presenter mode's large type when it is on."""
    if isinstance(chart, vega.FilledChart):  # finished when its layout was built
        return st.vega_lite_chart(chart.spec(), **kwargs)
    return st.vega_lite_chart(vega.vega_lite_spec(vega.finish(chart, presenting())), **kwargs)


def _picker() -> Selection | None:
    st.session_state[SELECTION_KEY] = None
    runs = list_runs()
    with st.sidebar:
        st.subheader("Run and training step")
        if not runs:
            st.info("No runs found. Train one on the **Train** page or download one on the **Models** page.")
            return None
        by_name = {r.name: r for r in runs}
        _read_url_once(by_name)
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
            snaps = cache.snapshots_of(run.path)
        except ICLError as exc:
            st.error(f"Cannot read this run: {user_text(exc, 500)}")
            return None
        skipped = cache.skipped_snapshots_of(run.path)
        if skipped:
            st.warning(
                f"{len(skipped)} snapshot(s) of this run are left out: "
                + "; ".join(user_text(line, 200) for line in skipped[:3])
                + (" …" if len(skipped) > 3 else "")
            )
        notes = cache.metric_notes_of(run.path)
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
        window = cache.phase_window_of(run.path)
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
