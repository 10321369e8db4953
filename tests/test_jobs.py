"""Training jobs: run, watch, kill, cancel, resume; and DDP under torchrun matching one process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from icl_core.errors import ConfigError
from icl_core.model.config import ModelConfig, TrainConfig
from icl_core.processes import CHILDREN
from icl_core.storage.snapshots import list_snapshots, load_model, read_manifest
from icl_core.tasks import folder, jobs
from icl_core.training.resume import RESUME_WEIGHTS
from icl_core.training.train import TRAIN_LOG, train

REPO = Path(__file__).resolve().parent.parent

# Resumed training replays the same batches with the same optimizer state on one CPU thread; any
# difference from the uninterrupted run would be a bug, so the bound is float32 rounding, not noise.
RESUME_ATOL = 1e-6
# DDP sums the two half-batch gradients in another order than one process does: float32 rounding.
DDP_ATOL = 1e-5

TINY = TrainConfig(
    run_name="ref",
    model=ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=128),
    compute_icl_score=False,
    total_steps=40,
    n_snapshots=6,
    eval_examples=4,
    batch_size=4,
    warmup_steps=4,
    log_every=5,
    resume_every=10,
    device="cpu",
)


def _use_data_dir(mp: pytest.MonkeyPatch, path: Path) -> None:
    mp.setenv("ICL_DATA_DIR", str(path))
    # Workers inherit this: one thread each keeps a 2-core machine responsive and the runs reproducible.
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.delenv("ICL_JOB_STEP_DELAY_S", raising=False)


def _kill_leftovers(data_dir: Path) -> None:
    for pid_file in (data_dir / "jobs").glob("*/pid.json"):
        pid = json.loads(pid_file.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc = CHILDREN.pop(pid, None)
        if proc is not None:
            proc.wait(timeout=10)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _use_data_dir(monkeypatch, tmp_path)
    yield tmp_path
    _kill_leftovers(tmp_path)


def wait_for(job_id: str, done, timeout: float = 90.0, seen: list[int] | None = None) -> jobs.JobInfo:
    deadline = time.time() + timeout
    while True:
        info = jobs.read_status(job_id)
        if seen is not None:
            seen.append(info.step)
        if done(info):
            return info
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for job {job_id}: {info}\n{jobs.tail_log(job_id)}")
        time.sleep(0.05)


def ended(info: jobs.JobInfo) -> bool:
    return not info.active


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted job, shared: the tests below compare interrupted runs against it."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        _use_data_dir(mp, root)
        try:
            started = time.time()
            info = jobs.submit_job(TINY)
            seen: list[int] = []
            info = wait_for(info.job_id, ended, seen=seen)
            yield info, seen, time.time() - started
        finally:
            _kill_leftovers(root)


def final_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"step_{step:06d}.safetensors")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def log_losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in map(json.loads, (run_dir / TRAIN_LOG).read_text().splitlines())]


def assert_no_partial_files(run_dir: Path) -> None:
    """What a reader can see is complete: every snapshot's JSON has loadable weights."""
    for meta in run_dir.glob("step_*.json"):
        assert meta.with_suffix(".safetensors").exists(), f"{meta.name} has no weights"
    for snap in list_snapshots(run_dir):
        assert not snap.meta_path.name.startswith(".")
        load_model(snap)


