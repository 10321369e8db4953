"""Training jobs: background tasks (icl_core.tasks.folder: status, pid, log, cancel in a folder of their own),
each training one run in a process of its own.

    <data_dir>/jobs/<job_id>/job.json     fixed facts: run name, run folder, processes, creation time
    <data_dir>/jobs/<job_id>/config.json  the TrainConfig
    <data_dir>/jobs/<job_id>/ranks/N.json every training process (DDP rank N; rank 0 alone without DDP)
    ... and the task files: status.json (state, step, tokens, loss, ETA), pid.json, log.txt, cancel

The run itself is written to user_runs_dir()/<run_name>, where discover_runs() finds it while it trains.

On a shared server (icl_core.server_policy) a visitor has one job at a time, and jobs start only while the
training processes already running leave room under the cap; the others wait in a queue (state queued,
"waiting" in status.json), oldest first, and start when a job ends (the worker's exit and every listing of
the jobs advance the queue).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from icl_core.errors import ConfigError
from icl_core.model.config import TrainConfig, train_config_from_dict
from icl_core.processes import folder_lock, pid_alive
from icl_core.server_policy import server_policy
from icl_core.storage.runs import SHIPPED_DIR, data_dir, user_runs_dir
from icl_core.storage.snapshots import atomic_write_json
from icl_core.tasks import folder
from icl_core.tasks.admission import check_admission, check_control
from icl_core.tasks.folder import (
    CANCELLED,
    FAILED,
    FINISHED,
    LOG_FILE,
    STATUS_FILE,
    TaskError,
    TaskState,
    read_json,
)
from icl_core.tasks.job_processes import (
    RANKS_DIR,
    JobError,
    crash_message,
    kill_group,
    launched_pid,
    processes,
    spawn,
    wait_dead,
    worker_alive,
)

JOB_FILE = "job.json"
CONFIG_FILE = "config.json"

QUEUED, RUNNING = TaskState.QUEUED, TaskState.RUNNING
ACTIVE_STATES = (QUEUED, RUNNING)
STATES = (*ACTIVE_STATES, FINISHED, CANCELLED, FAILED)  # a job's, the final ones shared by every task kind


@dataclass(frozen=True)
class JobInfo(folder.TaskProgress):
    job_id: str
    run_name: str
    state: TaskState  # queued, running, finished, cancelled or failed (a crashed worker is "failed")
    step: int
    total_steps: int
    tokens: int
    loss: float | None
    eta_s: float | None
    snapshots: int
    pid: int | None
    heartbeat: float | None  # time.time() of the worker's last status write
    created: float
    started: float | None
    ended: float | None
    device: str | None
    nproc: int
    attempts: int  # 1 + number of resumes
    error: str | None
    cancel_requested: bool
    job_dir: Path
    run_dir: Path
    waiting: bool = False  # queued for room under the server's process cap: no process yet
    owner: str | None = None  # the visitor who started it (one active job each on a shared server: tasks.admission)

    ACTIVE: ClassVar[tuple[TaskState, ...]] = ACTIVE_STATES

    def progress_fields(self) -> tuple[TaskState, int, int]:
        return self.state, self.step, self.total_steps


def jobs_dir() -> Path:
    return data_dir() / "jobs"


# ---------------------------------------------------------------- public API


def submit_job(cfg: TrainConfig | dict[str, Any], nproc: int = 1, owner: str | None = None) -> JobInfo:
    """Validate `cfg` and start training it in a new process (or queue it, on a shared server with no room);
    nproc > 1 runs DDP under torchrun. owner: the visitor asking (tasks.admission: a shared server's limits).

    Raises ConfigError, before any process starts, for an invalid config or a run name in use.
    """
    cfg = _validated(cfg)
    _check_runnable(cfg, nproc)
    try:
        return _create_job(cfg, nproc, owner)
    except OSError as exc:  # a full disk, a read-only data folder: one sentence, no server paths
        raise JobError(f"could not create the job: {exc.strerror or exc}") from exc


def _create_job(cfg: TrainConfig, nproc: int, owner: str | None) -> JobInfo:
    root = jobs_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _jobs_lock():
        check_admission([j for j in _read_all() if j.active], owner, nproc, server_policy())
        if _run_name_in_use(cfg.run_name):
            raise ConfigError(
                f"run name {cfg.run_name!r} is already used by a run or a job; choose another "
                f"(e.g. {suggest_run_name(cfg.run_name)!r})"
            )
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        job_dir = root / job_id
        job_dir.mkdir()
        now = time.time()
        atomic_write_json(
            job_dir / JOB_FILE,
            {
                "job_id": job_id,
                "run_name": cfg.run_name,
                "run_dir": str((user_runs_dir() / cfg.run_name).resolve()),
                "nproc": nproc,
                "created": now,
                "owner": owner,
            },
        )
        atomic_write_json(job_dir / CONFIG_FILE, cfg.to_dict())
        atomic_write_json(job_dir / STATUS_FILE, _initial_status(cfg, now))
        _schedule()
    return read_status(job_id)


def schedule(infos: list[JobInfo] | None = None) -> bool:
    """Start the waiting jobs the process cap has room for, oldest first; infos: every job, if just read.
    Returns whether any job was waiting (then the jobs' states may have changed)."""
    if not any(j.waiting for j in (infos if infos is not None else _read_all())):
        return False
    with _jobs_lock():
        _schedule()
    return True


def _schedule() -> None:
    """Under the jobs lock: start waiting jobs in order while running + theirs fits the cap (no job is bigger
    than the cap: _check_runnable refuses it); the queue is strict (a small job never overtakes a bigger one
    ahead of it), so none waits forever."""
    cap = server_policy().max_job_processes
    active = [j for j in _read_all() if j.active]
    running = sum(j.nproc for j in active if not j.waiting)
    for job in sorted((j for j in active if j.waiting), key=lambda j: (j.created, j.job_id)):
        if cap is not None and running > 0 and running + job.nproc > cap:
            break
        status = _read_status_dict(job.job_dir)
        status.update(waiting=False, heartbeat=time.time())
        atomic_write_json(job.job_dir / STATUS_FILE, status)
        try:
            spawn(job.job_dir, job.nproc)
        except JobError:  # recorded in its status as failed; the next one may still start
            continue
        running += job.nproc


def queue_positions() -> dict[str, int]:
    """1-based places in the queue of the jobs waiting for room under the process cap."""
    waiting = sorted((j for j in _read_all() if j.waiting and j.active), key=lambda j: (j.created, j.job_id))
    return {j.job_id: i + 1 for i, j in enumerate(waiting)}


def _read_all() -> list[JobInfo]:
    root = jobs_dir()
    if not root.is_dir():
        return []
    infos = []
    for child in root.iterdir():
        if child.is_dir() and (child / JOB_FILE).is_file():
            try:
                infos.append(read_status(child.name))
            except TaskError:
                continue  # a folder being created or removed right now
    return infos


def list_jobs() -> list[JobInfo]:
    """Every job on disk, newest first; crashed workers are detected and marked failed, and waiting jobs
    start if there is room now."""
    infos = _read_all()
    if schedule(infos):
        infos = _read_all()
    return sorted(infos, key=lambda j: (j.created, j.job_id), reverse=True)


def read_status(job_id: str) -> JobInfo:
    """The job's current state. A job whose worker is gone but whose status says active becomes failed."""
    job_dir = _job_dir(job_id)
    status = _read_status_dict(job_dir)
    if status.get("state") == CANCELLED and any(pid_alive(p, t) for p, t in processes(job_dir, status)):
        # Rank 0 said so, but a rank is still exiting: the job is not over until every process is.
        status = {**status, "state": RUNNING, "ended": None}
    elif status.get("state") in ACTIVE_STATES and not worker_alive(job_dir, status):
        status = _read_status_dict(job_dir)  # the worker may have written its last status and exited
        if status.get("state") in ACTIVE_STATES:
            if folder.cancel_requested(job_dir):  # it was asked to stop and is gone: that is a cancel
                status.update(state=CANCELLED, ended=time.time(), error=None)
            else:
                status.update(state=FAILED, ended=time.time(), error=crash_message(job_dir))
            atomic_write_json(job_dir / STATUS_FILE, status)
    return _to_info(job_dir, status)


def cancel_job(job_id: str, force: bool = False, by: str | None = None) -> JobInfo:
    """Ask the worker to stop; it saves a resume state at its next step. force=True kills it now
    (it then resumes from its last saved state). Cancelling an ended job changes nothing. by: the visitor asking
    (on a shared server only the one who started a job may stop, resume or remove it)."""
    info = read_status(job_id)
    check_control(info, by, server_policy())
    if not info.active:
        return info
    folder.request_cancel(info.job_dir)
    if info.waiting:  # no process yet: nothing to stop
        with _jobs_lock():
            status = _read_status_dict(info.job_dir)
            if status.get("waiting"):
                status.update(state=CANCELLED, waiting=False, ended=time.time(), error=None)
                atomic_write_json(info.job_dir / STATUS_FILE, status)
        return read_status(job_id)
    if force:
        for pid, ticks in processes(info.job_dir, _read_status_dict(info.job_dir)):
            if pid_alive(pid, ticks):
                kill_group(pid)
        wait_dead(info.job_dir, timeout=10.0)
        status = _read_status_dict(info.job_dir)
        if status.get("state") in ACTIVE_STATES and not worker_alive(info.job_dir, status):
            status.update(state=CANCELLED, ended=time.time(), error=None)
            atomic_write_json(info.job_dir / STATUS_FILE, status)
    schedule()
    return read_status(job_id)


def resume_job(job_id: str, by: str | None = None) -> JobInfo:
    """Start a cancelled or failed job again; training continues from the run's last resume state."""
    with _jobs_lock():
        info = read_status(job_id)
        check_control(info, by, server_policy())
        if not info.resumable:
            raise JobError(f"job {job_id} is {info.state}; only cancelled or failed jobs can be resumed")
        check_admission([j for j in _read_all() if j.active], info.owner, info.nproc, server_policy())
        job_dir = info.job_dir
        # Until spawn records the new worker, the fresh heartbeat below keeps the queued job alive for readers.
        folder.clear_for_restart(job_dir)
        status = _read_status_dict(job_dir)
        attempts = int(status.get("attempts") or 1) + 1
        status.update(state=QUEUED, error=None, ended=None, eta_s=None, heartbeat=time.time(), attempts=attempts)
        status.update(pid=None, pid_start_ticks=None, waiting=True)
        atomic_write_json(job_dir / STATUS_FILE, status)
        for rank_file in (job_dir / RANKS_DIR).glob("*.json"):  # the last attempt's processes
            rank_file.unlink(missing_ok=True)
        with (job_dir / LOG_FILE).open("a") as log:
            log.write(f"--- resume requested at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
        _schedule()
    return read_status(job_id)


def delete_job(job_id: str, by: str | None = None) -> None:
    """Forget an ended job (its folder under jobs/); the run it trained is kept."""
    import shutil

    info = read_status(job_id)
    check_control(info, by, server_policy())
    if info.active:
        raise JobError(f"job {job_id} is {info.state}; cancel it before removing it")
    shutil.rmtree(info.job_dir)


def tail_log(job_id: str, n: int = 40) -> str:
    """The last n lines of the job's log."""
    return folder.tail_log(_job_dir(job_id), n)


def suggest_run_name(base: str) -> str:
    """`base`, or base-2, base-3, ... : the first name no run or job uses."""
    if not _run_name_in_use(base):
        return base
    i = 2
    while _run_name_in_use(f"{base}-{i}"):
        i += 1
    return f"{base}-{i}"


# ---------------------------------------------------------------- checks


def _validated(cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
    if isinstance(cfg, TrainConfig):
        # Round-trip through the strict loader: it also catches wrong nested types a dataclass allows.
        return train_config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    if isinstance(cfg, dict):
        return train_config_from_dict(cfg)
    raise ConfigError(f"expected a TrainConfig or a mapping, got {type(cfg).__name__}")


def _check_runnable(cfg: TrainConfig, nproc: int) -> None:
    """What TrainConfig.validate cannot know: the machine, the process count, the probe lengths."""
    import torch

    from icl_core import data

    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ConfigError(f"number of processes must be a positive integer, got {nproc!r}")
    if cfg.batch_size % nproc:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({nproc})")
    policy = server_policy()
    if nproc > policy.cpu_count:  # more ranks than cores only slow every rank (and every visitor) down
        raise ConfigError(
            f"{nproc} processes asked for but this machine has {policy.cpu_count} CPU core(s): at most "
            f"{policy.cpu_count}"
        )
    if policy.max_job_processes is not None and nproc > policy.max_job_processes:
        raise ConfigError(
            f"{nproc} processes asked for but this shared server runs at most {policy.max_job_processes} training "
            "process(es) at once (the other cores serve the pages)"
        )
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("device 'cuda' was asked for but this machine has no CUDA GPU; use 'auto' or 'cpu'")
    if cfg.device != "cpu" and cuda and nproc > torch.cuda.device_count():
        raise ConfigError(f"{nproc} processes asked for but only {torch.cuda.device_count()} GPU(s) are present")
    # The evaluation's probes must fit the context, or the job would die at step 0. Checked from the config
    # alone: building the evaluation data here would hold it in the server's memory.
    try:
        data.prefix_matching_probe_shape(cfg.model.n_ctx)
    except ValueError as exc:
        raise ConfigError(f"model.n_ctx: {exc}") from exc


def _run_name_in_use(run_name: str) -> bool:
    # A shipped run of the same name would make two runs with one label in the run picker.
    if (user_runs_dir() / run_name).exists() or (SHIPPED_DIR / run_name).exists():
        return True
    root = jobs_dir()
    if root.is_dir():
        for child in root.iterdir():
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if json.loads((child / JOB_FILE).read_text()).get("run_name") == run_name:
                    return True
    return False


# ---------------------------------------------------------------- files


def _jobs_lock() -> contextlib.AbstractContextManager[None]:
    """Serialises submits and resumes across sessions and processes (two tabs racing for one name)."""
    return folder_lock(jobs_dir())


def _job_dir(job_id: str) -> Path:
    if not job_id or "/" in job_id or "\\" in job_id or job_id.startswith("."):
        raise JobError(f"invalid job id {job_id!r}")
    path = jobs_dir() / job_id
    if not (path / JOB_FILE).is_file():
        raise JobError(f"no job {job_id!r} under {jobs_dir()}")
    return path


def _read_status_dict(job_dir: Path) -> dict[str, Any]:
    return read_json(job_dir / STATUS_FILE)


def _initial_status(cfg: TrainConfig, now: float) -> dict[str, Any]:
    return {
        "state": QUEUED,
        "step": 0,
        "total_steps": cfg.total_steps,
        "tokens": 0,
        "loss": None,
        "eta_s": None,
        "snapshots": 0,
        "pid": None,  # the rank-0 worker's, written by the worker
        "pid_start_ticks": None,
        "heartbeat": None,
        "created": now,
        "started": None,
        "ended": None,
        "device": None,
        "attempts": 1,
        "error": None,
        "waiting": True,  # until _schedule starts it
    }


def _to_info(job_dir: Path, status: dict[str, Any]) -> JobInfo:
    job = read_json(job_dir / JOB_FILE)

    def opt_float(key: str) -> float | None:
        value = status.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    return JobInfo(
        job_id=job_dir.name,
        run_name=str(job.get("run_name", "")),
        state=TaskState.read(status.get("state", FAILED)),
        step=int(status.get("step") or 0),
        total_steps=int(status.get("total_steps") or 0),
        tokens=int(status.get("tokens") or 0),
        loss=opt_float("loss"),
        eta_s=opt_float("eta_s"),
        snapshots=int(status.get("snapshots") or 0),
        pid=launched_pid(job_dir),
        heartbeat=opt_float("heartbeat"),
        created=float(job.get("created", status.get("created") or 0.0)),
        started=opt_float("started"),
        ended=opt_float("ended"),
        device=status.get("device"),
        nproc=int(job.get("nproc", 1)),
        attempts=int(status.get("attempts") or 1),
        error=status.get("error"),
        cancel_requested=folder.cancel_requested(job_dir),
        job_dir=job_dir,
        run_dir=Path(job.get("run_dir", user_runs_dir() / str(job.get("run_name", "")))),
        waiting=bool(status.get("waiting")) and str(status.get("state")) == QUEUED,
        owner=job.get("owner") if isinstance(job.get("owner"), str) else None,
    )
