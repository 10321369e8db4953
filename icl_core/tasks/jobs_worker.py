"""The process a training job runs in (started by icl_core.tasks.jobs).

Usage: `python -m icl_core.tasks.jobs_worker JOB_DIR`.

Under torchrun every rank runs this; rank 0 alone writes status.json, and train() shares rank 0's
reading of the cancel marker with the other ranks.

ICL_JOB_STEP_DELAY_S (seconds, default 0) slows every step down: tests and demos use it to have a
tiny job still running when they cancel or kill it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from icl_core.errors import ICLError
from icl_core.model.config import load_train_config
from icl_core.processes import process_start_ticks
from icl_core.server_policy import JOB_NICE, server_policy
from icl_core.storage.snapshots import atomic_write_json
from icl_core.tasks import folder
from icl_core.tasks.folder import CANCELLED, FAILED, FINISHED, read_json
from icl_core.tasks.jobs import CONFIG_FILE, JOB_FILE, RANKS_DIR, RUNNING, schedule


class _StatusWriter:
    """status.json of the job, written by rank 0 only (every write refreshes the heartbeat)."""

    def __init__(self, job_dir: Path, is_main: bool) -> None:
        self.job_dir = job_dir
        self.is_main = is_main
        self.status = read_json(job_dir / folder.STATUS_FILE)

    def write(self, **changes: Any) -> None:
        if self.is_main:
            self.status = folder.write_status(self.job_dir, **changes)

    def say(self, line: str) -> None:
        if self.is_main:
            print(line, flush=True)


def _stop_check(job_dir: Path, stop: dict[str, bool]) -> Callable[[], bool]:
    delay = float(os.environ.get("ICL_JOB_STEP_DELAY_S", "0") or 0)

    def should_stop() -> bool:
        if delay:
            time.sleep(delay)
        return stop["signal"] or folder.cancel_requested(job_dir)

    return should_stop


def _train_job(job_dir: Path, out: _StatusWriter, stop: dict[str, bool]) -> None:
    import torch

    from icl_core.training.resume import RESUME_META, has_resume_state
    from icl_core.training.train import pick_device, train

    cfg = load_train_config(job_dir / CONFIG_FILE)
    run_dir = Path(read_json(job_dir / JOB_FILE)["run_dir"])
    device = pick_device(cfg.device)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Leave a core to the app: on a small CPU, oversubscribed threads make every op crawl.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    resumed_at = int(read_json(run_dir / RESUME_META)["step"]) if has_resume_state(run_dir) else 0
    world = int(os.environ.get("WORLD_SIZE", 1))
    out.write(
        state=RUNNING,
        pid=os.getpid(),
        pid_start_ticks=process_start_ticks(os.getpid()),
        started=out.status.get("started") or time.time(),
        device=f"{device.type} x{world}",
        step=resumed_at,
        error=None,
    )
    out.say(f"job {job_dir.name}: training {cfg.run_name} on {device} x{world} from step {resumed_at}")

    def progress(p: dict[str, Any]) -> None:
        out.write(step=p["step"], tokens=p["tokens"], loss=p["loss"], eta_s=p["eta_s"], snapshots=p["snapshots"])
        out.say(f"step {p['step']}/{p['total_steps']} loss {p['loss']:.4f} tokens {p['tokens']} eta {p['eta_s']:.0f}s")

    result = train(
        cfg,
        run_dir,
        resume=True,
        progress=progress,
        should_stop=_stop_check(job_dir, stop),
        command=f"{sys.executable} -m icl_core.tasks.jobs_worker {job_dir}",
    )
    if result == FINISHED and int(os.environ.get("RANK", 0)) == 0:
        _store_analyses(run_dir, out)
    meta = read_json(run_dir / RESUME_META)
    out.write(
        state=result,
        step=int(meta["step"]),
        tokens=int(meta["tokens_seen"]),
        snapshots=len(list(run_dir.glob("step_*.json"))),  # progress last counted before the final snapshot
        eta_s=0.0 if result != CANCELLED else None,
        ended=time.time(),
    )
    out.say(f"job {job_dir.name}: {result} at step {meta['step']}")


def _store_analyses(run_dir: Path, out: _StatusWriter) -> None:
    """The run's slow analyses (every head ablated at every snapshot, attribution over training), stored beside
    its snapshots so its pages show them at once, as the shipped runs' do. Best effort: a failure here is
    logged and leaves a finished run, whose pages then compute on demand."""
    from icl_core.analysis.precompute import precompute_run

    out.say(f"storing the slow analyses of {run_dir.name} (ablation tables, attribution over training)")
    try:
        precompute_run(run_dir, say=out.say)
    except Exception as exc:  # noqa: BLE001 - the run itself is complete either way
        out.say(f"analyses not stored: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m icl_core.tasks.jobs_worker JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(args[0]).resolve()
    stop = {"signal": False}

    def on_term(signum: int, frame: Any) -> None:
        # A polite kill (SIGTERM, e.g. from a container stop) saves a resume state like a cancel does.
        stop["signal"] = True

    signal.signal(signal.SIGTERM, on_term)
    if server_policy().shared:
        os.nice(JOB_NICE)
    rank = int(os.environ.get("RANK", 0))
    # Every process of the job on disk, so a cancel can end them all (torchrun's ranks outlive their launcher).
    (job_dir / RANKS_DIR).mkdir(exist_ok=True)
    atomic_write_json(
        job_dir / RANKS_DIR / f"{rank}.json", {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}
    )
    out = _StatusWriter(job_dir, is_main=rank == 0)
    try:
        _train_job(job_dir, out, stop)
        return 0
    except BaseException as exc:  # noqa: BLE001 - whatever went wrong must reach status.json
        traceback.print_exc()
        message = str(exc) if isinstance(exc, ICLError) else f"{type(exc).__name__}: {exc}"
        out.write(state=FAILED, error=message, ended=time.time())
        return 1
    finally:
        if rank == 0:  # the queue advances as soon as a job ends, whether or not a page is open
            with contextlib.suppress(Exception):
                schedule()


if __name__ == "__main__":
    sys.exit(main())
