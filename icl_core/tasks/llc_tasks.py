"""The LLC of a run's every snapshot, estimated in the background on demand (icl_core.analysis.llc_over_training):
a background task like the others (icl_core.tasks.folder: status, pid, log, cancel in a folder of its own).

    <data_dir>/llc/<run folder name>/request.json  the run folder
    ... and the task files: status.json (state, done, total, message, error), pid.json, log.txt, cancel

The estimates are written beside the run after every snapshot, so a cancelled or crashed task loses at most the
one it was on, and starting it again goes on from there. One runs at a time on a server (each takes both cores
for minutes, at the training jobs' low priority), started by anyone, stopped only by whoever started it.

Usage of the worker: `python -m icl_core.tasks.llc_tasks TASK_DIR`.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from icl_core.analysis import costs, llc, precompute
from icl_core.analysis.llc_over_training import llc_over_training
from icl_core.errors import ICLError
from icl_core.processes import folder_lock
from icl_core.server_policy import JOB_NICE
from icl_core.storage.runs import data_dir
from icl_core.storage.snapshots import SnapshotInfo, atomic_write_json, scan_snapshots
from icl_core.tasks import folder as task
from icl_core.tasks.folder import CANCELLED, FAILED, FINISHED, LOG_FILE, STATUS_FILE, TaskState, read_json_or_empty

REQUEST_FILE = "request.json"
RUNNING = TaskState.RUNNING


@dataclass(frozen=True)
class LLCTaskInfo(task.TaskProgress):
    run_dir: Path
    owner: str | None
    state: TaskState
    done: int  # snapshots estimated
    total: int
    message: str
    error: str | None
    started: float
    task_dir: Path

    ACTIVE: ClassVar[tuple[TaskState, ...]] = (RUNNING,)

    def progress_fields(self) -> tuple[TaskState, int, int]:
        return self.state, self.done, self.total


def llc_tasks_dir() -> Path:
    return data_dir() / "llc"


def estimated_seconds(snaps: Sequence[SnapshotInfo]) -> float:
    """What estimating these snapshots costs with the app's settings (costs.llc_seconds)."""
    s = llc.DEFAULT_SETTINGS
    return costs.llc_seconds(snaps[-1].model_config, len(snaps), s.n_chains, s.n_steps, s.batch_size)


def can_store(run_dir: Path) -> bool:
    """Whether estimates can be written beside the run (not in a read-only image's shipped runs): tried, since
    permissions alone do not say it (root ignores them; a read-only filesystem refuses everyone)."""
    probe = precompute.analysis_path(run_dir, ".write-probe")
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def task_dir_for(run_dir: Path) -> Path:
    return llc_tasks_dir() / Path(run_dir).name


def start_llc_task(run_dir: Path, owner: str | None = None) -> LLCTaskInfo:
    """Start (or resume) estimating the run's LLC; task.TaskError if one is already running on this server or the
    run cannot be written to (a shipped run in a read-only image carries its estimates already)."""
    run_dir = Path(run_dir)
    if not can_store(run_dir):
        raise task.TaskError(f"{run_dir.name}'s folder is read-only here: its estimates cannot be stored")
    folder = task_dir_for(run_dir)
    root = llc_tasks_dir()
    root.mkdir(parents=True, exist_ok=True)
    with folder_lock(root):  # two visitors pressing start at once get one worker
        busy = [t for t in list_llc_tasks() if t.active]
        if busy:
            raise task.TaskError(
                f"the LLC of {busy[0].run_dir.name} is being estimated ({busy[0].done} of {busy[0].total} "
                "snapshots): one at a time on this server, try again when it ends"
            )
        folder.mkdir(parents=True, exist_ok=True)
        task.clear_for_restart(folder)
        atomic_write_json(folder / REQUEST_FILE, {"run_dir": str(run_dir), "owner": owner})
        now = time.time()
        atomic_write_json(
            folder / STATUS_FILE, {"state": RUNNING, "message": "starting", "started": now, "heartbeat": now}
        )
        try:
            task.start_worker(folder, ["-m", "icl_core.tasks.llc_tasks", str(folder)])
        except OSError as exc:
            task.write_status(folder, state=FAILED, error=f"could not start the process: {exc}")
            raise task.TaskError(f"could not start the LLC process: {exc}") from exc
    return read_llc_task(folder)


def cancel_llc_task(info: LLCTaskInfo, owner: str | None = None) -> None:
    """Ask the worker to stop after the snapshot it is on; only whoever started it may (task.TaskError)."""
    if info.owner is not None and owner != info.owner:
        raise task.TaskError("only the visitor who started this estimate can stop it")
    task.request_cancel(info.task_dir)


def read_llc_task(folder: Path) -> LLCTaskInfo:
    """The task's state; a worker that died without saying so is reported as failed (resumable)."""
    request = read_json_or_empty(folder / REQUEST_FILE)
    status = read_json_or_empty(folder / STATUS_FILE)
    state = TaskState.read(status.get("state", FAILED))
    error = status.get("error")
    if state == RUNNING and not task.launched_alive(folder, status):
        state = FAILED
        error = error or f"the LLC process stopped unexpectedly (see {folder / LOG_FILE}); start it again to go on"
    return LLCTaskInfo(
        run_dir=Path(str(request.get("run_dir", folder.name))),
        owner=request.get("owner"),
        state=state,
        done=int(status.get("done", 0)),
        total=int(status.get("total", 0)),
        message=str(status.get("message", "")),
        error=str(error) if error else None,
        started=float(status.get("started", 0.0)),
        task_dir=folder,
    )


def list_llc_tasks() -> list[LLCTaskInfo]:
    root = llc_tasks_dir()
    if not root.is_dir():
        return []
    return [read_llc_task(d) for d in sorted(root.iterdir()) if (d / REQUEST_FILE).is_file()]


def llc_task_of(run_dir: Path) -> LLCTaskInfo | None:
    folder = task_dir_for(run_dir)
    return read_llc_task(folder) if (folder / REQUEST_FILE).is_file() else None


# ---------------------------------------------------------------- the worker


def run_llc_task(folder: Path) -> None:
    request = read_json_or_empty(folder / REQUEST_FILE)
    run_dir = Path(request["run_dir"])
    total = len(scan_snapshots(run_dir).snapshots)
    task.write_status(folder, state=RUNNING, done=0, total=total, message="estimating", error=None)

    def progress(done: int, n: int) -> None:
        task.write_status(folder, done=done, total=n, message=f"{done} of {n} snapshots estimated")

    finished = llc_over_training(run_dir, progress=progress, should_stop=lambda: task.cancel_requested(folder))
    if finished:
        task.write_status(folder, state=FINISHED, done=total, message="ready")
    else:
        task.write_status(folder, state=CANCELLED, message="stopped; start it again to go on")


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    try:
        os.nice(JOB_NICE)
    except OSError:
        pass
    try:
        run_llc_task(folder)
    except ICLError as exc:
        task.write_status(folder, state=FAILED, error=str(exc))
        return 1
    except Exception as exc:  # the log keeps the traceback; the page shows one sentence
        traceback.print_exc()
        task.write_status(folder, state=FAILED, error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
