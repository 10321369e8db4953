"""The Circuits and Head attribution pages under AppTest, on the shipped runs, and their figure export.

Caches are cleared once for the module (not per test): every test's assertions hold whatever is cached,
and sharing the per-snapshot results keeps the file well under a minute on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pytest
import streamlit as st
from conftest import open_page as open_app
from conftest import shipped_induction_head
from streamlit.testing.v1 import AppTest

from icl_core.storage.runs import EXTRA_RUNS_ENV
from ui import chrome, export, head_charts

TIMEOUT = 120
CIRCUITS, ANALYSIS = "pages/circuits.py", "pages/analysis.py"


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICL_DATA_DIR", str(tmp_path_factory.mktemp("research_data")))  # shipped runs only
        mp.setenv(EXTRA_RUNS_ENV, "")
        mp.setenv("HF_HUB_OFFLINE", "1")
        st.cache_data.clear()
        st.cache_resource.clear()
        yield
        st.cache_data.clear()
        st.cache_resource.clear()


def open_page(page: str, run: str) -> AppTest:
    at = open_app(page, run=run, timeout=TIMEOUT)
    assert at.session_state["run"] == run
    return at


def chart_titled(at: AppTest, prefix: str):
    """The first Altair chart whose title starts with prefix: (spec dict, its data as bytes)."""
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("title", "")
        text = title.get("text", "") if isinstance(title, dict) else title
        if str(text).startswith(prefix):
            data = b"".join(d.data.data for d in chart.proto.datasets) + json.dumps(spec.get("data", {})).encode()
            return spec, data
    raise AssertionError(f"no chart titled {prefix!r}")


@pytest.mark.parametrize("run", ["attn2", "attn1"])
@pytest.mark.parametrize("page", [CIRCUITS, ANALYSIS])
def test_pages_render_without_errors(page: str, run: str) -> None:
    at = open_page(page, run)
    assert not at.error, [e.value for e in at.error]
    assert at.get("vega_lite_chart"), "no chart drawn"
    at.toggle(key=chrome.DOWNLOADS_WIDGET).set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("download_button")) >= 3  # PNG, SVG and CSV under the first chart at least
    infos = " ".join(i.value for i in at.info)
    if run == "attn1" and page == CIRCUITS:
        assert "1-layer" in infos and "composition" in infos
    if run == "attn1" and page == ANALYSIS:
        assert "no phase change" in infos
    if run == "attn2" and page == CIRCUITS:
        chart_titled(at, "Composition scores")


def test_head_selector_changes_the_qk_heatmap() -> None:
    at = open_page(CIRCUITS, "attn2")
    head = shipped_induction_head()
    assert at.selectbox(key="circuits_head").value == head  # the shipped run's induction head
    spec, before = chart_titled(at, f"QK circuit of {head}")
    at.selectbox(key="circuits_head").set_value("L0H0").run()
    assert not at.exception, at.exception
    spec_after, after = chart_titled(at, "QK circuit of L0H0")
    assert after != before
    assert not at.error, [e.value for e in at.error]
    assert any("layer 0" in i.value for i in at.info)  # no K-composition circuit for a layer-0 head


def chart_runs(at: AppTest, wanted: str) -> set[str]:
    """The runs (series) drawn on the first chart titled `wanted`."""
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("title", "")
        if str(title.get("text", "") if isinstance(title, dict) else title) == wanted:
            frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]
            return {str(v) for f in frames if "series" in f for v in f["series"].dropna().unique()}
    raise AssertionError(f"no chart titled {wanted!r}")


def test_ablation_mode_changes_the_table_and_compare_runs_overlays() -> None:
    at = open_page(ANALYSIS, "attn2")
    zero = at.dataframe[0].value
    assert len(zero) == 8 and zero["is_induction"].sum() >= 1
    # Zero ablation: the induction head costs the most on the repeated sequence; on the small batch's windowed ICL
    # estimate the layer-0 heads feeding its keys tie with it (measured +0.205 L0H3 vs +0.195 L1H3).
    assert zero.loc[zero["delta_second_half"].idxmax(), "head"].startswith("★")
    at.radio(key="attr_table_mode").set_value("pattern-preserving").run()
    assert not at.exception, at.exception
    preserving = at.dataframe[0].value
    assert not preserving.equals(zero)
    assert preserving.iloc[0]["head"].startswith("★")  # its own (direct) effect: the most ICL of any head
    at.multiselect(key="compare_runs").set_value(["attn2", "attn1"]).run()
    assert not at.exception, at.exception
    assert chart_runs(at, "ICL score") == {"attn2", "attn1"}  # both runs on one chart
    assert not at.error, [e.value for e in at.error]


def test_export_builders_make_png_svg_and_csv() -> None:
    rows = [
        {"head": "L0H0", "layer": 0, "eigenvalue": -0.5, "empirical": -0.9, "own_top1": 0.0},
        {"head": "L1H0", "layer": 1, "eigenvalue": 0.99, "empirical": -0.2, "own_top1": 0.7},
    ]
    chart = head_charts.copying_bars(rows)
    title = chart.to_dict()["title"]
    png = export.png_bytes(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    svg = export.svg_bytes(chart).decode("utf-8")
    assert svg.lstrip().startswith("<svg") and f">{title}<" in svg  # the title is a text element
    assert export.export_spec(chart)["width"] == export.EXPORT_WIDTH  # stretch charts get a width in the file
    csv = export.csv_bytes(pd.DataFrame(rows)).decode("utf-8")
    assert csv.splitlines()[0] == "head,layer,eigenvalue,empirical,own_top1"
    assert export.file_stem("K-composition (L1H0)") == "k-composition_l1h0"
