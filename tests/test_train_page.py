"""The Train page (AppTest): renders, refuses bad configs with a message, starts jobs."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from icl_core.errors import ConfigError
from icl_core.model.config import ModelConfig, TrainConfig, form_field, train_config_from_dict
from icl_core.processes import CHILDREN
from icl_core.tasks import folder, jobs

PAGE = "pages/train.py"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ICL_JOB_STEP_DELAY_S", "0.05")  # still running when the test cancels it
    yield tmp_path
    for job in jobs.list_jobs():
        if job.active and job.pid:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc = CHILDREN.pop(job.pid, None) if job.pid else None
        if proc is not None:
            proc.wait(timeout=10)


def page() -> AppTest:
    """The Train page as a visitor opens it: through explorer.py (the page itself calls state.ensure_sidebar)."""
    return open_page(PAGE)


def set_tiny(at: AppTest) -> None:
    for key, value in {
        "train_n_layers": 1,
        "train_n_heads": 2,
        "train_d_model": 16,
        "train_d_head": 8,
        "train_n_ctx": 128,
        "train_batch_size": 4,
        "train_total_steps": 400,
        "train_n_snapshots": 4,
        "train_eval_examples": 4,
    }.items():
        at.number_input(key=key).set_value(value)
    at.checkbox(key="train_compute_icl_score").uncheck()


def test_page_renders_presets_and_an_empty_job_list(data_dir: Path) -> None:
    at = page()
    presets = at.selectbox(key="train_preset").options
    shipped = {p.stem for p in (Path(PAGE).parent.parent / "configs").glob("*.json")}
    assert shipped and shipped <= set(presets)
    assert at.text_input(key="train_run_name").value
    assert any("No training jobs yet" in i.value for i in at.info)


def test_the_form_is_drawn_from_the_config_declarations(data_dir: Path) -> None:
    """Every field the form shows takes its label, help and bounds from model/config.py; the bounds it states
    are the ones validate() enforces."""
    at = page()
    widgets = {w.key: w for kind in (at.number_input, at.selectbox, at.checkbox) for w in kind}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    shown = {key: key.removeprefix("train_") for key in widgets if key.startswith("train_")}
    fields = {
        key: ("model", name) if name in model_fields else (name,)
        for key, name in shown.items()
        if name in model_fields | train_fields
    }
    for key, path in fields.items():
        spec = form_field(ModelConfig if path[0] == "model" else TrainConfig, path[-1])
        assert widgets[key].label == spec.label, key
        if spec.help:
            assert spec.help in (widgets[key].help or ""), key
        if spec.kind == "int" and spec.low is not None and spec.high is not None:
            assert f"{spec.low:,} to " in widgets[key].help, key
            data = TrainConfig().to_dict()
            target = data["model"] if path[0] == "model" else data
            target[path[-1]] = spec.high + 1
            with pytest.raises(ConfigError, match=rf"{path[-1]} must be"):
                train_config_from_dict(data, check_size=False)
        if spec.kind == "choice":
            assert tuple(widgets[key].options) == spec.options, key
    # Every field that declares a label is on the form.
    labelled = {
        ("model", f.name) if cls is ModelConfig else (f.name,)
        for cls in (ModelConfig, TrainConfig)
        for f in dataclasses.fields(cls)
        if "label" in f.metadata
    }
    assert labelled == set(fields.values())


def test_invalid_config_shows_an_error_and_starts_nothing(data_dir: Path) -> None:
    at = page()
    set_tiny(at)
    at.checkbox(key="train_compute_icl_score").check()  # needs n_ctx > 500
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert any("n_ctx must be at least 501" in e.value for e in at.error)
    at.checkbox(key="train_compute_icl_score").uncheck()
    at.text_input(key="train_run_name").set_value("bad name!")
    at.button(key="train_submit").click().run()
    assert any("run_name must" in e.value for e in at.error)
    assert jobs.list_jobs() == []


def test_valid_config_starts_a_job_that_can_be_cancelled(data_dir: Path) -> None:
    at = page()
    set_tiny(at)
    at.text_input(key="train_run_name").set_value("from-page")
    at.button(key="train_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("from-page" in t.value for t in at.toast)
    assert at.text_input(key="train_run_name").value == "from-page-2"  # the next free name
    [job] = jobs.list_jobs()
    assert job.run_name == "from-page" and job.active
    assert len(at.get("progress")) == 1

    at.button(key=f"cancel_{job.job_id}").click().run()
    assert not at.exception
    assert jobs.read_status(job.job_id).cancel_requested
    deadline = time.time() + 60
    while jobs.read_status(job.job_id).active and time.time() < deadline:
        time.sleep(0.1)
    at.run()
    assert jobs.read_status(job.job_id).state == folder.CANCELLED
    assert at.button(key=f"resume_{job.job_id}")  # offered once it has stopped


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train_n_layers", 1000, "model.n_layers must be a positive integer of at most 12"),
        ("train_total_steps", 10**12, "total_steps must be a positive integer of at most 1,000,000"),
        ("train_grad_clip", float("nan"), "grad_clip must be a non-negative number"),
        ("train_nproc", 64, "64 processes asked for"),
    ],
)
def test_out_of_range_values_are_refused_not_changed(data_dir: Path, key: str, value: float, message: str) -> None:
    """The form passes what was typed to the validation, which refuses it by name: nothing is clamped to a bound
    (1000 layers used to become 1) and no job starts."""
    at = page()
    set_tiny(at)
    if key == "train_nproc":
        at.number_input(key="train_batch_size").set_value(64)  # divisible: the process count itself is refused
    at.number_input(key=key).set_value(value)
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert at.number_input(key=key).value == value or value != value, "the value is kept as typed"
    assert any(message in e.value.replace("\\", "") for e in at.error), [e.value for e in at.error]
    assert jobs.list_jobs() == []
