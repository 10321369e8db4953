"""One writer per run folder: a training job and a command-line run must never write the same run at once.

An exclusive flock on <run>/.writer.lock, held for the life of the writer. The kernel drops it when the
process dies (even by SIGKILL), so a crashed run never stays locked and can be resumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from icl_core.errors import CheckpointError

WRITER_LOCK = ".writer.lock"


@contextlib.contextmanager
def run_writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's writer lock, or raise CheckpointError at once if another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(
                run_dir,
                f"another process (pid {holder}) is writing this run right now: wait for it to finish, "
                "or cancel its job, before training this run again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def being_written(run_dir: Path) -> bool:
    """Whether a process holds the run's writer lock now (a training job writing snapshots into it)."""
    try:
        fd = os.open(Path(run_dir) / WRITER_LOCK, os.O_RDONLY)
    except OSError:  # no lock file: never written by a job here (the shipped runs), or unreadable
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock taken just now
    return False
