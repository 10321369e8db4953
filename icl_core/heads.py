"""Heads: how they are named, enumerated and classified, shared by the analysis, the app and the tests."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Head = tuple[int, int]  # (layer, head index within the layer)

# Prefix-matching score above which a head counts as an induction head (Olsson et al. 2022 use a similar
# cut-off; on the shipped runs the induction heads score 0.4-0.8 and every other head < 0.1).
INDUCTION_THRESHOLD = 0.3


def head_name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def all_heads(n_layers: int, n_heads: int) -> list[Head]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def min_induction_layer(n_layers: int) -> int:
    """Induction heads need an earlier layer to compose with; a 1-layer model can only have them via smeared keys."""
    return 1 if n_layers > 1 else 0


def induction_heads(prefix_matching: Sequence[Sequence[float]], threshold: float = INDUCTION_THRESHOLD) -> list[Head]:
    """Heads in layers >= 1 (any layer of a 1-layer model) scoring above the threshold, best first."""
    first = min_induction_layer(len(prefix_matching))
    found = []
    for layer, values in enumerate(prefix_matching):
        if layer < first:
            continue
        for head, v in enumerate(values):
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value) and value > threshold:
                found.append(((layer, head), value))
    return [h for h, _ in sorted(found, key=lambda hv: -hv[1])]


def random_other_head(n_layers: int, n_heads: int, exclude: Sequence[Head], seed: int = 0) -> Head | None:
    """A head not in `exclude`, drawn with a seed (so a button press is reproducible), or None if none is left."""
    excluded = {(int(a), int(b)) for a, b in exclude}
    choices = [h for h in all_heads(n_layers, n_heads) if h not in excluded]
    if not choices:
        return None
    return random.Random(seed).choice(choices)
