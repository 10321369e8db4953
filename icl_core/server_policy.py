"""How much of the machine background work may take: unbounded on a person's own machine, shared fairly on a
public server where anonymous visitors share a few cores (a Hugging Face Space).

A Space is recognised by the variables the Hub sets in every Space's container (SPACE_ID, SPACE_HOST;
https://huggingface.co/docs/hub/spaces-overview#helper-environment-variables). ICL_SHARED_SERVER=1 or 0
overrides the detection; ICL_MAX_JOB_PROCESSES sets the cap on training processes running at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

SHARED_ENV, MAX_PROCESSES_ENV = "ICL_SHARED_SERVER", "ICL_MAX_JOB_PROCESSES"


@dataclass(frozen=True)
class ServerPolicy:
    shared: bool  # visitors share the machine: one job each, a cap on processes, a queue beyond it
    max_job_processes: int | None  # training processes (DDP ranks count one each) running at once; None: no cap
    cpu_count: int

    @property
    def one_job_per_session(self) -> bool:
        return self.shared


def server_policy() -> ServerPolicy:
    """The policy now (read from the environment at each call, so a test or an operator can change it)."""
    cpus = os.cpu_count() or 1
    forced = os.environ.get(SHARED_ENV, "").strip().lower()
    if forced in ("1", "true", "yes"):
        shared = True
    elif forced in ("0", "false", "no"):
        shared = False
    else:
        shared = bool(os.environ.get("SPACE_ID") or os.environ.get("SPACE_HOST"))
    raw = os.environ.get(MAX_PROCESSES_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        cap: int | None = int(raw)
    else:
        # Shared: half the cores for training, the rest for the pages every visitor is using (one on 2 cores).
        cap = max(1, cpus // 2) if shared else None
    return ServerPolicy(shared, cap, cpus)


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
