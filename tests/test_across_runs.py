"""Every run on one token axis (icl_core/analysis/across_runs.py, the Phase change page's section)."""

from __future__ import annotations

import dataclasses

from icl_core.analysis.across_runs import RunSeries, across_runs_rows, token_unit
from icl_core.analysis.phase import phase_window
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots


def test_each_run_is_labelled_with_its_unit_and_keeps_its_own_window() -> None:
    attn2 = list_snapshots(SHIPPED_DIR / "attn2")
    attn1 = list_snapshots(SHIPPED_DIR / "attn1")
    bpe_cfg = dataclasses.replace(attn2[0].model_config, tokenizer="EleutherAI/pythia-14m")
    as_bpe = [dataclasses.replace(s, model_config=bpe_cfg) for s in attn2]
    window = phase_window(attn2)
    assert window is not None
    runs = [RunSeries("attn2", attn2, window), RunSeries("attn1", attn1, None), RunSeries("imported", as_bpe, None)]
    points, windows = across_runs_rows(runs)
    labels = {p["run"] for p in points}
    assert labels == {"attn2 (byte tokens)", "attn1 (byte tokens)", "imported (BPE tokens)"}
    assert token_unit(bpe_cfg) == "BPE tokens"
    assert all(p["tokens"] > 0 for p in points), "step 0 has no place on a log axis"
    assert len([p for p in points if p["run"] == "attn2 (byte tokens)"]) == len(attn2) - 1
    tokens = {s.step: s.tokens_seen for s in attn2}
    assert windows == [
        {"run": "attn2 (byte tokens)", "start": tokens[window.start_step], "end": tokens[window.end_step]}
    ], "only runs with a window get one, in their own colour"


def test_a_run_without_an_icl_score_is_left_out() -> None:
    attn2 = list_snapshots(SHIPPED_DIR / "attn2")
    unscored = [dataclasses.replace(s, metrics=dataclasses.replace(s.metrics, icl_score=None)) for s in attn2]
    points, windows = across_runs_rows([RunSeries("none", unscored, phase_window(attn2))])
    assert points == [] and windows == []
