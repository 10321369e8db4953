"""Loaded models, kept while they are used and evicted by memory, least recently used first.

A published 512-wide model with a 48k vocabulary holds ~200 MB of weights, ours under 1 MB: a cap on the
number of models would either waste memory on small ones or run out of it on large ones, so the cap is bytes.
The same gap sets the torch threads a forward runs on (LoadedModel.use).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from icl_core.model.family import Model

CACHE_MB_ENV = "ICL_MODEL_CACHE_MB"
DEFAULT_CACHE_MB = 1024


# A second torch thread pays only for large matrices: a published-size model's 256-token forward took 298 ms on
# one thread and 168 ms on two (benchmarks/published_model.py), while ours run best on one
# (ui/server.limit_torch_threads says why).
LARGE_MODEL_BYTES = 50_000_000
LARGE_MODEL_THREADS = 2


@dataclass
class LoadedModel:
    model: Model
    lock: threading.Lock  # hooks are registered on the shared model: one forward at a time
    nbytes: int

    @contextmanager
    def use(self) -> Iterator[Model]:
        """Hold the model's lock, on the torch threads its size calls for (torch's setting is per calling thread,
        so other sessions' forwards keep theirs); the caller's setting is restored afterwards."""
        with self.lock:
            before = torch.get_num_threads()
            if self.nbytes >= LARGE_MODEL_BYTES:
                torch.set_num_threads(min(LARGE_MODEL_THREADS, os.cpu_count() or 1))
            try:
                yield self.model
            finally:
                torch.set_num_threads(before)


def model_bytes(model: Model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class ModelCache:
    """get(key, load) returns the cached model or loads it; the newest model is always kept, even over budget."""

    def __init__(self, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            max_bytes = int(float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB)) * 1e6)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Model]) -> LoadedModel:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        model = load()  # outside the lock: a slow load does not hold up pages using other models
        entry = LoadedModel(model, threading.Lock(), model_bytes(model))
        with self._lock:
            entry = self._entries.setdefault(key, entry)
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return entry

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
