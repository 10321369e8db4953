"""The LLC over a run's snapshots, stored beside it: resumable after a stop, computed on demand by a background
task that one visitor starts and only that visitor stops, and drawn on the Phase change page."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import open_page

from icl_core.analysis import llc, llc_over_training
from icl_core.model.config import ModelConfig, TrainConfig
from icl_core.storage.runs import EXTRA_RUNS_ENV
from icl_core.storage.snapshots import list_snapshots
from icl_core.tasks import folder as task
from icl_core.tasks import llc_tasks
from icl_core.training.train import train


@pytest.fixture
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = TrainConfig(
        run_name="tiny-llc",
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=96),
        compute_icl_score=False,
        total_steps=6,
        n_snapshots=3,
        eval_examples=4,
        batch_size=2,
        log_every=2,
        device="cpu",
    )
    run_dir = tmp_path / "runs" / "tiny-llc"
    train(cfg, run_dir)
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path / "data"))
    return run_dir


def test_a_stopped_computation_goes_on_where_it_stopped(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = list_snapshots(tiny_run)
    calls: list[int] = []
    real = llc.estimate_llc
    monkeypatch.setattr(llc, "estimate_llc", lambda model, *a, **k: calls.append(1) or real(model, *a, **k))
    # Stop after the first estimate: it is on disk, the others are not.
    assert not llc_over_training.llc_over_training(tiny_run, should_stop=lambda: len(calls) >= 1)
    assert list(llc_over_training.stored_llc(tiny_run, snaps)) == [snaps[0].step]
    assert llc_over_training.llc_over_training(tiny_run)
    assert len(calls) == len(snaps)  # the first snapshot was not estimated again
    stored = llc_over_training.stored_llc(tiny_run, snaps)
    assert sorted(stored) == [s.step for s in snaps]
    first = stored[snaps[0].step]
    assert len(first.per_chain) == llc.DEFAULT_SETTINGS.n_chains
    assert len(first.loss_trace[0]) == len(first.init_trace) == llc.DEFAULT_SETTINGS.n_steps


def test_the_refined_llc_is_stored_per_head(tiny_run: Path) -> None:
    snaps = list_snapshots(tiny_run)
    stop_after = {"n": 0}

    def stop() -> bool:
        stop_after["n"] += 1
        return stop_after["n"] > 3  # part-way: some heads of the first snapshot

    assert not llc_over_training.llc_over_training(tiny_run, heads=True, should_stop=stop)
    partial = llc_over_training.stored_rllc(tiny_run, snaps)
    assert 0 < len(partial.get(snaps[0].step, {})) < 4
    assert llc_over_training.llc_over_training(tiny_run, heads=True)
    stored = llc_over_training.stored_rllc(tiny_run, snaps)
    assert all(sorted(stored[s.step]) == ["L0H0", "L0H1", "L1H0", "L1H1"] for s in snaps)
    trace = stored[snaps[-1].step]["L1H1"].loss_trace[0]
    assert len(trace) == llc.DEFAULT_SETTINGS.n_steps // llc_over_training.RLLC_TRACE_BLOCK  # kept as block means


def _wait(run_dir: Path, timeout_s: float = 120) -> llc_tasks.LLCTaskInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = llc_tasks.llc_task_of(run_dir)
        assert info is not None
        if not info.active:
            return info
        time.sleep(0.2)
    raise AssertionError("the LLC task did not end")


def test_the_background_task_estimates_every_snapshot_one_at_a_time(tiny_run: Path) -> None:
    info = llc_tasks.start_llc_task(tiny_run, owner="visitor-a")
    assert info.active
    with pytest.raises(task.TaskError, match="one at a time"):
        llc_tasks.start_llc_task(tiny_run, owner="visitor-b")
    with pytest.raises(task.TaskError, match="only the visitor who started"):
        llc_tasks.cancel_llc_task(info, owner="visitor-b")
    done = _wait(tiny_run)
    assert done.state == task.FINISHED and done.done == done.total == 3, done
    assert len(llc_over_training.stored_llc(tiny_run, list_snapshots(tiny_run))) == 3


def test_a_run_that_cannot_be_written_is_refused_with_a_reason(tiny_run: Path) -> None:
    # A file where the analysis folder goes: nothing can be stored beside the run, whoever the user is (a
    # chmod would not do: the tests may run as root, which permissions do not stop).
    (tiny_run / "analysis").write_text("not a folder")
    with pytest.raises(task.TaskError, match="read-only"):
        llc_tasks.start_llc_task(tiny_run)
    assert llc_tasks.llc_task_of(tiny_run) is None


def test_the_phase_change_page_draws_the_llc_and_offers_the_rest(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(tiny_run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_page("pages/phase_change.py", run="tiny-llc")
    assert not at.exception and not at.error, [e.value for e in at.error]
    [button] = [b for b in at.button if b.key == "llc_start"]
    assert "at the 3 snapshots left" in button.label and "server CPU" in button.label
    llc_over_training.llc_over_training(tiny_run, should_stop=lambda: False)
    at = open_page("pages/phase_change.py", run="tiny-llc")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not [b for b in at.button if b.key == "llc_start"]
    assert any("3 of 3 snapshots estimated" in c.value for c in at.caption)


def test_an_imported_l2w256_run_shows_the_published_boundaries_beside_the_detected(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage boundaries Hoogland et al. publish for timaeus/L2W256-3m-rr are drawn for a run imported from
    that repo (its manifest's source), and for no other run."""
    llc_over_training.llc_over_training(tiny_run)
    landscape = pytest.importorskip("ui.landscape")
    rows = landscape.llc_rows(
        list_snapshots(tiny_run), llc_over_training.stored_llc(tiny_run, list_snapshots(tiny_run))
    )
    assert [m for m in landscape.stage_rows(rows, None) if m["kind"] == "published"] == []
    published = [m for m in landscape.stage_rows(rows, "timaeus/L2W256-3m-rr") if m["kind"] == "published"]
    assert [m["label"].split(" (")[0] for m in published] == ["LM1 | LM2", "LM2 | LM3", "LM3 | LM4", "LM4 | LM5"]
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(tiny_run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def llc_spec() -> str:
        at = open_page("pages/phase_change.py", run="tiny-llc")
        assert not at.exception and not at.error, [e.value for e in at.error]
        return next(c.proto.spec for c in at.get("vega_lite_chart") if "Local learning coefficient" in c.proto.spec)

    assert '"published"' not in llc_spec()
    manifest = json.loads((tiny_run / "run.json").read_text())
    manifest["source"] = {"repo_id": "timaeus/L2W256-3m-rr", "revision": "main"}
    (tiny_run / "run.json").write_text(json.dumps(manifest))
    assert '"published"' in llc_spec()  # the stage-boundary colour scale has the published kind


def test_snapshots_are_estimated_coarse_to_fine_so_a_stopped_sweep_spans_training() -> None:
    order = llc_over_training.coarse_to_fine(20)
    assert order[:4] == [0, 8, 16, 19]  # every 8th and the last first
    assert order[4:8] == [4, 12, 2, 6]  # then every 4th, then every 2nd...
    for n in range(0, 70):
        assert sorted(llc_over_training.coarse_to_fine(n)) == list(range(n))


def test_the_prose_check_estimates_every_other_snapshot_on_the_prose_set(tiny_run: Path) -> None:
    snaps = list_snapshots(tiny_run)
    assert llc_over_training.llc_over_training(tiny_run, data_set="prose", stride=2)
    prose = llc_over_training.stored_llc(tiny_run, snaps, "prose")
    assert sorted(prose) == [snaps[0].step, snaps[2].step]  # every 2nd, and the last
    assert llc_over_training.stored_llc(tiny_run, snaps) == {}  # the app's own estimates are another file
    windows = llc.prose_windows(96, 8)
    assert windows.shape == (8, 96) and not torch.equal(windows, llc.llc_windows(96, 8))
    assert torch.equal(windows, llc.prose_windows(96, 8))  # the same windows every time


def test_the_refined_llc_is_drawn_as_heads_by_tokens_with_each_heads_growth(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    landscape = pytest.importorskip("ui.landscape")
    snaps = list_snapshots(tiny_run)
    assert llc_over_training.llc_over_training(tiny_run, heads=True)
    rows = landscape.rllc_rows(snaps, llc_over_training.stored_rllc(tiny_run, snaps))
    first = [r for r in rows if r["head"] == "L0H1"]
    # Each head's cell runs from its snapshot to the same head's next one (a heads × tokens chart has no gaps).
    assert [r["next_tokens"] for r in first[:-1]] == [r["tokens"] for r in first[1:]]
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(tiny_run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_page("pages/phase_change.py", run="tiny-llc")
    assert not at.exception and not at.error, [e.value for e in at.error]
    spec = next(c.proto.spec for c in at.get("vega_lite_chart") if "Refined LLC per head" in c.proto.spec)
    assert '"rect"' in spec and '"next_tokens"' in spec
    assert any("3 of 3 snapshots have every head's estimate" in c.value for c in at.caption)


def test_the_refined_llc_is_not_estimated_on_prose(tiny_run: Path) -> None:
    # One file per kind of estimate: a prose refined LLC would land among the training-corpus ones.
    with pytest.raises(ValueError, match="training corpus only"):
        llc_over_training.llc_over_training(tiny_run, heads=True, data_set="prose")
