"""Background worker processes (training jobs, Hub imports): started in sessions of their own, told apart from
later processes that reuse their pid, and reaped so that a finished one never looks alive."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from icl_core.paths import REPO_ROOT

# Popen objects of workers this process started, so their exit is reaped (no zombies that look alive).
CHILDREN: dict[int, subprocess.Popen] = {}


def spawn_python(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python ARGS` in a new session (it survives the server's Ctrl-C and can be killed as a group), stdout and
    stderr appended to log_path; env adds to this process's environment. OSError if it cannot start."""
    full_env = dict(os.environ, **(env or {}))
    # The worker must import icl_core whatever folder the app was started from.
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH")) if p)
    full_env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    CHILDREN[proc.pid] = proc
    return proc


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of pid (Linux), to tell our worker from a later process given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 of /proc/<pid>/stat, counted after the command name


def pid_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether pid is still the process that had start_ticks (None: any process with that pid) and not a zombie."""
    proc = CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            return False
    else:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child (e.g. after a module reload)
            if done == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else: judged by its start time below
    if start_ticks is not None:
        ticks = process_start_ticks(pid)
        if ticks is not None and ticks != start_ticks:
            return False
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                return False
    return True


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on `root` across sessions and processes (two tabs starting the same job at once)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        yield
        return
    with (root / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
