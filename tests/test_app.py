"""The explorer's pages under Streamlit's AppTest: they render, react to their widgets, and never show a traceback.

They run against the shipped runs in checkpoints/ (attn2, attn1), so the checks can be scientific ones:
the induction head's ablation must raise the second-copy loss, the 1-layer run has no phase change.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import streamlit as st
from conftest import commit_timeline, destination_slider, shipped_induction_head, timeline_package
from conftest import open_page as open_app
from fake_hub import FakeHub
from streamlit.testing.v1 import AppTest

from icl_core.analysis.pca import PCA_MIN_STEP
from icl_core.analysis.phase import phase_window
from icl_core.analysis.summary import fmt_icl
from icl_core.model.config import train_config_from_dict
from icl_core.storage.runs import EXTRA_RUNS_ENV, SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, write_manifest
from ui import state

MAIN_RUN = "attn2"
ONE_LAYER_RUN = "attn1"


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Runs the app will find: the main run, plus a run with no snapshots and one with a corrupt checkpoint."""
    base = tmp_path_factory.mktemp("app_runs")
    main = SHIPPED_DIR / MAIN_RUN
    extra = base / "extra"
    empty = extra / "empty-run"
    empty.mkdir(parents=True)
    write_manifest(empty, train_config_from_dict({"run_name": "empty-run"}))
    corrupt = extra / "corrupt-run"
    corrupt.mkdir()
    shutil.copy(main / "run.json", corrupt / "run.json")
    last = list_snapshots(main)[-1]
    shutil.copy(last.meta_path, corrupt / last.meta_path.name)
    (corrupt / last.weights_path.name).write_bytes(last.weights_path.read_bytes()[:100])
    return {"data": base / "data", "extra": extra, "main": main}


