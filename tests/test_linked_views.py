"""Linked views and shareable links, under AppTest against the shipped runs (checkpoints/attn1, attn2).

- `?run=...&step=...` (and `&text=...` / `&preset=...` for the Attention page) opens the app at that
  snapshot; a bad link gives a warning (nearest snapshot for a step the run lacks), never a traceback;
  the selection is written back to the URL and survives page switches.
- Clicking a point on the phase-change charts sets the shared run/step. AppTest has no API for chart
  selections, so one test sends the selection as the browser would (the chart's widget state, through
  AppTest's private `_run`), and the selection -> (run, step) logic is tested as a pure function too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    commit_timeline,
    destination_slider,
    open_page,
    shipped_induction_head,
    shipped_last_step,
    timeline_package,
)
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from icl_core.analysis.summary import nearest_step
from icl_core.analysis.text import preset_text
from icl_core.storage.runs import EXTRA_RUNS_ENV, SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots
from ui import chrome, picks, state

LAST = shipped_last_step()  # attn2's last step: links open there


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Only the shipped runs: no user-trained or downloaded ones.
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(EXTRA_RUNS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def steps_of(run: str) -> list[int]:
    return [s.step for s in list_snapshots(SHIPPED_DIR / run)]


def open_app(page: str | None = None, **params: str) -> AppTest:
    return open_page(page, params=params)


def shown(at: AppTest) -> tuple[str, int]:
    """The run and step every page draws (the sidebar's Selection), checked against the sidebar widgets."""
    sel = at.session_state[state.SELECTION_KEY]
    assert (at.session_state["run"], at.session_state["step"]) == (sel.run.name, sel.step)
    return sel.run.name, sel.step


def url(at: AppTest) -> tuple[str, int]:
    return at.query_params["run"], int(at.query_params["step"])


def test_link_opens_every_page_at_its_run_and_step_and_page_switches_keep_it() -> None:
    step = steps_of("attn1")[len(steps_of("attn1")) // 2]
    at = open_app(run="attn1", step=str(step))
    assert not at.warning
    assert shown(at) == ("attn1", step) == url(at)
    for page in ("pages/phase_change.py", "pages/attention.py", "pages/ablation.py", "pages/home.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert shown(at) == ("attn1", step) == url(at), page
    # A change made on one page is written to the URL and kept on the next page.
    other = steps_of("attn1")[-2]
    at.switch_page("pages/phase_change.py").run()
    commit_timeline(at, other)  # the timeline paused or let go on that snapshot
    assert shown(at) == ("attn1", other) == url(at)
    at.switch_page("pages/attention.py").run()
    assert shown(at) == ("attn1", other) == url(at)


def test_link_with_text_opens_the_attention_page_on_that_sequence() -> None:
    step = steps_of("attn2")[-3]
    at = open_app("pages/attention.py", run="attn2", step=str(step), text="abcdefg abcdefg")
    assert shown(at) == ("attn2", step)
    assert at.text_area(key="attn_text").value == "abcdefg abcdefg"
    assert at.selectbox(key="attn_preset").value == "Your own text"
    assert at.query_params["text"] == "abcdefg abcdefg"
    # Typing writes the text to the URL; picking a preset writes its name instead.
    at.text_area(key="attn_text").set_value("xyz xyz").run()
    assert at.query_params["text"] == "xyz xyz" and "preset" not in at.query_params
    at.selectbox(key="attn_preset").set_value("Repeated English sentence").run()
    assert at.query_params["preset"] == "Repeated English sentence" and "text" not in at.query_params
    # ... and a link with that preset opens on it.
    at = open_app("pages/attention.py", preset="Repeated English sentence")
    assert at.text_area(key="attn_text").value == preset_text("Repeated English sentence")
    at = open_app("pages/attention.py", preset="no such preset")
    assert any("no such preset" in w.value for w in at.warning)
    assert at.selectbox(key="attn_preset").value == "Repeated random tokens"


@pytest.mark.parametrize(
    ("params", "expect_run", "expect_step", "message"),
    [
        ({"run": "no-such-run", "step": "0"}, "attn2", 0, "no-such-run"),
        ({"run": "attn1", "step": "ten"}, "attn1", "last", "not a number"),
        ({"run": "attn2", "step": str(shipped_last_step() - 7)}, "attn2", "nearest", "nearest one"),
        ({"run": "attn2", "step": "-5"}, "attn2", 0, "nearest one"),
    ],
)
def test_invalid_link_warns_and_falls_back(params: dict, expect_run: str, expect_step, message: str) -> None:
    at = open_app(**params)
    assert not at.error
    assert any(message in w.value for w in at.warning), [w.value for w in at.warning]
    steps = steps_of(expect_run)
    if expect_step == "last":
        expect_step = steps[-1]
    elif expect_step == "nearest":
        expect_step = nearest_step(steps, int(params["step"]))
        assert expect_step != int(params["step"])
    assert shown(at) == (expect_run, expect_step) == url(at)  # the URL now says what is shown
    # The warning is about the link: it goes once the selection changes.
    at.select_slider(key="step").set_value(steps[1]).run()
    assert not at.warning


def test_chart_pick_reads_streamlit_point_selections() -> None:
    pick = picks.chart_pick
    assert pick({"selection": {"pick": [{"run": "attn1", "step": 500}]}}, "pick") == ("attn1", 500)
    # Charts about one run report only the step: the chart's run is used; the last point wins.
    assert pick({"selection": {"pick": [{"step": 10}, {"step": 20.0}]}}, "pick", "attn2") == ("attn2", 20)
    assert pick({"selection": {"pick": [{"step": 20}]}}, "pick") == (None, 20)
    for empty in (None, {}, {"selection": {}}, {"selection": {"pick": []}}, {"selection": {"pick": {}}}):
        assert pick(empty, "pick") is None
    assert pick({"selection": {"pick": [{"step": "x"}]}}, "pick") is None
    assert pick({"selection": {"other": [{"step": 3}]}}, "pick") is None


def click_point(at: AppTest, key_part: str, point: dict) -> AppTest:
    """Send a point selection on the chart whose key contains `key_part`, as the browser does on a click."""
    chart = next(c for c in at.get("vega_lite_chart") if key_part in c.proto.id)
    spec = json.loads(chart.proto.spec)
    params = spec.get("params", []) + [p for layer in spec.get("layer", []) for p in layer.get("params", [])]
    assert "pick" in [p["name"] for p in params]
    widgets = at._tree.get_widget_states()
    value = json.dumps({"selection": {"pick": [point]}})
    widgets.widgets.append(WidgetState(id=chart.proto.id, string_value=value))
    at._run(widgets)
    assert not at.exception, at.exception
    return at


def test_clicking_a_chart_point_selects_that_snapshot_everywhere() -> None:
    at = open_app("pages/phase_change.py", run="attn2")
    step = steps_of("attn1")[-4]
    click_point(at, "pick_pca", {"run": "attn1", "step": step})  # attn1's point on the PCA plane
    assert shown(at) == ("attn1", step) == url(at)
    package = timeline_package(at)
    assert package["steps"][package["index"]] == step  # the timeline opens on the clicked snapshot
    other = steps_of("attn1")[-6]
    click_point(at, "pick_icl", {"step": other})  # the ICL-score chart: same run, another step
    assert shown(at) == ("attn1", other) == url(at)
    at.switch_page("pages/ablation.py").run()
    assert shown(at) == ("attn1", other)
    assert at.session_state[state.SELECTION_KEY].snapshot.step == other


def test_export_buttons_under_the_charts() -> None:
    at = open_app("pages/phase_change.py", run="attn2")
    assert not at.get("download_button")  # off by default: the pages redraw faster
    at.toggle(key=chrome.DOWNLOADS_WIDGET).set_value(True).run()  # on from here, on every page
    keys = {b.proto.id for b in at.get("download_button")}
    for chart in ("attn2_icl_score", "attn2_prefix-matching", "attn2_loss_pca"):
        for kind in ("png", "svg", "csv"):
            assert any(f"export_{chart}_{kind}" in k for k in keys), (chart, kind, keys)
    at.switch_page("pages/attention.py").run()
    assert any("export_attention_attn2" in b.proto.id for b in at.get("download_button"))
    at.switch_page("pages/ablation.py").run()
    assert any("export_ablation_loss_curve_attn2" in b.proto.id for b in at.get("download_button"))


def test_link_round_trip_of_destination_heads_and_ablation_mode() -> None:
    at = open_app("pages/attention.py", run="attn2", step=str(LAST), text="abcdefg abcdefg", dest="12")
    assert not at.warning, [w.value for w in at.warning]
    assert destination_slider(at).value == 12
    assert at.query_params["dest"] == "12"
    destination_slider(at).set_value(9).run()
    assert at.query_params["dest"] == "9"  # the link follows the page

    ind = shipped_induction_head()
    other, third = [h for h in ("L0H3", "L1H1", "L0H0") if h != ind][:2]
    at = open_app("pages/ablation.py", run="attn2", step=str(LAST), heads=f"{ind},{other}", mode="pattern-preserving")
    assert not at.warning, [w.value for w in at.warning]

    def ablated() -> set[str]:
        return {name for picker in at.button_group for name in picker.value if picker.key.startswith("ablate_layer_")}

    assert {ind, other} <= ablated() and third not in ablated()
    assert at.radio(key="ablation_mode").value == "pattern-preserving"
    picker = at.button_group(key=f"ablate_layer_{other[1]}")
    picker.set_value([x for x in picker.value if x != other]).run()
    assert ablated() == {ind}
    assert (at.query_params["heads"], at.query_params["mode"]) == (ind, "pattern-preserving")

    at = open_app("pages/ablation.py", run="attn2", heads="L9H9", mode="![x](http://h)")
    warnings = " ".join(w.value for w in at.warning)
    assert "L9H9" in warnings and "ablation mode" in warnings and "](" not in warnings


def test_presenter_mode_from_the_link_and_the_toggle() -> None:
    at = open_app("pages/attention.py", run="attn2", step=str(LAST), present="1")
    assert at.toggle(key=chrome.PRESENT_WIDGET).value and at.query_params["present"] == "1"
    picker = next(json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if "Click a token" in c.proto.spec)
    assert picker["config"]["title"]["fontSize"] >= 20  # projector-sized type
    view = next(h.proto.body for h in at.get("html") if 'class="hm-view"' in h.proto.body)
    n_heads, window = view.count("<figure"), int(re.search(r"--hm-n:(\d+)", view).group(1))
    axes = re.findall(r'<div class="hm-[xy]">([^<]*)</div>', view)
    assert n_heads == 8 and len(axes) == 2 * n_heads  # every token labelled, on every heatmap
    assert all(len(text.split("\n")) == window for text in axes)
    assert int(re.search(r"--hm-font:(\d+)px", view).group(1)) >= 12  # readable from the back row
    assert any("stCaptionContainer" in h.proto.body for h in at.get("html"))  # long captions hidden
    at.toggle(key=chrome.PRESENT_WIDGET).set_value(False).run()
    assert "present" not in at.query_params
    picker = next(json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if "Click a token" in c.proto.spec)
    assert "fontSize" not in picker["config"]["title"]  # back to normal type (subtitles stay theme-neutral)


def test_clicking_a_token_makes_it_the_destination_and_the_link_follows() -> None:
    at = open_app("pages/attention.py", run="attn2", step=str(LAST), text="abcdefg abcdefg")
    assert destination_slider(at).value != 3
    click_point(at, "attn_token_pick", {"position": 3})
    assert destination_slider(at).value == 3
    assert at.query_params["dest"] == "3"
    click_point(at, "attn_token_pick", {"position": 99})  # not a position of this text: ignored
    assert destination_slider(at).value == 3
    destination_slider(at).set_value(5).run()
    click_point(at, "attn_token_pick", {"position": 3})  # the same token again, after the slider moved it
    assert destination_slider(at).value == 3
    # A new text moves the destination but keeps the grid's element (its key), so the browser only swaps its data.
    grid = next(c.proto.id for c in at.get("vega_lite_chart") if "attn_token_pick" in c.proto.id)
    slider = destination_slider(at).proto.id
    at.text_area(key="attn_text").set_value("xyzxyz xyzxyz xyzxyz").run()
    assert destination_slider(at).value != 3
    assert grid in [c.proto.id for c in at.get("vega_lite_chart")]
    # ... and draws a new destination slider (one set to a new value reaches the screen after the paint).
    assert destination_slider(at).proto.id != slider


def test_attention_heatmap_window_survives_a_visit_to_another_page() -> None:
    # A text longer than the heatmaps' window has a "First token shown" slider; its widget state is dropped while
    # another page is drawn, and the page must rebuild it (it once read the dropped key and raised).
    text = "the cat sat on the mat. " * 5
    at = open_app("pages/attention.py", run="attn2", step=str(LAST), text=text)
    assert not at.exception
    start = at.slider(key="attn_window_start").value
    query = destination_slider(at).value
    assert 0 < start <= query
    at.switch_page("pages/ablation.py").run()
    assert not at.exception
    at.switch_page("pages/attention.py").run()
    assert not at.exception, at.exception
    assert at.slider(key="attn_window_start").value == start  # the window ending at the destination, again
    assert destination_slider(at).value == query
