"""The paper's figures on the Phase change page (linear token axis, the early stage named, 1/2/3 layers side by
side, the per-token loss change), and the claims behind them on the shipped runs, on both evaluation sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import open_page

from icl_core.analysis import claims, metrics
from icl_core.analysis.phase import EARLY_STAGE_LABEL, early_stage_end, phase_window, unigram_entropy_nats
from icl_core.analysis.text import analyze_tokens, prepare_text, repeat_lengths
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model

ICL_SETS = ("icl_score", "icl_score_prose")
OVER_TRAINING_TITLES = ("ICL score", "Prefix-matching score per head", "Training and held-out loss", "layer")


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _over_training_specs(at) -> list[dict]:
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return [s for s in specs if any(t in json.dumps(s.get("title", "")) for t in OVER_TRAINING_TITLES)]


def _datasets(at) -> str:
    return " ".join(d.data.data.decode("latin-1") for c in at.get("vega_lite_chart") for d in c.proto.datasets)


def test_the_phase_change_page_draws_tokens_on_a_linear_axis_and_names_the_early_stage() -> None:
    at = open_page("pages/phase_change.py", run="attn2")
    assert not at.error, [e.value for e in at.error]
    specs = _over_training_specs(at)
    # ICL on text, ICL on repeated random tokens, prefix matching, losses, and the three depths side by side
    assert len(specs) == 7
    for spec in specs:
        axis_titles = [
            layer["encoding"]["x"].get("title") for layer in spec["layer"] if "x" in layer.get("encoding", {})
        ]
        assert "tokens seen" in axis_titles and not any("log" in str(t) for t in axis_titles), spec.get("title")
    assert EARLY_STAGE_LABEL in _datasets(at)  # the stage is drawn (a sliver here) and carries its name
    at.toggle(key="phase_log_axis").set_value(True).run()
    specs = _over_training_specs(at)
    assert len(specs) == 7
    for spec in specs:  # on the log axis, where it takes a visible share of the width, it is written on it
        assert '"early stage"' in json.dumps(spec), spec.get("title")
    captions = " ".join(c.value for c in at.caption)
    assert "Grey: the early stage" in captions


def test_one_two_and_three_layers_side_by_side_on_both_evaluation_sets() -> None:
    at = open_page("pages/phase_change.py", run="attn1")
    titles = [json.dumps(s.get("title")) for s in _over_training_specs(at)]
    for expected in ("1 layer (attn1)", "2 layers (attn2)", "3 layers (attn3)"):
        assert any(expected in t for t in titles), titles
    data = _datasets(at)
    assert "held-out code" in data and "English prose" in data


def test_the_per_token_loss_change_is_drawn_between_the_window_ends() -> None:
    at = open_page("pages/phase_change.py", run="attn2")
    window = phase_window(list_snapshots(SHIPPED_DIR / "attn2"))
    slider = next(s for s in at.select_slider if s.label.startswith("Compare the loss"))
    assert tuple(slider.value) == (window.start_step, window.end_step)
    html = " ".join(h.proto.body for h in at.get("html"))
    assert "loss-change" in html and 'class="b' in html
    at.text_area(key="phase_loss_text").set_value("").run()
    assert at.error and "empty" in at.error[0].value and not at.exception


# -- the claims behind the figures, on the shipped runs ------------------------------------------------------


def test_repeat_lengths_count_the_stretch_an_induction_head_can_continue() -> None:
    assert repeat_lengths([1, 2, 3, 9, 1, 2, 3, 4]).tolist() == [0, 0, 0, 0, 1, 2, 3, 0]
    assert repeat_lengths([5, 5, 5]).tolist() == [0, 1, 2]
    assert repeat_lengths([]).tolist() == []


@pytest.mark.parametrize("run", ["attn1", "attn2", "attn3", "attn1-smeared", "attn2-smeared"])
@pytest.mark.parametrize("key", ICL_SETS)
def test_the_early_stage_holds_the_early_swing_and_ends_before_the_phase_change(run: str, key: str) -> None:
    snaps = list_snapshots(SHIPPED_DIR / run)
    end = early_stage_end(snaps)
    assert snaps[0].metrics.heldout_loss > unigram_entropy_nats() and end is not None
    inside = [s.metrics.scalar(key) for s in snaps if s.tokens_seen < end]
    # The swing the tour describes, inside the stage in every run: up, then down, over 0.2 nats peak to peak.
    high, low = max(inside), min(inside)
    assert high > 0 > low and high - low > 0.2 and inside.index(high) < inside.index(low), inside
    window = phase_window(snaps)
    if window is not None:
        assert end < next(s.tokens_seen for s in snaps if s.step == window.start_step)
    # Step 0 is uniform: no in-context learning, whatever the set.
    assert abs(snaps[0].metrics.scalar(key)) <= 0.03


@pytest.mark.parametrize("run", ["attn1", "attn2"])
@pytest.mark.parametrize("key", ICL_SETS)
def test_the_early_swing_is_positional(run: str, key: str) -> None:
    # The tour's account: with every position given position 50's embedding, the swing vanishes. Checked at its
    # peak and its trough (scripts/probe_early_swing.py prints every early snapshot: within one s.e. at each).
    snaps = list_snapshots(SHIPPED_DIR / run)
    end = early_stage_end(snaps)
    early = [s for s in snaps if s.tokens_seen < end]
    peak = max(early, key=lambda s: s.metrics.scalar(key))
    trough = min(early, key=lambda s: s.metrics.scalar(key))
    tokens = claims.eval_tokens(key, 512)
    for snap in (peak, trough):
        model = load_model(snap).eval()
        plain, flat = metrics.exact_icl_score(model, tokens), metrics.icl_score_without_positions(model, tokens)
        assert abs(flat.value) <= flat.se, (snap.step, plain, flat)
        # measured at the peak (512 examples), code / prose: attn1 +0.209 ± 0.027 -> +0.013 ± 0.030 / +0.244 ± 0.018
        # -> +0.005 ± 0.020; attn2 +0.128 ± 0.033 -> +0.018 ± 0.032 / +0.174 ± 0.022 -> +0.018 ± 0.021
        if snap is peak:
            assert plain.value >= 0.1 and plain.value >= 3 * plain.se, (snap.step, plain)


LOSS_CHANGE_TEXTS = {
    "code": "def compute_gradient_norm(parameters):\n    total = 0.0\n    for parameter in parameters:\n"
    "        total += parameter.grad.norm() ** 2\n    return total ** 0.5\n\n"
    "gradient_norm = compute_gradient_norm(model.parameters())\n",
    "prose": "The committee met on Thursday to discuss the Hollingsworth proposal. After a long debate, the "
    "committee decided that the Hollingsworth proposal needed more work, and asked Ms Pemberton-Okafor to "
    "revise it. Ms Pemberton-Okafor agreed to bring the revised Hollingsworth proposal back next month.",
}


@pytest.mark.parametrize("kind", sorted(LOSS_CHANGE_TEXTS))
def test_across_the_window_repeated_stretches_gain_more_than_the_rest(kind: str) -> None:
    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    window = phase_window(snaps)
    by_step = {s.step: s for s in snaps}
    tokens = prepare_text(LOSS_CHANGE_TEXTS[kind], 512).tokens
    before = analyze_tokens(load_model(by_step[window.start_step]), tokens).losses
    after = analyze_tokens(load_model(by_step[window.end_step]), tokens).losses
    change = after - before
    repeated = repeat_lengths(tokens)[:-1] >= 4
    assert repeated.sum() >= 20 and (~repeated).sum() >= 20
    # What the paper's per-token figure shows: the gain concentrates where an earlier copy can be continued.
    assert change[repeated].mean() < change[~repeated].mean() - 0.5


@pytest.mark.parametrize("page", ["pages/circuits.py", "pages/analysis.py"])
def test_the_other_charts_over_training_name_the_early_stage_too(page: str) -> None:
    at = open_page(page, run="attn2")
    assert not at.error, [e.value for e in at.error]
    over = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if '"tokens seen (log scale)"' in c.proto.spec]
    assert over and all('"early stage"' in json.dumps(spec) for spec in over), len(over)