def test_job_runs_to_completion_with_monotonic_progress(reference) -> None:
    info, seen, wall = reference
    assert info.state == folder.FINISHED, info.error
    assert info.step == info.total_steps == TINY.total_steps
    assert info.tokens == TINY.total_steps * TINY.batch_size * TINY.model.n_ctx
    assert seen == sorted(seen) and seen[-1] == TINY.total_steps
    assert info.device == "cpu x1"
    snaps = list_snapshots(info.run_dir)
    assert [s.step for s in snaps][0] == 0 and snaps[-1].step == TINY.total_steps
    for snap in snaps:
        load_model(snap)
    assert read_manifest(info.run_dir)["status"] == "finished"
    assert "finished at step 40" in jobs.tail_log(info.job_id)
    # its slow analyses were stored at the end of the job, so its pages read them instead of computing
    from icl_core.analysis import precompute

    assert precompute.load(info.run_dir, precompute.ABLATION_TABLES, snaps) is not None
    assert precompute.load(info.run_dir, precompute.CIRCUITS_OVER_TRAINING, snaps) is not None
    assert wall < 60, f"a tiny job took {wall:.1f}s"
    with pytest.raises(jobs.JobError, match="only cancelled or failed"):
        jobs.resume_job(info.job_id)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(reference, data_dir: Path, monkeypatch) -> None:
    ref, _, _ = reference
    monkeypatch.setenv("ICL_JOB_STEP_DELAY_S", "0.05")  # slow enough to be killed half-way
    info = jobs.submit_job(dataclasses.replace(TINY, run_name="killed"))
    info = wait_for(info.job_id, lambda j: j.step >= 15 or not j.active)
    assert info.state == jobs.RUNNING, info
    os.killpg(info.pid, signal.SIGKILL)

    crashed = wait_for(info.job_id, ended, timeout=10)
    assert crashed.state == folder.FAILED
    assert "killed by signal 9" in crashed.error
    assert crashed.step < TINY.total_steps
    assert_no_partial_files(info.run_dir)

    monkeypatch.delenv("ICL_JOB_STEP_DELAY_S")
    resumed = jobs.resume_job(info.job_id)
    assert resumed.state in (jobs.QUEUED, jobs.RUNNING) and resumed.attempts == 2
    done = wait_for(info.job_id, ended)
    assert done.state == folder.FINISHED, done.error
    assert done.step == TINY.total_steps
    starts = [int(n) for n in re.findall(r"from step (\d+)", jobs.tail_log(info.job_id, 200))]
    assert starts[0] == 0 and 0 < starts[1] <= crashed.step  # continued from a saved state, not from scratch
    assert not list(info.run_dir.glob(".*.tmp"))
    assert_no_partial_files(info.run_dir)
    assert [s.step for s in list_snapshots(info.run_dir)] == [s.step for s in list_snapshots(ref.run_dir)]
    assert max_diff(final_weights(info.run_dir, 40), final_weights(ref.run_dir, 40)) <= RESUME_ATOL
    assert max_diff(load_file(info.run_dir / RESUME_WEIGHTS), load_file(ref.run_dir / RESUME_WEIGHTS)) <= RESUME_ATOL
    got, want = log_losses(info.run_dir), log_losses(ref.run_dir)
    assert [step for step, _ in got] == [step for step, _ in want]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in want], abs=RESUME_ATOL)


def test_cancel_then_resume(reference, data_dir: Path, monkeypatch) -> None:
    from icl_core.storage.runs import discover_runs

    ref, _, _ = reference
    monkeypatch.setenv("ICL_JOB_STEP_DELAY_S", "0.05")
    info = jobs.submit_job(dataclasses.replace(TINY, run_name="cancelled"))
    with pytest.raises(ConfigError, match="already used"):
        jobs.submit_job(dataclasses.replace(TINY, run_name="cancelled"))  # an active job holds its name
    assert jobs.suggest_run_name("cancelled") == "cancelled-2"
    wait_for(info.job_id, lambda j: j.step >= 5 or not j.active)
    assert "cancelled" in [r.name for r in discover_runs()]  # visible to the app while it trains
    assert [j.job_id for j in jobs.list_jobs()] == [info.job_id]
    assert jobs.cancel_job(info.job_id).cancel_requested
    stopped = wait_for(info.job_id, ended, timeout=30)
    assert stopped.state == folder.CANCELLED, stopped.error
    assert 5 <= stopped.step < TINY.total_steps
    assert read_manifest(info.run_dir)["status"] == "cancelled"
    assert jobs.cancel_job(info.job_id).state == folder.CANCELLED  # cancelling twice changes nothing

    monkeypatch.delenv("ICL_JOB_STEP_DELAY_S")
    jobs.resume_job(info.job_id)
    assert not jobs.read_status(info.job_id).cancel_requested
    done = wait_for(info.job_id, ended)
    assert done.state == folder.FINISHED, done.error
    assert max_diff(final_weights(info.run_dir, 40), final_weights(ref.run_dir, 40)) <= RESUME_ATOL


