"""How the app server process runs: one torch thread for the pages' small forwards, and the long-lived objects of
the first page run kept out of the garbage collector's full scans."""

from __future__ import annotations

import contextlib
import functools
import gc
import threading
import time
from collections.abc import Callable

import torch

APP_TORCH_THREADS = 1


def limit_torch_threads() -> None:
    """One torch thread for the app server (called by explorer.py).

    Its forwards and weight analyses are tiny matrix products on two cores shared with the visitors' browsers
    and other sessions: a second thread's spin-waiting made a forward 3x slower while the browser drew the page
    (2.0 vs 5.9 ms per 72-token forward of attn2 beside a busy core), and the over-training loop went from 3 s
    to minutes. Alone, 512 tokens take 17 ms on one thread (11 on two). A large imported model's forwards get
    a second thread (storage.model_cache.LoadedModel.use).
    """
    torch.set_num_threads(APP_TORCH_THREADS)


_frozen = threading.Event()


def freeze_long_lived_objects() -> None:
    """Once per process, after the first page run: move every object alive then (torch, pandas, Altair, the
    loaded caches) out of the garbage collector's reach. A full collection scanned them all, 140-200 ms every
    ~30 s of use (gc callbacks, latency benchmark); the collector still tracks everything created later, and
    refcounting frees frozen objects as usual."""
    if not _frozen.is_set():
        _frozen.set()
        gc.freeze()


TRIM_EVERY_S = 30.0  # how often the trimmer looks at the session count
_trimmer = threading.Event()


def start_memory_trimmer() -> None:
    """Once per process: a thread that gives memory back to the system after visitors leave.

    A closed tab's session may be dropped after server.disconnectedSessionTTL (120 s; _session_count drops it),
    but the memory its script runs used stays in the C allocator's free lists, so the server's RSS only ever
    grew (1.3 GB five minutes after 60 visitors left, issue 35). When the session count has fallen since the
    last look, this collects the cycles (the app turns Streamlit's per-run collection off:
    .streamlit/config.toml) and asks glibc to return its free pages (malloc_trim). Nothing happens while the
    count holds or grows, so a busy class pays nothing.
    """
    if _trimmer.is_set():
        return
    _trimmer.set()
    threading.Thread(target=_trim_loop, name="icl-memory-trimmer", daemon=True).start()


def _session_count() -> int | None:
    """The sessions the server holds, after dropping the closed ones whose reconnect time is over: Streamlit keeps
    a closed tab's session in a TTLCache that forgets it only when touched, i.e. at the next visitor's arrival,
    so after a class left every session stayed in memory. Private API; None where it is not there."""
    try:
        from streamlit.runtime import get_instance

        manager = get_instance()._session_mgr
        cache = getattr(getattr(manager, "_session_storage", None), "_cache", None)
        expire = getattr(cache, "expire", None)
        if callable(expire):
            with getattr(manager, "_storage_lock", contextlib.nullcontext()):
                expire()
        return int(manager.num_sessions())
    except Exception:
        return None


_RELEASE_HOOKS: list[Callable[[], None]] = []


def on_release(hook: Callable[[], None]) -> None:
    """Have `hook` run (first) whenever memory is released: a process-wide cache drops what nobody used lately."""
    _RELEASE_HOOKS.append(hook)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once (find_library runs ldconfig), or None on another C library."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def release_memory() -> None:
    """Let the caches drop what is idle, collect the garbage and hand the allocator's free pages back to the
    system (glibc only)."""
    for hook in list(_RELEASE_HOOKS):
        with contextlib.suppress(Exception):  # a cache that cannot drop keeps its memory; the rest still goes
            hook()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _trim_loop() -> None:
    last = _session_count()
    while True:
        time.sleep(TRIM_EVERY_S)
        now = _session_count()
        if now is None or last is None or now < last:
            release_memory()
        last = now
