"""The app draws its Altair charts through ui.charts.vega_lite_spec (st.vega_lite_chart without Altair's schema
check): every chart of the chart-heavy pages must give exactly the spec st.altair_chart would send."""

from __future__ import annotations

import pytest
from conftest import open_page, shipped_last_step
from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

from ui import charts


@pytest.mark.parametrize("page", ["pages/attention.py", "pages/phase_change.py", "pages/ablation.py"])
def test_every_chart_gets_the_spec_st_altair_chart_would_send(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    original = charts.vega_lite_spec

    def recording(chart):
        drawn.append(chart)
        return original(chart)

    monkeypatch.setattr(charts, "vega_lite_spec", recording)
    at = open_page(page, run="attn2", step=shipped_last_step())
    assert not at.exception and drawn, f"{page} drew no chart through state.show_chart"
    assert len(at.get("vega_lite_chart")) >= len(drawn)
    monkeypatch.setenv(charts.VALIDATE_ENV, "0")  # the app's setting: no schema check
    for chart in drawn:
        assert original(chart) == _convert_altair_to_vega_lite_spec(chart), type(chart).__name__