BAD_CONFIGS = [
    ({**TINY.to_dict(), "model": {**TINY.to_dict()["model"], "n_layers": -1}}, "n_layers must be a positive"),
    ({**TINY.to_dict(), "batch_size": 0}, "batch_size must be a positive"),
    ({**TINY.to_dict(), "compute_icl_score": True}, "n_ctx must be at least 501"),
    ({**TINY.to_dict(), "learning_rate": 0.1}, "unknown config key"),
    ({**TINY.to_dict(), "run_name": "../escape"}, "run_name must"),
    ({**TINY.to_dict(), "device": "tpu"}, "device must"),
]


@pytest.mark.parametrize("cfg, message", BAD_CONFIGS)
def test_bad_config_is_refused_before_any_process_starts(data_dir: Path, monkeypatch, cfg, message) -> None:
    def no_process(*args, **kwargs):
        raise AssertionError("a process was started for an invalid config")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    with pytest.raises(ConfigError, match=message):
        jobs.submit_job(cfg)
    assert jobs.list_jobs() == []
    assert not (data_dir / "runs").exists()


def test_names_of_existing_runs_and_bad_process_counts_are_refused(data_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(subprocess, "Popen", None)  # any process start would fail loudly
    (data_dir / "runs" / "taken").mkdir(parents=True)
    with pytest.raises(ConfigError, match="'taken' is already used"):
        jobs.submit_job(dataclasses.replace(TINY, run_name="taken"))
    with pytest.raises(ConfigError, match="divisible"):
        jobs.submit_job(TINY, nproc=3)
    with pytest.raises(ConfigError, match="positive integer"):
        jobs.submit_job(TINY, nproc=0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match="4 processes asked for but this machine has 2 CPU core"):
        jobs.submit_job(TINY, nproc=4)
    assert jobs.list_jobs() == []


def test_torchrun_ddp_matches_single_process(tmp_path: Path) -> None:
    cfg = dataclasses.replace(TINY, run_name="ddp", total_steps=8, n_snapshots=3, log_every=2, warmup_steps=2)
    config_path = tmp_path / "ddp.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*launcher, "--standalone", "--nproc_per_node=2", "-m", "icl_core.training.train", str(config_path)]
        + ["--out-dir", str(tmp_path / "ddp_runs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    ddp_dir = tmp_path / "ddp_runs" / "ddp"
    assert read_manifest(ddp_dir)["device"] == "cpu x2"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_dir = tmp_path / "single" / "ddp"
        assert train(cfg, single_dir) == "finished"
    finally:
        torch.set_num_threads(threads)
    assert max_diff(final_weights(ddp_dir, 8), final_weights(single_dir, 8)) <= DDP_ATOL
    ddp_losses, single_losses = log_losses(ddp_dir), log_losses(single_dir)
    assert [s for s, _ in ddp_losses] == [s for s, _ in single_losses] == [2, 4, 6, 8]
    assert [v for _, v in ddp_losses] == pytest.approx([v for _, v in single_losses], abs=DDP_ATOL)


def test_job_whose_worker_never_started_is_failed_after_a_while(data_dir: Path, monkeypatch) -> None:
    """A server that died between writing a job and starting its worker leaves a queued job, no process."""
    monkeypatch.setattr(jobs, "spawn", lambda job_dir, nproc: None)
    info = jobs.submit_job(dataclasses.replace(TINY, run_name="orphan"))
    assert jobs.read_status(info.job_id).state == jobs.QUEUED  # it may still be starting
    status_path = info.job_dir / folder.STATUS_FILE
    status = json.loads(status_path.read_text())
    assert not status["waiting"], "taken from the queue: judged by its last sign of life from now on"
    status["created"] = status["heartbeat"] = time.time() - 2 * folder.ORPHAN_TIMEOUT_S  # the spawn, long ago
    status_path.write_text(json.dumps(status))
    failed = jobs.read_status(info.job_id)
    assert failed.state == folder.FAILED and failed.resumable
    jobs.delete_job(info.job_id)
    assert jobs.list_jobs() == []
