"""Imports of published training runs (tl_hub) in the background: download, convert and evaluate one checkpoint
at a time, in a process of its own, with all of its state in a folder on disk.

    <data_dir>/imports/<run folder name>/request.json  repo, revision, how many checkpoints
    <data_dir>/imports/<run folder name>/status.json   stage, counts, bytes, message, error, heartbeat (atomic)
    <data_dir>/imports/<run folder name>/pid.json      the worker process
    <data_dir>/imports/<run folder name>/log.txt       its stdout and stderr
    <data_dir>/imports/<run folder name>/cancel        present once a cancel was asked for

As for training jobs, nothing lives in the app's memory: every browser session sees the same imports, and one
outlives a rerun. A cancelled or crashed import resumes where it stopped: converted checkpoints stay in the
staging folder (tl_hub), the HF cache keeps finished downloads, and each evaluated checkpoint is stored at once.
An access token reaches the worker in its environment only, never on disk.

Usage of the worker: `python -m icl_core.storage.imports IMPORT_DIR`.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icl_core.errors import HubError, ICLError
from icl_core.processes import folder_lock, pid_alive, process_start_ticks, spawn_python
from icl_core.storage import hub, tl_hub
from icl_core.storage.runs import data_dir
from icl_core.storage.snapshots import atomic_write_json

REQUEST_FILE, STATUS_FILE, PID_FILE, LOG_FILE, CANCEL_FILE = (
    "request.json", "status.json", "pid.json", "log.txt", "cancel",
)  # fmt: skip
# Stages, in order; the last three are final.
LISTING, DOWNLOADING, EVALUATING = "listing", "downloading", "evaluating"
FINISHED, CANCELLED, FAILED = "finished", "cancelled", "failed"
ACTIVE_STAGES = (LISTING, DOWNLOADING, EVALUATING)


class ImportCancelled(ICLError):
    """The visitor asked the import to stop."""


@dataclass(frozen=True)
class ImportInfo:
    key: str  # the run folder's name: one import per repo and revision
    repo_id: str
    revision: str
    n_checkpoints: int
    tokens_per_step: int | None
    stage: str
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

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE_STAGES

    @property
    def resumable(self) -> bool:
        return self.stage in (CANCELLED, FAILED)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


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
    folder = imports_dir() / tl_hub.run_dir_for(repo).name
    with folder_lock(imports_dir()):  # two sessions pressing start at once get one worker
        if folder.exists() and read_import(folder).active:
            raise HubError(f"{repo.repo_id} is being imported already: see its progress below.")
        return _spawn_import(folder, repo, n_checkpoints, token, tokens_per_step)


def _spawn_import(
    folder: Path, repo: tl_hub.TLRepo, n_checkpoints: int, token: str | None, tokens_per_step: int | None
) -> ImportInfo:
    folder.mkdir(parents=True, exist_ok=True)
    # An earlier attempt's marker and pid must not judge this one (its dead pid would read as a crash).
    for stale in (CANCEL_FILE, PID_FILE):
        (folder / stale).unlink(missing_ok=True)
    request = {
        "repo_id": repo.repo_id, "revision": repo.revision, "n_checkpoints": int(n_checkpoints),
        "tokens_per_step": int(tokens_per_step) if tokens_per_step else None,
    }  # fmt: skip
    atomic_write_json(folder / REQUEST_FILE, request)
    now = time.time()
    atomic_write_json(folder / STATUS_FILE, {"stage": LISTING, "message": "starting", "started": now, "heartbeat": now})
    try:
        proc = spawn_python(
            ["-m", "icl_core.storage.imports", str(folder)], folder / LOG_FILE, {"HF_TOKEN": token} if token else None
        )
    except OSError as exc:
        _write_status(folder, stage=FAILED, error=f"could not start the import process: {exc}", ended=time.time())
        raise HubError(f"could not start the import process: {exc}") from exc
    atomic_write_json(folder / PID_FILE, {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid)})
    return read_import(folder)


def resume_import(info: ImportInfo, token: str | None = None) -> ImportInfo:
    """Start a cancelled or failed import again, with the same choice of checkpoints."""
    repo = tl_hub.list_repo(info.repo_id, info.revision, token)
    return start_import(repo, info.n_checkpoints, token, info.tokens_per_step)


def cancel_import(info: ImportInfo) -> None:
    """Ask the worker to stop at its next checkpoint; what it finished is kept."""
    (info.import_dir / CANCEL_FILE).touch()


def list_imports() -> list[ImportInfo]:
    """Every import this data folder has seen, newest first."""
    root = imports_dir()
    if not root.is_dir():
        return []
    found = [read_import(d) for d in root.iterdir() if (d / REQUEST_FILE).is_file()]
    return sorted(found, key=lambda i: -i.started)


def read_import(folder: Path) -> ImportInfo:
    """The import's state; a worker that died without saying so is reported as failed (resumable)."""
    request = _read(folder / REQUEST_FILE)
    status = _read(folder / STATUS_FILE)
    stage = str(status.get("stage", FAILED))
    error = status.get("error")
    if stage in ACTIVE_STAGES and not _worker_alive(folder):
        stage = FAILED
        error = error or f"the import process stopped unexpectedly (see {folder / LOG_FILE}); resume it to continue"
    return ImportInfo(
        key=folder.name,
        repo_id=str(request.get("repo_id", folder.name)),
        revision=str(request.get("revision", "main")),
        n_checkpoints=int(request.get("n_checkpoints", tl_hub.DEFAULT_CHECKPOINTS)),
        tokens_per_step=request.get("tokens_per_step"),
        stage=stage,
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


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _worker_alive(folder: Path) -> bool:
    launched = _read(folder / PID_FILE)
    pid = launched.get("pid")
    if not isinstance(pid, int):
        # Spawned this instant, its pid not yet written: give it the time a start takes.
        return time.time() - float(_read(folder / STATUS_FILE).get("heartbeat", 0.0)) < 30
    return pid_alive(pid, launched.get("start_ticks"))


def _write_status(folder: Path, **changes: Any) -> None:
    status = _read(folder / STATUS_FILE)
    status.update(changes, heartbeat=time.time())
    atomic_write_json(folder / STATUS_FILE, status)


# ---------------------------------------------------------------- the worker


def run_import(folder: Path) -> None:
    """What the worker does: list, then download, convert and evaluate one checkpoint at a time (the disk holds
    one published checkpoint at most); status.json says where it is."""
    from icl_core.analysis.evaluation import evaluate_run, evaluate_snapshot

    request = _read(folder / REQUEST_FILE)

    def check_cancel() -> None:
        if (folder / CANCEL_FILE).exists():
            raise ImportCancelled("cancelled")

    _write_status(folder, stage=LISTING, message=f"reading {request['repo_id']}'s file list", error=None, ended=None)
    repo = tl_hub.list_repo(request["repo_id"], request.get("revision"))
    chosen = tl_hub.choose(repo, int(request["n_checkpoints"]))
    total_bytes = repo.download_bytes(chosen)
    _write_status(
        folder, stage=DOWNLOADING, done=0, total=len(chosen), done_bytes=0, total_bytes=total_bytes,
        message=tl_hub.describe(repo, chosen),
    )  # fmt: skip

    def downloaded(p: hub.DownloadProgress) -> None:
        _write_status(folder, done=p.files_done, done_bytes=p.bytes_done, message=p.message)
        check_cancel()

    run_dir = tl_hub.import_checkpoints(
        repo, chosen, progress=downloaded, tokens_per_step=request.get("tokens_per_step"),
        on_snapshot=evaluate_snapshot,
    )  # fmt: skip
    _write_status(folder, stage=EVALUATING, done=0, total=len(chosen), run_dir=str(run_dir), message="evaluating")

    def evaluated(i: int, n: int) -> None:
        _write_status(folder, done=i, total=n, message=f"evaluated {i} of {n} checkpoints")
        check_cancel()

    evaluate_run(run_dir, progress=evaluated)  # what an earlier attempt converted but did not evaluate
    _write_status(folder, stage=FINISHED, done=len(chosen), total=len(chosen), message="ready", ended=time.time())


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    try:
        run_import(folder)
    except ImportCancelled:
        _write_status(folder, stage=CANCELLED, message="cancelled", ended=time.time())
        return 0
    except ICLError as exc:
        _write_status(folder, stage=FAILED, error=str(exc), ended=time.time())
        return 1
    except Exception as exc:  # the log keeps the traceback; the page shows one sentence
        traceback.print_exc()
        _write_status(folder, stage=FAILED, error=f"{type(exc).__name__}: {exc}", ended=time.time())
        return 1
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
