"""Imports of published training runs (tl_hub) in the background: background tasks (icl_core.tasks.folder:
status, pid, log, cancel in a folder of their own) that download, convert and evaluate one checkpoint at a time.

    <data_dir>/imports/<run folder name>/request.json  repo, revision, how many checkpoints
    ... and the task files: status.json (stage, counts, bytes, message, error), pid.json, log.txt, cancel

A cancelled or crashed import resumes where it stopped: converted checkpoints stay in the staging folder
(tl_hub), the HF cache keeps finished downloads, and each evaluated checkpoint is stored at once. An access
token reaches the worker in its environment only, never on disk.

Usage of the worker: `python -m icl_core.tasks.imports IMPORT_DIR` (in the foreground, from the command line:
icl_core.tasks.import_cli).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from icl_core.analysis.evaluation import evaluate_run, evaluate_snapshot
from icl_core.errors import HubError, ICLError
from icl_core.processes import folder_lock
from icl_core.storage import hub, tl_hub
from icl_core.storage.runs import data_dir
from icl_core.storage.snapshots import atomic_write_json
from icl_core.tasks import folder as task
from icl_core.tasks.folder import (
    CANCELLED,
    FAILED,
    FINISHED,
    LOG_FILE,
    STATUS_FILE,
    TaskState,
    read_json_or_empty,
    write_status,
)

REQUEST_FILE = "request.json"
LISTING, DOWNLOADING, EVALUATING = TaskState.LISTING, TaskState.DOWNLOADING, TaskState.EVALUATING  # in order
ACTIVE_STAGES = (LISTING, DOWNLOADING, EVALUATING)
STAGES = (*ACTIVE_STAGES, FINISHED, CANCELLED, FAILED)  # the final ones shared by every task kind


class ImportCancelled(ICLError):
    """The visitor asked the import to stop."""


@dataclass(frozen=True)
class ImportInfo(task.TaskProgress):
    key: str  # the run folder's name: one import per repo and revision
    repo_id: str
    revision: str
    n_checkpoints: int
    tokens_per_step: int | None
    state: TaskState
    done: int  # checkpoints downloaded (downloading) or evaluated (evaluating)
    total: int
    done_bytes: int
    total_bytes: int
    message: str
    error: str | None
    run_dir: str | None  # once the run is in place (after the download)
    started: float
    ended: float | None
    import_dir: Path

    ACTIVE: ClassVar[tuple[TaskState, ...]] = ACTIVE_STAGES

    def progress_fields(self) -> tuple[TaskState, int, int]:
        return self.state, self.done, self.total


def imports_dir() -> Path:
    return data_dir() / "imports"


def start_import(
    repo: tl_hub.TLRepo, n_checkpoints: int, token: str | None = None, tokens_per_step: int | None = None
) -> ImportInfo:
    """Start importing `n_checkpoints` log-spaced checkpoints of a listed repo (tl_hub.list_repo) and evaluating
    them; HubError if an import of the same repo is running. A finished, cancelled or failed one is redone
    (the cache and the converted checkpoints make that cheap). tokens_per_step: for step-labelled checkpoints."""
    if n_checkpoints < 2:
        raise HubError("pick at least 2 checkpoints")
    import_dir = imports_dir() / tl_hub.run_dir_for(repo).name
    with folder_lock(imports_dir()):  # two sessions pressing start at once get one worker
        if import_dir.exists() and read_import(import_dir).active:
            raise HubError(f"{repo.repo_id} is being imported already: see its progress below.")
        return _spawn_import(import_dir, repo, n_checkpoints, token, tokens_per_step)


def _spawn_import(
    folder: Path, repo: tl_hub.TLRepo, n_checkpoints: int, token: str | None, tokens_per_step: int | None
) -> ImportInfo:
    folder.mkdir(parents=True, exist_ok=True)
    task.clear_for_restart(folder)
    request = {
        "repo_id": repo.repo_id, "revision": repo.revision, "n_checkpoints": int(n_checkpoints),
        "tokens_per_step": int(tokens_per_step) if tokens_per_step else None,
    }  # fmt: skip
    atomic_write_json(folder / REQUEST_FILE, request)
    now = time.time()
    atomic_write_json(folder / STATUS_FILE, {"stage": LISTING, "message": "starting", "started": now, "heartbeat": now})
    try:
        task.start_worker(folder, ["-m", "icl_core.tasks.imports", str(folder)], {"HF_TOKEN": token} if token else None)
    except OSError as exc:
        write_status(folder, stage=FAILED, error=f"could not start the import process: {exc}", ended=time.time())
        raise HubError(f"could not start the import process: {exc}") from exc
    return read_import(folder)


def resume_import(info: ImportInfo, token: str | None = None) -> ImportInfo:
    """Start a cancelled or failed import again, with the same choice of checkpoints."""
    repo = tl_hub.list_repo(info.repo_id, info.revision, token)
    return start_import(repo, info.n_checkpoints, token, info.tokens_per_step)


def cancel_import(info: ImportInfo) -> None:
    """Ask the worker to stop at its next checkpoint; what it finished is kept."""
    task.request_cancel(info.import_dir)


def list_imports() -> list[ImportInfo]:
    """Every import this data folder has seen, newest first."""
    root = imports_dir()
    if not root.is_dir():
        return []
    found = [read_import(d) for d in root.iterdir() if (d / REQUEST_FILE).is_file()]
    return sorted(found, key=lambda i: -i.started)


def read_import(folder: Path) -> ImportInfo:
    """The import's state; a worker that died without saying so is reported as failed (resumable)."""
    request = read_json_or_empty(folder / REQUEST_FILE)
    status = read_json_or_empty(folder / STATUS_FILE)
    state = TaskState.read(status.get("stage", FAILED))  # status.json's key for an import's state
    error = status.get("error")
    if state in ACTIVE_STAGES and not task.launched_alive(folder, status):
        state = FAILED
        error = error or f"the import process stopped unexpectedly (see {folder / LOG_FILE}); resume it to continue"
    return ImportInfo(
        key=folder.name,
        repo_id=str(request.get("repo_id", folder.name)),
        revision=str(request.get("revision", "main")),
        n_checkpoints=int(request.get("n_checkpoints", tl_hub.DEFAULT_CHECKPOINTS)),
        tokens_per_step=request.get("tokens_per_step"),
        state=state,
        done=int(status.get("done", 0)),
        total=int(status.get("total", 0)),
        done_bytes=int(status.get("done_bytes", 0)),
        total_bytes=int(status.get("total_bytes", 0)),
        message=str(status.get("message", "")),
        error=str(error) if error else None,
        run_dir=status.get("run_dir"),
        started=float(status.get("started", 0.0)),
        ended=status.get("ended"),
        import_dir=folder,
    )


