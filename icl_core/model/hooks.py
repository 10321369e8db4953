"""Named activations that can be read and overwritten (the hook-point idea of TransformerLens, small).

A HookPoint is an identity module with a name. During a forward pass, functions registered for that
name may replace the activation; `run_with_cache` records activations by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


class HookPoint(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x


class HookedModule(nn.Module):
    """Mixin: names every HookPoint after its module path and runs forward passes with hooks."""

    def setup_hooks(self) -> None:
        self.hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module

    @contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str, HookFn]]):
        added: list[tuple[HookPoint, HookFn]] = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_points:
                    raise KeyError(f"no hook point named {name!r}; known: {sorted(self.hook_points)}")
                point = self.hook_points[name]
                point.fns.append(fn)
                added.append((point, fn))
            yield self
        finally:
            for point, fn in added:
                point.fns.remove(fn)

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: Iterable[tuple[str, HookFn]] = ()) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(tokens)

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: Callable[[str], bool] | None = None,
        fwd_hooks: Iterable[tuple[str, HookFn]] = (),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward pass that also returns the (post-hook) activations whose names pass `names`."""
        cache: dict[str, torch.Tensor] = {}

        def save(x: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach()

        # Caching hooks go last, so the cache shows what the model actually used.
        wanted = [n for n in self.hook_points if names is None or names(n)]
        with self.hooks(fwd_hooks), self.hooks((n, save) for n in wanted):
            logits = self(tokens)
        return logits, cache


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal_mask: torch.Tensor, scores: HookPoint, pattern: HookPoint
) -> torch.Tensor:
    """Causal attention (batch, pos, head, d_head) -> z, through the `scores` and `pattern` hook points when
    something reads or edits them; otherwise torch's fused kernel (~4-5x faster on CPU), which never forms them."""
    if scores.fns or pattern.fns:
        n = q.shape[1]
        raw = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        weights = pattern(torch.softmax(scores(raw.masked_fill(~causal_mask[:n, :n], float("-inf"))), dim=-1))
        return torch.einsum("bhqk,bkhe->bqhe", weights, v)
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    return z.transpose(1, 2)
