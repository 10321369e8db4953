"""What every background task (a training job, a Hub import) shares: a folder on disk that holds all of its state,
a worker process of its own, and the same rules for reading them.

    <task folder>/status.json  state, progress, message, error, heartbeat: written atomically
    <task folder>/pid.json     the launched process (pid and kernel start time)
    <task folder>/log.txt      the worker's stdout and stderr
    <task folder>/cancel       present once a cancel was asked for

Nothing lives in the app's memory, so a task outlives Streamlit reruns and server restarts, and every browser
session sees the same list. Before the worker starts, the server writes status.json; afterwards only the worker
does, except to record that a dead worker failed. A task whose worker is gone while its status says it is
active has failed (resumable); one that was asked to stop and is gone was cancelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from icl_core.errors import ICLError
from icl_core.processes import pid_alive, process_start_ticks, spawn_python
from icl_core.storage.snapshots import atomic_write_json

STATUS_FILE, PID_FILE, LOG_FILE, CANCEL_FILE = "status.json", "pid.json", "log.txt", "cancel"


class TaskState(StrEnum):
    """Where a background task is: one vocabulary for every task kind (a str, as status.json stores it)."""

    QUEUED, RUNNING = "queued", "running"  # a training job's active states
    LISTING, DOWNLOADING, EVALUATING = "listing", "downloading", "evaluating"  # a Hub import's, in order
    FINISHED, CANCELLED, FAILED = "finished", "cancelled", "failed"  # final, for every kind

    @classmethod
    def read(cls, value: object) -> TaskState:
        """A state read from a status file; anything else (a damaged or foreign file) reads as failed."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.FAILED


FINISHED, CANCELLED, FAILED = TaskState.FINISHED, TaskState.CANCELLED, TaskState.FAILED
RESUMABLE_STATES = (CANCELLED, FAILED)

# A worker that never recorded its pid (the server died between spawning it and writing pid.json) is taken for
# dead after this long without a heartbeat.
ORPHAN_TIMEOUT_S = 120.0


class TaskError(ICLError):
    """A task's files cannot be read, or the task cannot do what was asked."""


def read_json(path: Path) -> dict[str, Any]:
    """A task file's JSON object; TaskError if it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TaskError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(value, dict):
        raise TaskError(f"{path}: expected a JSON object")
    return value


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """The same, {} where there is nothing usable (a file being created right now)."""
    try:
        return read_json(path)
    except TaskError:
        return {}


def write_status(folder: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into status.json (atomically), refreshing the heartbeat; returns the new status."""
    status = read_json_or_empty(folder / STATUS_FILE)
    status.update(changes, heartbeat=time.time())
    atomic_write_json(folder / STATUS_FILE, status)
    return status


def start_worker(folder: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python ARGS` in a session of its own, logging to log.txt, its pid recorded; OSError if it cannot start
    (the caller records the failure in its own words)."""
    proc = spawn_python(args, folder / LOG_FILE, env)
    atomic_write_json(folder / PID_FILE, {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid)})
    return proc


def launched(folder: Path) -> tuple[int, int | None] | None:
    """(pid, start ticks) of the launched worker, or None before it is recorded."""
    found = read_json_or_empty(folder / PID_FILE)
    pid = found.get("pid")
    return (pid, found.get("start_ticks")) if isinstance(pid, int) else None


def launched_alive(folder: Path, status: dict[str, Any]) -> bool:
    """Whether the launched worker still runs; before its pid is recorded, whether a heartbeat is recent."""
    found = launched(folder)
    if found is None:
        last_sign = status.get("heartbeat") or status.get("created") or 0.0
        return time.time() - float(last_sign) < ORPHAN_TIMEOUT_S
    return pid_alive(*found)


def request_cancel(folder: Path) -> None:
    (folder / CANCEL_FILE).touch()


def cancel_requested(folder: Path) -> bool:
    return (folder / CANCEL_FILE).exists()


def clear_for_restart(folder: Path) -> None:
    """Before a task starts again: an earlier attempt's cancel marker, pid and half-written files must not judge
    the new one (its dead pid would read as a crash)."""
    for stale in (CANCEL_FILE, PID_FILE):
        (folder / stale).unlink(missing_ok=True)
    for tmp in folder.glob(".*.tmp"):  # left by a status write that was killed half-way
        tmp.unlink(missing_ok=True)


def tail_log(folder: Path, n: int = 40) -> str:
    """The last n lines of the task's log."""
    path = folder / LOG_FILE
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * max(n, 1) - 4096))  # logs lines are short; no need to read it all
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-n:]) if n > 0 else ""


def fraction(done: int, total: int) -> float:
    """How far a task is, 0..1."""
    return min(1.0, max(0.0, done / total)) if total else 0.0


class TaskProgress:
    """What the pages ask of any task's info: whether it is active or resumable, and how far it is. A task kind's
    info names its active states and says which of its fields hold its state and its counts."""

    ACTIVE: ClassVar[tuple[TaskState, ...]] = ()

    def progress_fields(self) -> tuple[TaskState, int, int]:
        """(state, done, total)."""
        raise NotImplementedError

    @property
    def active(self) -> bool:
        return self.progress_fields()[0] in self.ACTIVE

    @property
    def resumable(self) -> bool:
        return self.progress_fields()[0] in RESUMABLE_STATES

    @property
    def fraction(self) -> float:
        _, done, total = self.progress_fields()
        return fraction(done, total)
