"""What every snapshot of a run shows, packed once so the browser can scrub and play through training itself.

Two packages, both plain JSON-ready dicts (pure functions, no Streamlit):
- `phase_frames`: the Phase change page's metric row at every snapshot (formatted here, by the same functions the
  rest of the app formats them with), plus which snapshot is selected;
- `text_frames`: the Attention page's views at every snapshot for one text and destination token: every head's
  attention from the destination (the token strips), one head's attention pattern over the heatmap's window, and
  the top next-token predictions. Attention weights are quantised to 8 bits (`quantize`): a strip token or
  heatmap cell is off by at most `QUANT_ERROR` from the forward pass.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from icl_core.analysis.phase import PhaseWindow, phase_status
from icl_core.analysis.summary import ICL_SETS, fmt_icl, fmt_tokens, summary_rows
from icl_core.analysis.text import TextAnalysis
from icl_core.heads import Head, all_heads, head_name
from icl_core.model.config import ICL_FORMULA
from icl_core.model.tokenizer import Tokenizer
from icl_core.storage.snapshots import SnapshotInfo

QUANT_LEVELS = 255  # an attention weight in [0, 1] is sent as round(w * 255): one byte
QUANT_ERROR = 0.5 / QUANT_LEVELS  # the most a dequantised weight differs from the forward pass's
TOP_K = 5  # next-token predictions shown at each snapshot
STRIP_TOKENS = 200  # a strip shows the destination and the tokens before it, as the server's strips do
# What one text's package may hold (the bound for 128 tokens on the 3-layer run is 3 MB); the heatmap's
# window is at most 128 tokens (pages/attention.py's WINDOWS), so a package stays well under it (README: sizes).
MAX_PACKAGE_BYTES = 3_000_000


def quantize(weights: np.ndarray) -> np.ndarray:
    """Attention weights (in [0, 1]) as bytes: round(w * 255)."""
    return np.clip(np.rint(np.asarray(weights, dtype=np.float64) * QUANT_LEVELS), 0, QUANT_LEVELS).astype(np.uint8)


def dequantize(levels: np.ndarray) -> np.ndarray:
    return np.asarray(levels, dtype=np.float64) / QUANT_LEVELS


def _b64(levels: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(levels, dtype=np.uint8).tobytes()).decode("ascii")


def lower_triangle(square: np.ndarray) -> np.ndarray:
    """The causal part of an (m, m) pattern, row by row: row q holds keys 0..q (m(m+1)/2 values)."""
    rows, cols = np.tril_indices(square.shape[-1])
    return square[..., rows, cols]


def frame_labels(snaps: Sequence[SnapshotInfo]) -> list[str]:
    """'step 1,024 · 4.19M tokens' for each snapshot: the timeline's readout, as the page's step slider says it."""
    return [f"step {s.step:,} · {fmt_tokens(s.tokens_seen)} tokens" for s in snaps]


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "n/a"


def phase_frames(snaps: Sequence[SnapshotInfo], window: PhaseWindow | None, selected_step: int) -> dict[str, Any]:
    """The Phase change page's metric row at every snapshot, as text, and the selected snapshot's index."""
    steps = [s.step for s in snaps]
    rows = summary_rows(snaps)
    columns: dict[str, list[str]] = {
        f"ICL score ({ICL_FORMULA}), {label}": [fmt_icl(s.metrics, key) or "n/a" for s in snaps]
        for key, label in ICL_SETS.items()
    }
    columns |= {
        "Best induction head score": [_fmt(r["max_prefix_matching"], ".2f") for r in rows],
        "Held-out loss": [_fmt(r["heldout_loss"], ".3f") for r in rows],
        "Tokens seen": [fmt_tokens(s.tokens_seen) for s in snaps],
        "Phase": [phase_status(window, step) for step in steps],
    }
    columns = {name: values for name, values in columns.items() if any(v != "n/a" for v in values)}
    return {
        "kind": "phase",
        "steps": steps,
        "labels": frame_labels(snaps),
        "index": steps.index(selected_step),
        "metrics": columns,
    }


@dataclass(frozen=True)
class HeatmapWindow:
    """Which head's pattern the timeline's heatmap shows, over which tokens."""

    head: Head
    start: int
    size: int


@dataclass(frozen=True)
class TextOverTraining:
    """One text's forward pass at every snapshot, kept compact: what the package for any destination token,
    head and heatmap window is sliced from, so moving those costs no forward pass."""

    labels: tuple[str, ...]  # the text's token labels
    targets: np.ndarray  # (query, key) bool: induction targets
    patterns: np.ndarray  # (snapshot, layer, head, query, key) uint8: quantised attention
    top_ids: np.ndarray  # (snapshot, position, TOP_K) next-token predictions
    top_probs: np.ndarray  # (snapshot, position, TOP_K)
    losses: np.ndarray  # (snapshot, position): loss of the next token (n - 1 positions)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.targets, self.patterns, self.top_ids, self.top_probs, self.losses))


def text_over_training(analyses: Sequence[TextAnalysis]) -> TextOverTraining:
    """Stack one text's analyses (one per snapshot, in step order), its attention quantised to bytes."""
    first = analyses[0]
    return TextOverTraining(
        labels=tuple(first.labels),
        targets=first.targets,
        patterns=np.stack([quantize(an.patterns) for an in analyses]),
        top_ids=np.stack([an.top_ids[:, :TOP_K] for an in analyses]),
        top_probs=np.stack([an.top_probs[:, :TOP_K] for an in analyses]).astype(np.float32),
        losses=np.stack([an.losses for an in analyses]).astype(np.float32),
    )


