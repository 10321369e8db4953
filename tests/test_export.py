import csv
import io

import altair as alt
import pandas as pd

from icl_core.export import chart_spec, chart_to_png, chart_to_svg, table_to_csv

TITLE = "Induction heads form at the phase change"


def _chart() -> alt.Chart:
    frame = pd.DataFrame({"step": [0, 10, 20], "icl": [0.0, -0.1, -0.4]})
    return alt.Chart(frame).mark_line().encode(x="step:Q", y="icl:Q").properties(title=TITLE, width=200, height=120)


def test_png_bytes():
    png = chart_to_png(_chart())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_svg_keeps_the_title_as_text():
    svg = chart_to_svg(_chart())
    assert svg.lstrip().startswith("<svg") and TITLE in svg
    assert chart_to_svg(chart_spec(_chart())) == svg  # a dict spec works too


def test_layered_chart_exports():
    base = _chart()
    layered = (base + base.mark_point()).properties(title="two layers")
    assert "two layers" in chart_to_svg(layered)


def test_csv_from_records_and_frames():
    records = [{"head": "L1H0", "score": -1.5}, {"head": "L0H1", "score": 0.25, "note": "a, b"}]
    text = table_to_csv(records).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0] == {"head": "L1H0", "score": "-1.5", "note": ""}
    assert rows[1]["note"] == "a, b"
    frame = pd.DataFrame({"x": [1, 2], "label": ["␣", "⏎"]})
    assert table_to_csv(frame).decode("utf-8").splitlines() == ["x,label", "1,␣", "2,⏎"]


def test_a_chart_from_a_cached_layout_exports_with_all_its_data():
    """The app's templated charts (ui.vega.FilledChart) export like Altair ones: every dataset inline as records,
    the layout's own constant marks (tokens 50 and 500) included, and the drawn lines in the SVG."""
    from ui import training_charts

    frame = pd.DataFrame(
        {"index": [1, 2, 3] * 2, "loss": [3.0, 2.0, 1.5, 3.1, 2.5, 2.4], "series": ["a"] * 3 + ["b"] * 3}
    )
    chart = training_charts.loss_curves(frame, TITLE, on_top="b")
    spec = chart.to_dict()
    assert all(isinstance(v, list) for v in spec["datasets"].values())
    assert sorted(len(v) for v in spec["datasets"].values()) == [2, 3, 3]  # the 50/500 marks, then each series
    svg = chart_to_svg(spec)
    assert TITLE in svg and svg.count('class="mark-line') >= 1 and svg.count("<path") >= 3
