"""Whether a shared server takes one more training job: one active job per visitor, and a bounded queue.

Pure: it reads the active jobs and the policy, and says no with a reason and when to try again. On a person's own
machine (policy.shared false) everything is taken, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from icl_core.server_policy import ServerPolicy
from icl_core.tasks.job_processes import JobError


class ActiveJob(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def run_name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def waiting(self) -> bool: ...
    @property
    def nproc(self) -> int: ...
    @property
    def eta_s(self) -> float | None: ...


def check_admission(active: Sequence[ActiveJob], owner: str | None, nproc: int, policy: ServerPolicy) -> None:
    """Raise JobError when a shared server should refuse a new job of `nproc` processes from `owner`."""
    if not policy.shared:
        return
    limit = policy.jobs_per_visitor
    mine = [j for j in active if owner is not None and j.owner == owner]
    if limit is not None and len(mine) >= limit:
        raise JobError(
            f"this server is shared: one training job per visitor at a time, and job {mine[0].job_id} "
            f"({mine[0].run_name}) is {mine[0].state}. Cancel it or wait for it to end."
        )
    waiting = [j for j in active if j.waiting]
    running = sum(j.nproc for j in active if not j.waiting)
    cap = policy.max_job_processes
    would_wait = bool(waiting) or (cap is not None and running > 0 and running + nproc > cap)
    if would_wait and policy.max_waiting_jobs is not None and len(waiting) >= policy.max_waiting_jobs:
        raise JobError(
            f"this server is shared and its queue is full ({len(waiting)} jobs waiting for the "
            f"{cap} training process(es) it runs at once). {retry_hint(active)}"
        )


def may_control(owner: str | None, visitor: str | None, policy: ServerPolicy) -> bool:
    """Whether `visitor` may cancel, resume or remove a job `owner` started: anyone on a person's own machine, only
    its owner on a shared server (None: a caller outside any visitor's session, e.g. the command line)."""
    return not policy.shared or visitor is None or owner == visitor


def check_control(job: ActiveJob, visitor: str | None, policy: ServerPolicy) -> None:
    if not may_control(job.owner, visitor, policy):
        raise JobError(f"job {job.job_id} was started by another visitor: only they can stop, resume or remove it")


def retry_hint(active: Sequence[ActiveJob]) -> str:
    """When a place in the queue should free up: as soon as the running job closest to its end finishes."""
    etas = [j.eta_s for j in active if not j.waiting and j.eta_s is not None]
    if not etas:
        return "Try again in a few minutes."
    minutes = max(1, round(min(etas) / 60))
    return f"Try again in about {minutes} minute{'s' if minutes > 1 else ''}, when the job nearest its end finishes."
