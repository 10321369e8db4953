"""The app's model cache: evicted by bytes, and each forward on the torch threads its model's size calls for."""

from __future__ import annotations

import threading

import torch
from torch import nn

from icl_core.storage import model_cache
from icl_core.storage.model_cache import LoadedModel, ModelCache


def linear(n_in: int, n_out: int) -> nn.Module:
    return nn.Linear(n_in, n_out, bias=False)  # n_in * n_out * 4 bytes of weights


def test_models_are_evicted_by_bytes_least_recently_used_first_keeping_the_newest() -> None:
    cache = ModelCache(max_bytes=10_000)
    a = cache.get("a", lambda: linear(20, 50))  # 4,000 bytes
    cache.get("b", lambda: linear(20, 50))
    assert cache.get("a", lambda: linear(1, 1)) is a  # a hit: not loaded again, and now the most recent
    cache.get("c", lambda: linear(20, 50))  # 12,000 bytes in all: b, the least recently used, goes
    assert "b" not in cache and "a" in cache and "c" in cache
    cache.get("huge", lambda: linear(100, 100))  # over the whole budget alone: kept, everything else evicted
    assert len(cache) == 1 and "huge" in cache


def test_a_large_model_runs_on_two_threads_a_small_one_on_the_callers_and_the_setting_is_restored(
    monkeypatch,
) -> None:
    monkeypatch.setattr(model_cache.os, "cpu_count", lambda: 16)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small = LoadedModel(linear(2, 2), threading.Lock(), 16)
        large = LoadedModel(linear(2, 2), threading.Lock(), model_cache.LARGE_MODEL_BYTES)
        with small.use() as model:
            assert model is small.model and torch.get_num_threads() == 1 and small.lock.locked()
        with large.use():
            assert torch.get_num_threads() == model_cache.LARGE_MODEL_THREADS and large.lock.locked()
        assert torch.get_num_threads() == 1 and not large.lock.locked()
    finally:
        torch.set_num_threads(before)
