"""A shared server's limits hold for a visitor, not a session: a reload (a new session) or a forged
X-Forwarded-For entry gets no second job, the queue is bounded with a hint of when to come back, and only a job's
owner controls it. The end-to-end test talks to a real server with the websocket protocol a browser tab speaks
(benchmarks/protocol_client.py), from addresses put where Spaces' proxy puts them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from icl_core.server_policy import ServerPolicy, visitor_address
from icl_core.tasks.admission import check_admission, check_control, may_control, retry_hint
from icl_core.tasks.job_processes import JobError

sys.path.insert(0, str(ROOT / "benchmarks"))
from classroom import stop_jobs  # noqa: E402
from load import start_server  # noqa: E402
from protocol_client import Visitor  # noqa: E402

SHARED = ServerPolicy(shared=True, max_job_processes=1, cpu_count=2, max_waiting_jobs=2, proxy_hops=1)
LOCAL = ServerPolicy(shared=False, max_job_processes=None, cpu_count=2)


@dataclass(frozen=True)
class Job:
    job_id: str
    owner: str | None
    waiting: bool
    eta_s: float | None = None
    run_name: str = "r"
    state: str = "running"
    nproc: int = 1


def test_the_address_is_the_one_the_trusted_proxy_wrote() -> None:
    # One proxy (a Space): it appends the address it saw; whatever the visitor sent stays to the left.
    assert visitor_address(["198.51.100.7"], "10.0.0.2", 1) == "198.51.100.7"
    assert visitor_address(["6.6.6.6, 198.51.100.7"], "10.0.0.2", 1) == "198.51.100.7", "a forged entry is ignored"
    assert visitor_address(["6.6.6.6", "198.51.100.7"], "10.0.0.2", 1) == "198.51.100.7", "header lines join in order"
    assert visitor_address(["1.1.1.1, 198.51.100.7, 10.0.0.9"], None, 2) == "198.51.100.7", "two proxies"
    # No proxy: the header is the visitor's own words, the socket's peer is the truth.
    assert visitor_address(["6.6.6.6"], "192.0.2.5", 0) == "192.0.2.5"
    assert visitor_address([], None, 1) is None, "no header behind a proxy: unknown, not the proxy's address"
    assert visitor_address(["198.51.100.7"], None, 2) is None


def test_one_active_job_per_visitor_and_a_bounded_queue() -> None:
    running = Job("j1", "alice", waiting=False, eta_s=600)
    with pytest.raises(JobError, match="one training job per visitor"):
        check_admission([running], "alice", 1, SHARED)
    check_admission([running], "bob", 1, SHARED)  # queued behind alice's: room in the queue
    queue = [running, Job("j2", "bob", waiting=True), Job("j3", "carol", waiting=True)]
    with pytest.raises(JobError, match=r"queue is full \(2 jobs waiting.*about 10 minutes"):
        check_admission(queue, "dave", 1, SHARED)
    check_admission(queue, "dave", 1, LOCAL)  # a person's own machine: no limits
    check_admission([Job("j1", "alice", waiting=False)], "bob", 1, ServerPolicy(True, 2, 2, 0, 1))  # room: no wait
    assert retry_hint([Job("j1", "a", waiting=False, eta_s=None)]) == "Try again in a few minutes."


def test_only_the_owner_controls_a_job_on_a_shared_server() -> None:
    job = Job("j1", "alice", waiting=False)
    assert may_control("alice", "alice", SHARED) and not may_control("alice", "bob", SHARED)
    assert may_control("alice", "bob", LOCAL) and may_control("alice", None, SHARED)  # None: the command line
    with pytest.raises(JobError, match="started by another visitor"):
        check_control(job, "bob", SHARED)


async def submit(port: int, address: str, run_name: str) -> tuple[list[str], Visitor]:
    """A fresh tab (a reload) from `address` submits a 200-step job named run_name: what the page answered."""
    tab = Visitor(port, {"X-Forwarded-For": address}, timeout_s=60)
    await tab.open("train")
    await tab.set_widget("train_run_name", string_value=run_name)
    await tab.set_widget("train_total_steps", double_value=200)
    result = await tab.click("train_submit")
    assert not result.exceptions, result.exceptions
    return result.alerts + result.toasts, tab


def test_a_reload_or_a_forged_address_gets_no_second_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"ICL_PROXY_HOPS": "1", "ICL_MAX_JOB_PROCESSES": "1", "ICL_MAX_WAITING_JOBS": "1",
                        "ICL_JOB_STEP_DELAY_S": "0.5"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    proc, url = start_server(str(tmp_path), shared=True)
    port = int(url.rsplit(":", 1)[1])

    async def scenario() -> None:
        tabs = []
        said, tab = await submit(port, "198.51.100.7", "alice-1")
        tabs.append(tab)
        assert any("Started job" in s for s in said), said
        for forwarded in ("198.51.100.7", "203.0.113.9, 198.51.100.7"):  # a reload; a reload with a forged entry
            said, tab = await submit(port, forwarded, f"alice-{len(tabs) + 1}")
            tabs.append(tab)
            assert any("one training job per visitor" in s for s in said), said
        said, bob = await submit(port, "198.51.100.8", "bob-1")  # another visitor: queued behind alice's job
        assert any("Started job" in s for s in said), said
        said, tab = await submit(port, "198.51.100.9", "carol-1")
        tabs.append(tab)
        assert any("queue is full" in s and "Try again" in s for s in said), said
        # bob's page offers him the controls of his own job only.
        assert len(bob.keys("cancel_")) == 1, bob.keys("cancel_")
        for t in [*tabs, bob]:
            await t.close()

    try:
        # On a thread of its own: another test's browser may have left an event loop running on this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, scenario()).result(timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        stop_jobs(str(tmp_path))