@pytest.fixture(autouse=True)
def env(run_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ICL_DATA_DIR", str(run_dirs["data"]))
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(run_dirs["extra"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Cached models and results outlive an AppTest: start every test from cold caches.
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(page: str | None, run: str = MAIN_RUN, step: int | None = None) -> AppTest:
    return open_app(page, run=run, step=step)


def pca_highlight(at: AppTest):
    chart = next(c for c in at.get("vega_lite_chart") if "PCA" in c.proto.spec)
    spec = json.loads(chart.proto.spec)
    ring = next(layer for layer in spec["layer"] if layer["mark"].get("size") == 420)
    data = next(d for d in chart.proto.datasets if d.name == ring["data"]["name"])
    return pa.ipc.open_stream(data.data.data).read_all().to_pandas()


def metric(at: AppTest, label: str) -> float:
    return float(next(m for m in at.metric if m.label == label).value)


@pytest.mark.parametrize(
    "page", [None, "pages/attention.py", "pages/phase_change.py", "pages/ablation.py", "pages/models.py"]
)
def test_page_renders_without_exception(page: str | None) -> None:
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["run"] == MAIN_RUN


def test_the_timeline_moves_the_pca_rings_in_the_browser_and_its_commit_sets_the_shared_step() -> None:
    at = open_page("pages/phase_change.py")
    steps = [s.step for s in list_snapshots(Path(at.session_state[state.SELECTION_KEY].run.path))]
    package = timeline_package(at)
    assert package["steps"] == steps and package["index"] == len(steps) - 1  # opens on the selected (last) step
    rings = pca_highlight(at)
    # One ring set per frame of the timeline; frame i rings the focus run at its own step once it is in the plane.
    assert sorted(rings["frame"].unique()) == list(range(len(steps)))
    for frame, step in enumerate(steps):
        if step >= PCA_MIN_STEP:
            focus = rings[(rings["frame"] == frame) & rings["focus"]]
            assert focus["step"].tolist() == [step], frame
    in_plane = [s for s in steps if s >= PCA_MIN_STEP]
    middle = in_plane[(len(in_plane) - 1) // 2]  # not the last step, which is selected already
    commit_timeline(at, middle)
    assert at.session_state[state.SELECTION_KEY].step == middle
    assert at.session_state["step"] == middle  # the sidebar follows the timeline
    assert timeline_package(at)["index"] == steps.index(middle)
    # The metric row at that frame is the stored metrics of that snapshot, formatted as the rest of the app does.
    snap = at.session_state[state.SELECTION_KEY].snapshot
    icl = next(v for k, v in package["metrics"].items() if k.endswith("held-out code"))
    assert icl[steps.index(middle)] == fmt_icl(snap.metrics)


def test_a_run_too_slow_for_the_browser_timeline_keeps_server_side_play(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import timeline

    monkeypatch.setattr(timeline, "MAX_BUILD_S", 0.0)  # as a 512-wide imported model's would
    steps = [s.step for s in list_snapshots(SHIPPED_DIR / MAIN_RUN)]
    at = open_app("pages/attention.py", run=MAIN_RUN, step=steps[-3], params={"text": "slow slow"})
    assert not at.get("bidi_component")
    assert any("runs on the server" in c.value for c in at.caption)
    key = "attn_timeline_play"
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    assert at.session_state[state.SELECTION_KEY].step == steps[-2]  # Play moves on at once, then on a timer
    assert at.session_state["step"] == steps[-2]  # the sidebar follows
    assert "Pause" in at.button(key=key).label
    at.button(key=key).click().run()
    assert "Play" in at.button(key=key).label
    at.run()
    assert at.session_state[state.SELECTION_KEY].step == steps[-2]  # paused: no timer moves it


def test_one_layer_run_has_no_phase_change() -> None:
    at = open_page("pages/phase_change.py", run=ONE_LAYER_RUN)
    assert any("no phase change detected" in i.value.lower() for i in at.info)


def test_attention_bad_text_gives_messages_not_tracebacks() -> None:
    at = open_page("pages/attention.py")
    html_before = at.get("html")[0].proto.body
    n = len(destination_slider(at).options)
    destination_slider(at).set_value(n // 2).run()
    assert at.get("html")[0].proto.body != html_before  # another destination token, another view
    at.text_area(key="attn_text").set_value("").run()
    assert not at.exception
    assert any("empty" in e.value for e in at.error)
    at.text_area(key="attn_text").set_value("naïve café " * 60).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "only the first 512 tokens" in warnings and "non-ASCII" in warnings


def test_ablating_the_induction_head_raises_second_copy_loss() -> None:
    at = open_page("pages/ablation.py")
    snap = at.session_state[state.SELECTION_KEY].snapshot
    layer, head = max(
        (
            (layer, head)
            for layer, row in enumerate(snap.metrics.prefix_matching)
            if layer >= 1
            for head in range(len(row))
        ),
        key=lambda h: snap.metrics.prefix_matching[h[0]][h[1]],
    )
    clean = metric(at, "Loss on the second copy")
    at.button_group(key=f"ablate_layer_{layer}").set_value([f"L{layer}H{head}"]).run()
    assert not at.exception, at.exception
    ablated = metric(at, "Loss on the second copy")
    assert ablated > clean + 0.1
    for mode in ("mean", "pattern-preserving"):
        at.radio(key="ablation_mode").set_value(mode).run()
        assert not at.exception, at.exception
    at.slider(key="induction_threshold").set_value(0.0).run()
    at.button(key="btn_ablate_induction").click().run()
    at.button(key="btn_ablate_random").click().run()
    assert not at.exception, at.exception
    title = "Comparison (pattern-preserving ablation)"
    comparison = next(h.proto.body for h in at.get("html") if title in h.proto.body)
    assert comparison.count("<tr>") == 4  # header, clean, the induction heads, the random other head
    assert "induction heads (" in comparison and "random other head (" in comparison
    at.text_input(key="ablation_text").set_value("").run()
    assert not at.exception
    assert any("empty" in e.value for e in at.error)


def test_runs_without_snapshots_or_with_corrupt_weights_show_messages() -> None:
    at = open_page("pages/attention.py", run="empty-run")
    assert any("no snapshots" in w.value for w in at.sidebar.warning)
    assert any("Pick a run" in i.value for i in at.info)
    at = open_page("pages/attention.py", run="corrupt-run")
    assert not at.exception
    assert any("corrupt" in e.value for e in at.error)
    at.switch_page("pages/ablation.py").run()
    assert not at.exception
    assert any("corrupt" in e.value for e in at.error)


def test_step_out_of_range_snaps_to_the_nearest_snapshot() -> None:
    at = open_page("pages/attention.py", step=10**9)
    assert not at.exception
    assert at.session_state["step"] == at.session_state[state.SELECTION_KEY].steps[-1]


def test_models_page_lists_runs_and_reports_hub_errors() -> None:
    at = open_page("pages/models.py")
    table = at.dataframe[0].value
    assert {MAIN_RUN, "empty-run", "corrupt-run"} <= set(table["run"])
    at.text_input(key="hub_repo").set_value("not a repo id!")
    at.button(key="hub_download_submit").click().run()
    assert not at.exception
    assert any("not a valid Hub repo id" in e.value for e in at.error)
    at.selectbox(key="models_pick").set_value("corrupt-run")
    at.button(key="models_open").click().run()
    assert at.session_state["run"] == "corrupt-run"


def test_a_run_downloaded_from_the_hub_is_selected_and_explorable(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    fake_hub.add_run("alice/tiny-run", tiny_run_dir)
    at = open_page("pages/models.py")
    at.text_input(key="hub_repo").set_value("https://huggingface.co/alice/tiny-run")
    at.button(key="hub_download_submit").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Downloaded alice/tiny-run" in s.value for s in at.success)
    assert at.session_state["run"] == "alice/tiny-run"
    # A 1-layer, 128-token run without ICL scores: every page must still render.
    for page in ("pages/attention.py", "pages/phase_change.py", "pages/ablation.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)


def _heatmap_views(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html") if 'class="hm-view"' in h.proto.body]


def _pair_data(at: AppTest) -> list[list[str]]:
    """The images of the two one-head heatmaps (the views after the all-heads one)."""
    views = _heatmap_views(at)
    assert len(views) == 3  # all heads, then the chosen head at the two steps
    return [re.findall(r'src="(data:image/png;base64,[^"]+)"', v) for v in views[1:]]


def test_one_head_at_two_steps_defaults_to_the_phase_window() -> None:
    at = open_page("pages/attention.py")
    assert len(_heatmap_views(at)) == 1  # off at first
    at.toggle(key="attn_pair_on").set_value(True).run()
    window = phase_window(list_snapshots(SHIPPED_DIR / MAIN_RUN))
    steps = (at.select_slider(key="attn_pair_a").value, at.select_slider(key="attn_pair_b").value)
    assert steps == (window.start_step, window.end_step)
    assert at.selectbox(key="attn_pair_head").value == shipped_induction_head()
    before, after = _pair_data(at)
    assert (
        len(before) == len(after) == 1 and before != after
    )  # the head attends differently once induction heads have formed
    at.select_slider(key="attn_pair_a").set_value(window.end_step).run()
    assert not at.exception, at.exception
    same_a, same_b = _pair_data(at)
    assert same_a == same_b


def test_every_head_has_a_legend_entry_and_charts_share_the_x_range() -> None:
    at = open_page("pages/phase_change.py", run="attn2-smeared")

    def title(c) -> str:
        t = json.loads(c.proto.spec).get("title", "")
        return str(t.get("text", "") if isinstance(t, dict) else t)

    specs = {title(c): c for c in at.get("vega_lite_chart")}
    chart = next(c for t, c in specs.items() if str(t).startswith("Prefix-matching score per head"))
    spec = json.loads(chart.proto.spec)
    color = next(layer["encoding"]["color"] for layer in spec["layer"] if "color" in layer.get("encoding", {}))
    assert color["legend"]["symbolLimit"] == 0  # Vega draws every entry (it cut the list at L1H1 before)
    tables = [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]
    heads = {v for t in tables if "head" in t.column_names for v in t.column("head").to_pylist()}
    assert len(heads) == 8 and shipped_induction_head("attn2-smeared") in heads  # the smeared run's induction head
    per_chart = {}
    for name, c in specs.items():
        if name.startswith(("ICL score", "Prefix-matching", "Training and held-out")):
            xs = [ly["encoding"]["x"] for ly in json.loads(c.proto.spec)["layer"] if "x" in ly.get("encoding", {})]
            per_chart[name] = {tuple(x["scale"]["domain"]) for x in xs if "domain" in x.get("scale", {})}
    # ICL on text, ICL on repeated random tokens, prefix matching, losses
    assert len(per_chart) == 4 and all(len(d) == 1 for d in per_chart.values()), per_chart
    assert len(set().union(*per_chart.values())) == 1  # one x-range (tokens seen) on every chart over training


def test_every_page_shows_a_snapshots_stored_icl_score_and_no_other_exact_value() -> None:
    """One snapshot, one exact ICL number: the sidebar, the Phase change page and the Models table show the
    stored value (± its standard error); estimates elsewhere are labelled as estimates."""
    from icl_core.analysis.summary import fmt_icl

    snaps = list_snapshots(SHIPPED_DIR / MAIN_RUN)
    snap = snaps[len(snaps) // 2]
    expected = fmt_icl(snap.metrics)
    assert expected and "±" in expected, "the shipped runs store the standard error"
    at = open_page("pages/phase_change.py", step=snap.step)
    assert any(expected in c.value for c in at.sidebar.caption), [c.value for c in at.sidebar.caption]
    package = timeline_package(at)  # the Phase change page's metric row is drawn by its timeline, frame by frame
    shown = next(v for k, v in package["metrics"].items() if k.startswith("ICL score") and k.endswith("code"))
    assert shown[package["index"]] == expected
    at = open_page("pages/ablation.py", step=snap.step)
    estimates = [m for m in at.metric if "ICL" in m.label]
    assert estimates and all("estimate" in m.label for m in estimates)
    assert all(expected in (m.help or "") for m in estimates), "the estimate names the exact, stored value"
    at = open_page("pages/models.py")
    table = at.dataframe[0].value
    final = list_snapshots(SHIPPED_DIR / MAIN_RUN)[-1].metrics
    row = table[table["run"] == MAIN_RUN].iloc[0]
    assert row["ICL score"] == pytest.approx(final.icl_score) and row["ICL score s.e."] == pytest.approx(
        final.icl_score_se
    )


def test_models_page_warns_when_a_run_was_evaluated_on_another_set(run_dirs: dict[str, Path]) -> None:
    other = run_dirs["extra"] / "other-eval-set"
    shutil.copytree(SHIPPED_DIR / ONE_LAYER_RUN, other, ignore=shutil.ignore_patterns("analysis"))
    manifest = json.loads((other / "run.json").read_text())
    manifest["eval_set_sha256"] = "0" * 64
    (other / "run.json").write_text(json.dumps(manifest))
    try:
        at = open_page("pages/models.py")
    finally:
        shutil.rmtree(other)  # the other tests of this module see the usual runs
    warnings = [w.value for w in at.warning]
    assert any("other-eval-set" in w and "another evaluation set" in w for w in warnings), warnings
    assert not any(f"**{MAIN_RUN}**" in w for w in warnings), "the shipped runs match this app's set"


TEXT_BOXES = {
    "pages/attention.py": "attn_text",
    "pages/ablation.py": "ablation_text",
    "pages/phase_change.py": "phase_loss_text",
}


def text_box(at: AppTest, page: str):
    key = TEXT_BOXES[page]
    return at.text_input(key=key) if page.endswith("ablation.py") else at.text_area(key=key)


@pytest.mark.parametrize("page", list(TEXT_BOXES))
def test_an_over_long_paste_is_cut_to_the_limit_with_a_message(page: str) -> None:
    from icl_core.analysis.text import MAX_TEXT_CHARS

    at = open_page(page)
    pasted = "Zebra quilts jump. " * 10_600  # ~200 kB, as a visitor's paste
    text_box(at, page).set_value(pasted).run()
    assert not at.exception, at.exception
    assert text_box(at, page).value == pasted[:MAX_TEXT_CHARS]  # cut, not refused: the box shows what is used
    assert any(f"{len(pasted):,} characters" in w.value and f"{MAX_TEXT_CHARS:,}" in w.value for w in at.warning)
    at.run()
    assert not any(f"{len(pasted):,} characters" in w.value for w in at.warning), "said once"