# ---------------------------------------------------------------- the worker


def run_import(folder: Path) -> None:
    """What the worker does: list, then download, convert and evaluate one checkpoint at a time (the disk holds
    one published checkpoint at most); status.json says where it is."""
    request = read_json_or_empty(folder / REQUEST_FILE)

    def check_cancel() -> None:
        if task.cancel_requested(folder):
            raise ImportCancelled("cancelled")

    write_status(folder, stage=LISTING, message=f"reading {request['repo_id']}'s file list", error=None, ended=None)
    repo = tl_hub.list_repo(request["repo_id"], request.get("revision"))
    chosen = tl_hub.choose(repo, int(request["n_checkpoints"]))
    total_bytes = repo.download_bytes(chosen)
    write_status(
        folder, stage=DOWNLOADING, done=0, total=len(chosen), done_bytes=0, total_bytes=total_bytes,
        message=tl_hub.describe(repo, chosen),
    )  # fmt: skip

    def downloaded(p: hub.DownloadProgress) -> None:
        write_status(folder, done=p.files_done, done_bytes=p.bytes_done, message=p.message)
        check_cancel()

    run_dir = tl_hub.import_checkpoints(
        repo, chosen, progress=downloaded, tokens_per_step=request.get("tokens_per_step"),
        on_snapshot=evaluate_snapshot,
    )  # fmt: skip
    write_status(folder, stage=EVALUATING, done=0, total=len(chosen), run_dir=str(run_dir), message="evaluating")

    def evaluated(i: int, n: int) -> None:
        write_status(folder, done=i, total=n, message=f"evaluated {i} of {n} checkpoints")
        check_cancel()

    evaluate_run(run_dir, progress=evaluated)  # what an earlier attempt converted but did not evaluate
    write_status(folder, stage=FINISHED, done=len(chosen), total=len(chosen), message="ready", ended=time.time())


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    try:
        run_import(folder)
    except ImportCancelled:
        write_status(folder, stage=CANCELLED, message="cancelled", ended=time.time())
        return 0
    except ICLError as exc:
        write_status(folder, stage=FAILED, error=str(exc), ended=time.time())
        return 1
    except Exception as exc:  # the log keeps the traceback; the page shows one sentence
        traceback.print_exc()
        write_status(folder, stage=FAILED, error=f"{type(exc).__name__}: {exc}", ended=time.time())
        return 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
