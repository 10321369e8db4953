"""A shared server stays fair (icl_core.server_policy, icl_core.tasks.jobs): one job per visitor, a cap on
training processes with a queue beyond it, and a cancel that ends every process of a job, DDP ranks included,
before the job says it is cancelled. Real worker processes, slowed down so they are still running."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from test_jobs import TINY, data_dir, wait_for  # noqa: F401 - data_dir is a fixture

from icl_core.errors import ConfigError, ICLError
from icl_core.processes import pid_alive
from icl_core.server_policy import server_policy
from icl_core.tasks import folder, jobs


def job_pids(job: jobs.JobInfo) -> list[tuple[int, int | None]]:
    """Every process the job recorded, with its kernel start time: the launched one (torchrun or the worker) and
    each rank."""
    files = [job.job_dir / folder.PID_FILE, *(job.job_dir / jobs.RANKS_DIR).glob("*.json")]
    found = {}
    for f in files:
        entry = json.loads(f.read_text())
        found[entry["pid"]] = entry.get("start_ticks")
    return sorted(found.items())


def alive(process: tuple[int, int | None]) -> bool:
    """Running, neither gone nor a zombie (a killed rank's parent may never reap it in a container)."""
    return pid_alive(*process)


def test_the_policy_is_shared_on_a_space_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPACE_ID", "SPACE_HOST", "ICL_SHARED_SERVER", "ICL_MAX_JOB_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    local = server_policy()
    assert not local.shared and local.max_job_processes is None
    monkeypatch.setenv("SPACE_ID", "someone/induction-explorer")  # set by the Hub in every Space
    space = server_policy()
    assert space.shared and space.jobs_per_visitor == 1 and space.max_job_processes == 1
    monkeypatch.setenv("ICL_MAX_JOB_PROCESSES", "3")
    assert server_policy().max_job_processes == 3
    monkeypatch.setenv("ICL_SHARED_SERVER", "0")
    assert not server_policy().shared


def test_a_shared_server_queues_jobs_beyond_the_cap_and_gives_each_visitor_one(
    data_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICL_SHARED_SERVER", "1")
    monkeypatch.setenv("ICL_MAX_JOB_PROCESSES", "1")
    monkeypatch.setenv("ICL_JOB_STEP_DELAY_S", "0.3")  # the running job is still running when we look
    cfg = dataclasses.replace(TINY, total_steps=400)
    first = jobs.submit_job(dataclasses.replace(cfg, run_name="a1"), owner="alice")
    assert not first.waiting and folder.PID_FILE in os.listdir(first.job_dir)
    with pytest.raises(ICLError, match="one training job per visitor"):
        jobs.submit_job(dataclasses.replace(cfg, run_name="a2"), owner="alice")
    second = jobs.submit_job(dataclasses.replace(cfg, run_name="b1"), owner="bob")
    third = jobs.submit_job(dataclasses.replace(cfg, run_name="c1"), owner="carol")
    assert second.waiting and third.waiting, "the cap (1 process) is taken: they wait"
    assert not (second.job_dir / folder.PID_FILE).exists(), "a waiting job has no process"
    assert jobs.queue_positions() == {second.job_id: 1, third.job_id: 2}
    time.sleep(0.5)
    assert jobs.read_status(second.job_id).state == jobs.QUEUED, "waiting is not mistaken for a dead worker"

    cancelled = jobs.cancel_job(third.job_id)  # waiting: cancelled at once, nothing to stop
    assert cancelled.state == folder.CANCELLED and not (third.job_dir / folder.PID_FILE).exists()
    jobs.cancel_job(first.job_id, force=True)
    assert jobs.read_status(first.job_id).state == folder.CANCELLED
    started = jobs.read_status(second.job_id)
    assert not started.waiting and (second.job_dir / folder.PID_FILE).exists(), "the queue moved on"
    assert jobs.queue_positions() == {}
    jobs.cancel_job(second.job_id, force=True)
    assert all(not alive(p) for job in (first, second) for p in job_pids(jobs.read_status(job.job_id)))


def test_cancelling_a_ddp_job_ends_every_rank_before_it_says_cancelled(
    data_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ICL_JOB_STEP_DELAY_S", "0.3")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cfg = dataclasses.replace(TINY, run_name="ddp", total_steps=400)
    info = jobs.submit_job(cfg, nproc=2)
    info = wait_for(info.job_id, lambda j: j.state == jobs.RUNNING and len(job_pids(j)) >= 3, timeout=120)
    pids = job_pids(info)
    assert len(pids) == 3 and all(alive(p) for p in pids), "torchrun and its two ranks"
    jobs.cancel_job(info.job_id)  # the polite cancel: rank 0 saves a resume state, every rank exits
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline:
        state = jobs.read_status(info.job_id).state
        seen.append(state)
        if state == folder.CANCELLED:
            assert not any(alive(p) for p in pids), "cancelled only once every process is gone"
            break
        time.sleep(0.05)
    assert seen[-1] == folder.CANCELLED, seen[-5:]

    resumed = jobs.resume_job(info.job_id)
    resumed = wait_for(resumed.job_id, lambda j: j.state == jobs.RUNNING and len(job_pids(j)) >= 3, timeout=120)
    pids = job_pids(resumed)
    killed = jobs.cancel_job(resumed.job_id, force=True)  # kill now: every group, then the card
    assert killed.state == folder.CANCELLED
    assert not any(alive(p) for p in pids), "no rank outlives a forced cancel"


def test_more_processes_than_cores_are_refused(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match="at most 2"):
        jobs.submit_job(dataclasses.replace(TINY, run_name="big"), nproc=4)
    monkeypatch.setenv("ICL_SHARED_SERVER", "1")  # a 2-core Space: one training process at a time
    with pytest.raises(ConfigError, match="shared server runs at most 1 training process"):
        jobs.submit_job(dataclasses.replace(TINY, run_name="big"), nproc=2)
    assert jobs.list_jobs() == []


@pytest.mark.parametrize("shared", [True, False])
def test_expensive_analyses_run_one_at_a_time_on_a_shared_server(monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    import threading

    from icl_core.server_policy import heavy_work

    monkeypatch.setenv("ICL_SHARED_SERVER", "1" if shared else "0")
    inside, most = [0], [0]
    guard = threading.Lock()

    def analysis() -> None:
        with heavy_work():
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.2)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=analysis) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == (1 if shared else 3)
