"""How much of the machine background work may take: unbounded on a person's own machine, shared fairly on a
public server where anonymous visitors share a few cores (a Hugging Face Space).

A Space is recognised by the variables the Hub sets in every Space's container (SPACE_ID, SPACE_HOST;
https://huggingface.co/docs/hub/spaces-overview#helper-environment-variables). ICL_SHARED_SERVER=1 or 0
overrides the detection; ICL_MAX_JOB_PROCESSES sets the cap on training processes running at once,
ICL_MAX_WAITING_JOBS the length of the queue behind it, and ICL_PROXY_HOPS how many proxies in front of the server
append to X-Forwarded-For (a Space has one: its proxy; visitor_address says why that matters).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

SHARED_ENV, MAX_PROCESSES_ENV = "ICL_SHARED_SERVER", "ICL_MAX_JOB_PROCESSES"
MAX_WAITING_ENV, PROXY_HOPS_ENV = "ICL_MAX_WAITING_JOBS", "ICL_PROXY_HOPS"
SHARED_MAX_WAITING = 3  # jobs queued behind the running one(s): each may train for many minutes, so a longer
# queue would only promise waits nobody stays for
# Training on a shared server yields the CPU to the pages: with 2 visitors, one job at the same priority made a new
# text's timeline 8-11x slower, at nice 15 4-5x (benchmarks/classroom.py --hostile); it gets what the pages leave.
JOB_NICE = 15
JOBS_PER_VISITOR = 1  # active (running or queued) jobs per visitor on a shared server


@dataclass(frozen=True)
class ServerPolicy:
    shared: bool  # visitors share the machine: one job each, a cap on processes, a queue beyond it
    max_job_processes: int | None  # training processes (DDP ranks count one each) running at once; None: no cap
    cpu_count: int
    max_waiting_jobs: int | None = None  # jobs queued behind the cap at once; None: no bound
    proxy_hops: int = 0  # proxies in front that append the client's address to X-Forwarded-For

    @property
    def jobs_per_visitor(self) -> int | None:
        return JOBS_PER_VISITOR if self.shared else None


def server_policy() -> ServerPolicy:
    """The policy now (read from the environment at each call, so a test or an operator can change it)."""
    cpus = os.cpu_count() or 1
    on_space = bool(os.environ.get("SPACE_ID") or os.environ.get("SPACE_HOST"))
    forced = os.environ.get(SHARED_ENV, "").strip().lower()
    if forced in ("1", "true", "yes"):
        shared = True
    elif forced in ("0", "false", "no"):
        shared = False
    else:
        shared = on_space
    raw = os.environ.get(MAX_PROCESSES_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        cap: int | None = int(raw)
    else:
        # Shared: half the cores for training, the rest for the pages every visitor is using (one on 2 cores).
        cap = max(1, cpus // 2) if shared else None
    waiting = _count(MAX_WAITING_ENV, SHARED_MAX_WAITING if shared else None)
    hops = _count(PROXY_HOPS_ENV, 1 if on_space else 0)
    return ServerPolicy(shared, cap, cpus, waiting, hops or 0)


def _count(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else default


def visitor_address(forwarded_for: list[str], peer: str | None, proxy_hops: int) -> str | None:
    """The visitor's network address, as the last trusted proxy saw it; None when unknown (a local connection).

    Each proxy appends the address it got the request from to X-Forwarded-For, so with `proxy_hops` proxies in
    front of the server, the hops-th entry from the right was written by the first of them: the visitor can put
    anything to its left, but not there. With no proxy, the header is the visitor's own words and the socket's
    peer address is the truth. A cookie would be the visitor's own words too (a private window drops it), so it
    cannot carry a limit. forwarded_for: every X-Forwarded-For header line of the request.
    """
    if proxy_hops <= 0:
        return peer or None
    entries = [e.strip() for line in forwarded_for for e in line.split(",") if e.strip()]
    if len(entries) < proxy_hops:  # fewer entries than proxies: a request that did not come through them all
        return peer or None
    return entries[-proxy_hops]


_HEAVY = threading.Lock()


@contextlib.contextmanager
def heavy_work() -> Iterator[None]:
    """Around an expensive on-demand analysis (every head ablated at every snapshot, ...): on a shared server one
    at a time, since every visitor's session runs in this one process and two would halve each other's cores;
    elsewhere no wait."""
    if not server_policy().shared:
        yield
        return
    with _HEAVY:
        yield


def heavy_work_busy() -> bool:
    """Whether heavy_work() would wait now (another analysis holds the shared server's turn)."""
    return server_policy().shared and _HEAVY.locked()
