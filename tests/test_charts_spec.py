"""The app draws its Altair charts through ui.vega.vega_lite_spec (st.vega_lite_chart without Altair's schema
check): every chart of the chart-heavy pages must give exactly the spec st.altair_chart would send."""

from __future__ import annotations

import json
import re

import pytest
from conftest import open_page, shipped_last_step
from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

from ui import text_charts, training_charts, vega


# The Attention page's charts are all drawn from cached layouts: the test after this one checks those.
@pytest.mark.parametrize("page", ["pages/phase_change.py", "pages/ablation.py"])
def test_every_chart_gets_the_spec_st_altair_chart_would_send(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    original = vega.vega_lite_spec

    def recording(chart):
        drawn.append(chart)
        return original(chart)

    monkeypatch.setattr(vega, "vega_lite_spec", recording)
    vega.cached_layout.cache_clear()  # layouts cached by earlier tests are built again, through vega_lite_spec
    at = open_page(page, run="attn2", step=shipped_last_step())
    assert not at.exception and drawn, f"{page} drew no chart through chrome.show_chart"
    assert len(at.get("vega_lite_chart")) >= len(drawn)
    monkeypatch.setenv(vega.VALIDATE_ENV, "0")  # the app's setting: no schema check
    for chart in drawn:
        assert original(chart) == _convert_altair_to_vega_lite_spec(chart), type(chart).__name__


def test_a_chart_drawn_from_a_cached_layout_equals_the_chart_built_for_its_data() -> None:
    """The Attention page's charts reuse one Altair-built layout per shape and fill in each call's data: the layout
    first built for one snapshot must give, for another snapshot and destination, exactly the spec of the chart
    built for that data directly (anything data-dependent left in the cached layout would differ here)."""
    from streamlit.elements.vega_charts import _to_arrow_dataset

    from icl_core.analysis.text import analyze_tokens, prepare_text
    from icl_core.heads import all_heads
    from icl_core.storage.runs import SHIPPED_DIR
    from icl_core.storage.snapshots import list_snapshots, load_model

    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    text = "the cat sat on the mat. the cat sat on the mat."

    def analysis(info):
        model = load_model(info)
        return analyze_tokens(model, prepare_text(text, model.cfg.n_ctx, model.require_tokenizer()).tokens)

    first, later = analysis(snaps[10]), analysis(snaps[-1])
    n = len(later.tokens)
    for present in (False, True):
        builders = [
            lambda an, q, p=present: text_charts.token_picker(an, q, "pick", present=p),
            lambda an, q, p=present: text_charts.loss_along_sequence(an, q, present=p),
            lambda an, q, p=present: text_charts.attention_heatmaps(an, all_heads(2, 4), 2, n, present=p),
            lambda an, q, p=present: training_charts.loss_curves(
                curves(an, q), "curves", on_top="b", y_from=["b"], present=p
            ),
            # The Ablation page's: a series that comes and goes, and scenarios (two here, three there).
            lambda an, q, p=present: training_charts.loss_curves(curves(an, q), "c", series=("a", "b", "c"), present=p),
            lambda an, q, p=present: text_charts.comparison_bars(scenarios(an, q), "bars", present=p),
        ]
        for make in builders:
            make(first, 5).spec()  # fills the layout cache from another snapshot and destination
            filled = make(later, n - 2)
            spec = filled.spec()
            direct = vega.vega_lite_spec(vega.finish(filled.build(filled.shape, filled.datasets, present), present))
            hashed = direct.pop("datasets")
            names = {_to_arrow_dataset(frame, {})["name"]: name for name, frame in filled.datasets.items()}
            assert {names.get(k, k): v for k, v in hashed.items()} == spec.pop("datasets")  # the same data, by name
            renamed = json.dumps(direct)
            for digest, name in names.items():
                renamed = renamed.replace(digest, name)
            direct = json.loads(renamed)
            if filled.params:
                values = [{"name": k, "value": v} for k, v in filled.params.items()]
                direct["params"] = [*direct.get("params", []), *values]
            assert views_renamed(spec) == views_renamed(direct)
        # ... and the shape it was built for is this call's: the grid holds every token, the axes this window.
        # The token grid is sized per cell, so one layout holds texts of any length: every token gets a cell.
        picker = text_charts.token_picker(later, n - 2, "pick", present=present)
        assert picker.spec()["width"] == picker.spec()["height"] == {"step": 30 if present else 22}
        cells = picker.datasets[vega.DATA][["row", "col"]]
        assert len(cells.drop_duplicates()) == n and cells["col"].max() < text_charts.TOKENS_PER_ROW
        heat = text_charts.attention_heatmaps(later, all_heads(2, 4), 2, n, present=present).spec()
        assert heat["spec"]["layer"][0]["encoding"]["x"]["scale"]["domain"] == list(range(2, n))
        assert heat["params"] == [{"name": vega.LABELS, "value": list(later.labels[2:n])}]


def curves(analysis, query: int):
    """Two loss curves from an analysis (the Phase change page's chart: one series on top, y fitted to it)."""
    import pandas as pd

    losses = analysis.losses[: query + 1]
    return pd.DataFrame(
        {
            "index": [*range(len(losses))] * 2,
            "loss": [*losses, *(losses / 2)],
            "series": ["a"] * len(losses) + ["b"] * len(losses),
        }
    )


def scenarios(analysis, query: int):
    """Comparison bars from an analysis: one scenario per 5 tokens up to the query (2 for one call, 3+ for another)."""
    import pandas as pd

    names = [f"scenario {i}" for i in range(query // 5 + 2)]
    values = [float(analysis.losses[i]) for i in range(len(names))]
    return pd.DataFrame(
        {
            "scenario": names * 2,
            "measure": ["loss on second copy"] * len(names) + ["gain from the repeat"] * len(names),
            "value": values + [v / 2 for v in values],
        }
    )


def views_renamed(spec: dict) -> dict:
    """The spec with Altair's view names (a fresh random-looking name per build) numbered in order of appearance."""
    text, order = json.dumps(spec), {}
    for name in re.findall(r"view_[0-9a-f]+", text):
        order.setdefault(name, f"view_{len(order)}")
    return json.loads(re.sub(r"view_[0-9a-f]+", lambda m: order[m.group(0)], text))


def test_a_memoised_spec_is_the_spec_and_follows_its_data() -> None:
    """vega.memo_spec (the Phase change page's charts): the same spec as building the chart afresh, a new spec when
    a number in the data changes, and a copy each call (Streamlit takes "datasets" out of what it is given)."""
    import pandas as pd

    from ui import training_charts, vega

    df = pd.DataFrame({"tokens": [1_000, 10_000, 100_000], "icl_score": [-0.1, -0.5, -0.9], "series": "code"})
    fresh = vega.vega_lite_spec(vega.finish(training_charts.over_training(df, "icl_score", "ICL", "nats"), False))
    first = vega.memo_spec(False, training_charts.over_training, df, "icl_score", "ICL", "nats")
    assert first == fresh
    first.pop("datasets")
    again = vega.memo_spec(False, training_charts.over_training, df, "icl_score", "ICL", "nats")
    assert again == fresh, "a caller's change to its copy reached the memo"
    changed = df.assign(icl_score=[-0.1, -0.5, -0.8])
    other = vega.memo_spec(False, training_charts.over_training, changed, "icl_score", "ICL", "nats")
    assert other != fresh and other["datasets"] != fresh["datasets"]
    assert vega.memo_spec(True, training_charts.over_training, df, "icl_score", "ICL", "nats") != fresh
