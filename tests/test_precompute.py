"""Slow analyses stored beside a run's snapshots: they equal a live computation, go stale when the run changes,
and the pages read them instead of computing (checked by making the live computations fail)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import open_page

from icl_core.analysis import attribution, costs, head_table, precompute
from icl_core.model.config import ModelConfig, TrainConfig
from icl_core.model.transformer import AttnOnlyTransformer
from icl_core.storage.runs import EXTRA_RUNS_ENV, SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model
from icl_core.training.train import train


def _tiny_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    cfg = TrainConfig(
        run_name=name,
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=96),
        compute_icl_score=False,
        total_steps=4,
        n_snapshots=3,
        eval_examples=4,
        batch_size=2,
        log_every=2,
        device="cpu",
    )
    run_dir = tmp_path_factory.mktemp(name) / name
    train(cfg, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = _tiny_run(tmp_path_factory, "pre")
    precompute.precompute_run(run_dir, say=lambda _: None)
    return run_dir


def test_stored_tables_equal_a_live_computation(run: Path) -> None:
    snaps = list_snapshots(run)
    last = snaps[-1]
    for mode in ("zero", "pattern-preserving"):
        stored = precompute.stored_ablation_table(run, snaps, last.step, mode)
        live = head_table.ablation_table(load_model(last), mode, prefix_matching=last.metrics.prefix_matching)
        assert stored is not None and stored.mode == mode
        assert [r.head for r in stored.rows] == [r.head for r in live.rows]
        for a, b in zip(stored.rows, live.rows, strict=True):
            assert a.second_half_loss == pytest.approx(b.second_half_loss, abs=1e-5)
    comp_copy = precompute.load(run, precompute.CIRCUITS_OVER_TRAINING, snaps)
    assert {r["step"] for r in comp_copy["copying"]} == {s.step for s in snaps}


def test_stored_analyses_go_stale_when_the_run_changes(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "pre"
    shutil.copytree(run, copy)
    snaps = list_snapshots(copy)
    assert precompute.load(copy, precompute.ABLATION_TABLES, snaps) is not None
    # One snapshot fewer (a run's files replaced, or a different run under the same name): not these snapshots.
    assert precompute.load(copy, precompute.ABLATION_TABLES, snaps[:-1]) is None
    (copy / precompute.ANALYSIS_DIR / f"{precompute.ABLATION_TABLES}.json").write_text("{oops")
    assert precompute.load(copy, precompute.ABLATION_TABLES, snaps) is None


def test_pages_read_the_stored_analyses(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("computed live although the run's analyses are stored")

    monkeypatch.setattr(head_table, "ablation_table", fail)
    for name in ("attribution_over_training", "phase_change_attribution"):
        monkeypatch.setattr(attribution, name, fail)
    monkeypatch.setattr(precompute, "circuits_rows", fail)
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_page("pages/analysis.py", run="pre")
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe[0].value) == 4  # the stored ablation table: every head of the 2 x 2 model
    at.switch_page("pages/circuits.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("name", ["attn1", "attn2", "attn2-smeared"])
def test_shipped_runs_carry_their_stored_analyses(name: str) -> None:
    run = SHIPPED_DIR / name
    snaps = list_snapshots(run)
    tables = precompute.load(run, precompute.ABLATION_TABLES, snaps)
    assert tables is not None and set(tables) == {"zero", "mean", "pattern-preserving"}
    assert all(len(t) == len(snaps) for t in tables.values())
    last = snaps[-1]
    stored = precompute.stored_ablation_table(run, snaps, last.step, "zero")
    live = head_table.ablation_table(load_model(last), "zero", prefix_matching=last.metrics.prefix_matching)
    assert [r.head for r in stored.rows] == [r.head for r in live.rows]
    for a, b in zip(stored.rows, live.rows, strict=True):
        for field in ("delta_icl", "delta_second_half", "prefix_matching"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=1e-4), (a.head, field)


def test_stored_analyses_are_written_compact_and_read_back_unchanged(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The repo carries ~4 MB of stored analyses per run: indented JSON took checkpoints/ over its cap."""
    run = _tiny_run(tmp_path_factory, "compact")
    snaps = list_snapshots(run)
    data = {"estimates": {"0": {"mean": 1.5, "trace": [0.1, 0.2]}}}
    precompute.save(run, "probe", snaps, data)
    text = precompute.analysis_path(run, "probe").read_text()
    assert "\n" not in text and ", " not in text and ": " not in text
    assert precompute.load(run, "probe", snaps) == data
    shipped = sorted(SHIPPED_DIR.glob("*/analysis/*.json"))
    assert shipped and all(b"\n" not in p.read_bytes() for p in shipped), "shipped analyses are stored compact"


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that carries no stored analyses: every analysis of it is computed live."""
    run_dir = _tiny_run(tmp_path_factory, "live")
    return run_dir


def test_a_costly_analysis_states_its_cost_and_runs_only_when_asked(
    live_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny run costs milliseconds; slower rates make its estimates those of a large model (above a second).
    for rate in ("ABLATION_TABLE_RATE", "CIRCUITS_RATE"):
        monkeypatch.setattr(costs, rate, 1e3)
    calls: list[str] = []
    real_table, real_rows = head_table.ablation_table, precompute.circuits_rows
    monkeypatch.setattr(head_table, "ablation_table", lambda *a, **k: calls.append("table") or real_table(*a, **k))
    monkeypatch.setattr(precompute, "circuits_rows", lambda *a, **k: calls.append("circuits") or real_rows(*a, **k))
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(live_run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_page("pages/analysis.py", run="live")
    button = next(b for b in at.button if b.label.startswith("Ablate each of the 4 heads"))
    seconds = costs.ablation_table_seconds(list_snapshots(live_run)[-1].model_config)
    assert seconds > 1 and costs.say_seconds(seconds) in button.label and "server CPU" in button.label
    assert not at.dataframe and calls == []  # nothing computed before the click
    button.click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert calls == ["table"] and len(at.dataframe[0].value) == 4
    assert not [b for b in at.button if b.label.startswith("Ablate each")]

    at.switch_page("pages/circuits.py").run()
    button = next(b for b in at.button if b.label.startswith("Score the circuits of all 3 snapshots"))
    assert "Copying score" not in " ".join(r.label for r in at.radio)  # the over-training charts wait for it
    button.click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert calls == ["table", "circuits"] and "Copying score" in [r.label for r in at.radio]

    # Kept for every visitor: another session shows both at once, computing nothing again.
    other = open_page("pages/analysis.py", run="live")
    assert len(other.dataframe[0].value) == 4 and not [b for b in other.button if b.label.startswith("Ablate")]
    other.switch_page("pages/circuits.py").run()
    assert not [b for b in other.button if b.label.startswith("Score the circuits")]
    assert calls == ["table", "circuits"]


def test_the_costly_analyses_report_their_progress(live_run: Path) -> None:
    snaps = list_snapshots(live_run)
    seen: dict[str, list[tuple[int, int]]] = {"table": [], "circuits": []}
    long_context = AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=1, d_model=8, d_head=8, n_ctx=520)).eval()
    head_table.ablation_table(long_context, "zero", n_examples=40, progress=lambda d, t: seen["table"].append((d, t)))
    precompute.circuits_rows(snaps, progress=lambda d, t: seen["circuits"].append((d, t)))
    # Batches of 16: 40 held-out examples for the ICL score (3), then 16 repeated sequences (1).
    assert seen["table"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen["circuits"] == [(1, 3), (2, 3), (3, 3)]


def test_a_run_stored_while_training_is_finished_without_recomputing_its_snapshots(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "pre"
    shutil.copytree(run, copy)
    snaps = list_snapshots(copy)
    live = head_table.ablation_table
    computed: list[int] = []

    def counting(model, mode, **kwargs):
        computed.append(mode)
        return live(model, mode, **kwargs)

    monkeypatch.setattr(head_table, "ablation_table", counting)
    # As stored while training: the last snapshot was not there yet.
    tables = precompute.load(copy, precompute.ABLATION_TABLES, snaps)
    del tables["zero"][str(snaps[-1].step)]
    precompute.save(copy, precompute.ABLATION_TABLES, snaps[:-1], tables)
    precompute.precompute_run(copy, say=lambda _: None)
    assert len(computed) == 3, computed  # the new snapshot, in each mode; the others were reused
    assert precompute.stored_ablation_table(copy, snaps, snaps[-1].step, "zero") is not None
    # A snapshot whose weights changed since (another file size) is not reused.
    computed.clear()
    stored = precompute.load(copy, precompute.ABLATION_TABLES, snaps)
    signature = precompute.snapshot_signature(snaps)
    signature[0][2] += 1
    precompute.atomic_write_json(
        copy / precompute.ANALYSIS_DIR / f"{precompute.ABLATION_TABLES}.json",
        {"version": precompute.FORMAT_VERSION, "snapshots": signature, "data": stored},
    )
    precompute.precompute_run(copy, say=lambda _: None)
    assert len(computed) == 3, computed
