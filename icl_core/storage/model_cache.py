"""Loaded models, kept while they are used and evicted by memory, least recently used first.

A published 512-wide model with a 48k vocabulary holds ~200 MB of weights, ours under 1 MB: a cap on the
number of models would either waste memory on small ones or run out of it on large ones, so the cap is bytes.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from icl_core.model.transformer import AttnOnlyTransformer

CACHE_MB_ENV = "ICL_MODEL_CACHE_MB"
DEFAULT_CACHE_MB = 1024


@dataclass
class LoadedModel:
    model: AttnOnlyTransformer
    lock: threading.Lock  # hooks are registered on the shared model: one forward at a time
    nbytes: int


def model_bytes(model: AttnOnlyTransformer) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class ModelCache:
    """get(key, load) returns the cached model or loads it; the newest model is always kept, even over budget."""

    def __init__(self, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            max_bytes = int(float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB)) * 1e6)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], AttnOnlyTransformer]) -> LoadedModel:
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