def text_frames(
    snaps: Sequence[SnapshotInfo],
    text: TextOverTraining,
    dest: int,
    heatmap: HeatmapWindow,
    tokenizer: Tokenizer,
    selected_step: int,
) -> dict[str, Any]:
    """The Attention page's views at every snapshot for one text and destination token.

    `strips`: per snapshot, per head (layer-major), the weights from token `dest` to the STRIP_TOKENS keys up
    to it; `heatmap`: per snapshot, the head's pattern over tokens start..start+size-1 as its lower triangle;
    `preds`: per snapshot, the top next-token predictions at `dest` with their probabilities."""
    n_snaps, n_layers, n_heads, n = text.patterns.shape[:4]
    if n_snaps != len(snaps):
        raise ValueError(f"{n_snaps} forward passes for {len(snaps)} snapshots")
    if not 0 <= dest < n:
        raise ValueError(f"destination {dest} is not a position of the {n}-token text")
    lo, size = heatmap.start, heatmap.size
    if lo < 0 or size < 1 or lo + size > n:
        raise ValueError(f"heatmap window {lo}..{lo + size - 1} is not inside the {n}-token text")
    heads = all_heads(n_layers, n_heads)
    first_key = max(0, dest - STRIP_TOKENS + 1)
    strips = text.patterns[:, :, :, dest, first_key : dest + 1]  # (snapshot, layer, head, key)
    layer, head = heatmap.head
    heat = lower_triangle(text.patterns[:, layer, head, lo : lo + size, lo : lo + size])
    preds = [
        [[label, round(float(p), 4)] for label, p in zip(tokenizer.labels(ids.tolist()), probs, strict=True)]
        for ids, probs in zip(text.top_ids[:, dest], text.top_probs[:, dest], strict=True)
    ]
    has_next = dest + 1 < n
    steps = [s.step for s in snaps]
    return {
        "kind": "text",
        "steps": steps,
        "labels": frame_labels(snaps),
        "index": steps.index(selected_step),
        "tokens": list(text.labels),
        "dest": dest,
        "strip_start": first_key,
        "targets": [int(k) for k in np.flatnonzero(text.targets[dest, : dest + 1])],
        "heads": [head_name(h) for h in heads],
        "strips": _b64(strips),
        "heatmap": {"head": head_name(heatmap.head), "start": lo, "size": size, "levels": _b64(heat)},
        "preds": preds,
        "actual": text.labels[dest + 1] if has_next else None,
        "losses": [round(float(v), 4) for v in text.losses[:, dest]] if has_next else None,
    }


def package_bytes(package: dict[str, Any]) -> int:
    """What the package costs on the wire: its JSON's length."""
    import json

    return len(json.dumps(package, separators=(",", ":")))
