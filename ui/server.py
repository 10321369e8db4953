"""How the app server process runs: one torch thread for the pages' small forwards, and the long-lived objects of
the first page run kept out of the garbage collector's full scans."""

from __future__ import annotations

import gc
import threading

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
