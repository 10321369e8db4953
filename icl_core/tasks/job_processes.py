"""The processes of a training job: starting its worker (torchrun for DDP), telling whether any of its processes
(the launcher, rank 0, every DDP rank) still runs, killing them all, and saying how a dead one died."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from icl_core.processes import CHILDREN, pid_alive
from icl_core.tasks import folder
from icl_core.tasks.folder import FAILED, PID_FILE, STATUS_FILE, TaskError, read_json

RANKS_DIR = "ranks"  # ranks/N.json: the pid of every training process (DDP rank N), written by the worker


def _status(job_dir: Path) -> dict[str, Any]:
    return read_json(job_dir / STATUS_FILE)


class JobError(TaskError):
    """A job cannot be found or cannot do what was asked (e.g. resume a finished job)."""


def kill_group(pid: int) -> None:
    """SIGKILL the process group of pid (its own session for a worker; torchrun's ranks may sit in theirs),
    never this process's own group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        group = os.getpgid(pid)
        if group != os.getpgrp():
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def spawn(job_dir: Path, nproc: int) -> None:
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        args += ["-m", "icl_core.tasks.jobs_worker", str(job_dir)]
    else:
        args = ["-m", "icl_core.tasks.jobs_worker", str(job_dir)]
    try:
        folder.start_worker(job_dir, args)
    except OSError as exc:
        folder.write_status(job_dir, state=FAILED, ended=time.time(), error=f"could not start the worker: {exc}")
        raise JobError(f"could not start the training process: {exc}") from exc


def launched_pid(job_dir: Path) -> int | None:
    found = folder.launched(job_dir)
    return found[0] if found else None


def processes(job_dir: Path, status: dict[str, Any]) -> list[tuple[int, int | None]]:
    """(pid, start ticks) of the launched process and of the rank-0 worker (the same without torchrun;
    torchrun starts its ranks in sessions of their own, which outlive a killed launcher)."""
    procs: list[tuple[int, int | None]] = [found] if (found := folder.launched(job_dir)) else []
    worker = status.get("pid")
    if isinstance(worker, int) and worker not in [pid for pid, _ in procs]:
        procs.append((worker, status.get("pid_start_ticks")))
    for rank_file in sorted((job_dir / RANKS_DIR).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            rank = json.loads(rank_file.read_text())
            if isinstance(rank.get("pid"), int) and rank["pid"] not in [pid for pid, _ in procs]:
                procs.append((rank["pid"], rank.get("start_ticks")))
    return procs


def worker_alive(job_dir: Path, status: dict[str, Any]) -> bool:
    if status.get("waiting"):  # queued for room: alive by definition, it has no process to lose
        return True
    if (job_dir / PID_FILE).exists() or status.get("pid"):
        return any(pid_alive(pid, ticks) for pid, ticks in processes(job_dir, status))
    return folder.launched_alive(job_dir, status)  # not recorded yet: judged by its heartbeat


def wait_dead(job_dir: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and worker_alive(job_dir, _status(job_dir)):
        time.sleep(0.05)


def crash_message(job_dir: Path) -> str:
    pid = launched_pid(job_dir)
    proc = CHILDREN.get(pid) if pid is not None else None
    how = "exited unexpectedly"
    if proc is not None:
        # It may have been seen as a zombie an instant before it could be reaped.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        code = proc.returncode
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    last = [ln for ln in folder.tail_log(job_dir, 5).splitlines() if ln.strip()]
    hint = f"; last log line: {last[-1]}" if last else ""
    return f"the training process (pid {pid}) {how}; resume the job to continue from its last saved state{hint}"
