"""Shared fixtures and page helpers.

The fake Hub's fixtures (fake_hub, no_internet, tiny_run_dir) live in tests/fake_hub.py beside the server
they drive; they are re-exported here so every test module can ask for them by name.
"""

from __future__ import annotations

import os
from pathlib import Path

from fake_hub import fake_hub, no_internet, tiny_run_dir
from pythia_fixtures import pythia_like
from streamlit.testing.v1 import AppTest
from tl_fixtures import timaeus_repo, timaeus_tokenizer_json, tl_repo

from ui import state

__all__ = [
    "APP",
    "ROOT",
    "commit_timeline",
    "fake_hub",
    "mark_apptest_session",
    "no_internet",
    "open_page",
    "pythia_like",
    "shipped_induction_head",
    "shipped_last_step",
    "timeline_package",
    "timaeus_repo",
    "timaeus_tokenizer_json",
    "tiny_run_dir",
    "tl_repo",
]

# Every chart the tests draw (AppTest here, the browser tests' server, which inherits this) is checked against the
# Vega-Lite schema, as st.altair_chart would; the app itself skips that check (ui/vega.py).
os.environ["ICL_VALIDATE_CHARTS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "explorer.py")  # the script app.py serves


def shipped_last_step(run: str = "attn2") -> int:
    """The last step of a shipped run: tests open pages there rather than at a number written down."""
    from icl_core.storage.runs import SHIPPED_DIR
    from icl_core.storage.snapshots import list_snapshots

    return list_snapshots(SHIPPED_DIR / run)[-1].step


def shipped_induction_head(run: str = "attn2") -> str:
    """The induction head of a shipped run at its last step (highest stored prefix-matching score, layer >= 1)."""
    from icl_core.analysis.phase import best_induction_head
    from icl_core.heads import head_name
    from icl_core.storage.runs import SHIPPED_DIR
    from icl_core.storage.snapshots import list_snapshots

    return head_name(best_induction_head(list_snapshots(SHIPPED_DIR / run)[-1]))


def mark_apptest_session(at: AppTest) -> AppTest:
    """AppTest runs every page file alone (switch_page) by design, so the served app's one-off rerun of a
    session's first page-alone run (state.ensure_sidebar) does not apply; the browser test covers that rerun."""
    at.session_state[state.STANDALONE_RERUN] = True
    return at


def open_page(
    page: str | None = None,
    run: str | None = None,
    step: int | None = None,
    params: dict[str, str] | None = None,
    timeout: float = 60,
) -> AppTest:
    """Run explorer.py as a fresh session (optionally on `run` / `step`, or opened from a link with `params`),
    then switch to `page`; fails on any exception on the way."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    mark_apptest_session(at)
    if run is not None:
        at.session_state[state.RUN_VALUE] = run
    if step is not None:
        at.session_state[state.STEP_VALUE] = step
    for key, value in (params or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    # No page draws a JSON view: one would be a bare expression that Streamlit's "magic" wrote to the page.
    assert not at.get("json"), at.get("json")
    return at


def destination_slider(at: AppTest):
    """The Attention page's destination-token slider (its key changes with the text: pages/attention.py)."""
    return next(s for s in at.select_slider if s.label.startswith("Destination token"))


def timeline_package(at: AppTest) -> dict:
    """The data the page's training timeline (ui/timeline.py) was drawn with: what the browser scrubs through."""
    import json

    (element,) = [e for e in at.get("bidi_component") if e.proto.component_name == "icl_timeline"]
    return json.loads(element.proto.json)


def commit_timeline(at: AppTest, step: int) -> AppTest:
    """What the browser sends when play pauses on `step` or the scrubber is let go there (ui/timeline.js's
    "commit" trigger: streamlit's per-component trigger aggregator widget, components/v2/bidi_component/main.py)."""
    import json

    from streamlit.components.v2.bidi_component.main import _make_trigger_id
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    (element,) = [e for e in at.get("bidi_component") if e.proto.component_name == "icl_timeline"]
    widgets = at._tree.get_widget_states()
    trigger = json.dumps([{"event": "commit", "value": step}])
    widgets.widgets.append(WidgetState(id=_make_trigger_id(element.proto.id, "events"), json_trigger_value=trigger))
    at._run(widgets)
    assert not at.exception, at.exception
    return at
