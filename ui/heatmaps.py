"""Attention heatmaps as images with HTML token labels: one small PNG per head, labels around it.

A Vega heatmap draws one mark per cell (8 heads x 64 x 64 tokens: thousands of rects, each encoded by Vega's
expression interpreter): ~250 ms of a 2-core machine's browser time on every step change, most of the
Attention page's. A palette PNG per head is drawn in a millisecond, and HTML lets the heatmaps wrap onto
new lines and shrink on a narrow screen (labels sized to the heatmap's own width). Colours are Vega's
"blues" scheme, the one the app's other attention views use; induction targets are outlined in the app's
target orange. The exported PNG/SVG is still the vector chart (ui/text_charts.attention_heatmaps).
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from icl_core.analysis.text import TextAnalysis
from icl_core.heads import Head, head_name
from ui.text_charts import heatmap_sizes
from ui.theme import BLUES, MIN_ATTENTION, TARGET_COLOR

PX = 4  # image pixels per token: a 1-pixel outline ring around a 2 x 2 core, scaled up without smoothing
# Palette entries: blank (above the diagonal), target outline, near-zero weight (the causal triangle stays
# visible on a dark theme), then the blue ramp.
_TRANSPARENT, _OUTLINE, _FAINT, _RAMP0 = 0, 1, 2, 3
FAINT = "eef2f6"
_LEVELS = 253


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _palette() -> bytes:
    stops = np.array([_hex(c) for c in BLUES], dtype=float)
    at = np.linspace(0, len(stops) - 1, _LEVELS)
    ramp = np.stack([np.interp(at, np.arange(len(stops)), stops[:, i]) for i in range(3)], axis=1)
    colours = np.vstack([[0, 0, 0], _hex(TARGET_COLOR.lstrip("#")), _hex(FAINT), np.round(ramp)]).astype(np.uint8)
    return colours.tobytes()


_PALETTE = _palette()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def palette_png(indices: np.ndarray) -> bytes:
    """An 8-bit palette PNG of the index image (entry 0 transparent)."""
    h, w = indices.shape
    raw = np.hstack([np.zeros((h, 1), np.uint8), indices.astype(np.uint8)]).tobytes()  # filter byte 0 per row
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),
            _chunk(b"PLTE", _PALETTE),
            _chunk(b"tRNS", b"\x00"),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        ]
    )


def head_image(weights: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Palette indices (PX pixels per token) of one head's pattern over a window: blank above the diagonal,
    a faint grey under MIN_ATTENTION (the vector chart leaves those cells out), induction targets ringed."""
    n = len(weights)
    level = _RAMP0 + np.round(np.clip(weights, 0, 1) * (_LEVELS - 1)).astype(np.int64)
    causal = np.tril(np.ones((n, n), bool))
    cells = np.where(causal, np.where(weights >= MIN_ATTENTION, level, _FAINT), _TRANSPARENT)
    img = np.repeat(np.repeat(cells, PX, axis=0), PX, axis=1)
    ring = np.ones((PX, PX), bool)
    ring[1:-1, 1:-1] = False
    tiled = np.kron(np.tril(targets).astype(bool), ring)  # the ring on every target cell
    img[tiled] = _OUTLINE
    return img.astype(np.uint8)


CSS = """<style>
.hm-grid{display:flex;flex-wrap:wrap;gap:28px 36px}
.hm{container-type:inline-size;flex:1 1 var(--hm-basis);max-width:var(--hm-size);min-width:0;
  font-family:ui-monospace,monospace}
.hm-title{font-weight:600;font-size:13px;opacity:.8;margin-bottom:2px;text-align:center}
.hm-body{display:grid;grid-template-columns:var(--hm-lab) minmax(0,1fr)}
.hm-body img{width:100%;height:auto;image-rendering:pixelated;display:block;
  outline:1px solid rgba(128,128,128,.35);background:rgba(128,128,128,.06)}
.hm-y,.hm-x{white-space:pre;overflow:visible;
  font-size:clamp(7px, calc((100cqw - var(--hm-lab)) / var(--hm-n) * .9), var(--hm-font));
  line-height:calc((100cqw - var(--hm-lab)) / var(--hm-n))}
.hm-y{text-align:right;padding-right:4px}
.hm-x{writing-mode:vertical-lr;text-orientation:upright;height:var(--hm-xh);padding-top:3px}
.hm-heading{font-weight:600;font-size:15px;margin-bottom:2px}
.hm-legend{display:flex;align-items:center;gap:6px;font-size:12px;opacity:.85;margin-bottom:8px}
.hm-legend .ramp{width:140px;height:10px;border-radius:2px}
.hm-legend .ring{width:10px;height:10px;box-shadow:inset 0 0 0 2px %TARGET%}
</style>""".replace("%TARGET%", TARGET_COLOR)


def _lines(labels: Sequence[str]) -> str:
    # One text node per axis, a line per token (the column labels are vertical lines): 2 x 64 label elements per
    # head cost the browser ~80 ms of layout on every step change, one block per axis almost nothing.
    return html.escape("\n".join(label.replace("\n", "⏎").replace("\r", "␍") for label in labels))


def heatmaps_html(
    analysis: TextAnalysis, heads: Sequence[Head], start: int, end: int, present: bool = False, title: str = ""
) -> str:
    """One heatmap per head (destination token down, source token across) over positions [start, end): every
    row and column labelled with its token."""
    n = end - start
    labels = list(analysis.labels[start:end])
    cell, font = heatmap_sizes(n, present)  # the vector chart's sizes
    longest = max((len(s) for s in labels), default=1)
    label_width = longest * 0.62 * font + 8  # monospace: about 0.6 em a character
    x_height = longest * 1.05 * font + 6  # column labels read downwards, one upright character under the other
    targets = analysis.targets[start:end, start:end]
    axis = _lines(labels)
    figures = []
    for layer, head in heads:
        weights = analysis.patterns[layer, head, start:end, start:end]
        png = base64.b64encode(palette_png(head_image(weights, targets))).decode("ascii")
        name = head_name((layer, head))
        figures.append(
            f'<figure class="hm" style="margin:0"><div class="hm-title">{name}</div><div class="hm-body">'
            f'<div class="hm-y">{axis}</div>'
            f'<img alt="attention pattern of {name}" src="data:image/png;base64,{png}" '
            f'title="{name}: destination token down, source token across">'
            f'<div></div><div class="hm-x">{axis}</div>'
            "</div></figure>"
        )
    size = cell * n + label_width
    basis = min(size, 520 if present else 360)  # two or more a row on a laptop, one on a phone
    style = (
        f"--hm-size:{size:.0f}px;--hm-basis:{basis:.0f}px;--hm-n:{n};--hm-font:{font}px;"
        f"--hm-lab:{label_width:.0f}px;--hm-xh:{x_height:.0f}px"
    )
    ramp = ",".join(f"#{c}" for c in BLUES)
    heading = f'<div class="hm-heading">{html.escape(title)}</div>' if title else ""
    legend = (
        f'<div class="hm-legend">attention 0<span class="ramp" style="background:linear-gradient(90deg,{ramp})">'
        '</span>1 · <span class="ring"></span> induction target · rows: destination token, columns: source token '
        "(attended to)</div>"
    )
    grid = f'<div class="hm-grid">{"".join(figures)}</div>'
    return f'{CSS}<div class="hm-view" style="{style}">{heading}{legend}{grid}</div>'
