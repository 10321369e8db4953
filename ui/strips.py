"""HTML token views: text as a strip of tokens shaded by a number (attention from a chosen token, a loss change).
A class per shade in one stylesheet, so hundreds of tokens cost the browser little.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from icl_core.analysis.text import TextAnalysis
from icl_core.heads import Head, head_name
from ui.theme import MIN_ATTENTION, STRIP_RGB, TARGET_COLOR

STRIP_LEVELS = 20  # shades of the token strips: a class each, so a strip token carries no style of its own


def _shade_rule(selector: str, rgb: tuple[int, ...], alpha: float) -> str:
    """A shade as an opaque colour (rgb blended over white at alpha), so a strip reads the same on a dark theme,
    with text that stays readable on it."""
    r, g, b = (round(255 + alpha * (c - 255)) for c in rgb)
    return f"{selector}{{background:rgb({r},{g},{b});color:{'#fff' if alpha > 0.55 else '#111'}}}"


def _strip_css() -> str:
    rules = []
    for level in range(STRIP_LEVELS):
        # `.toks>` so a shade outranks the bare token's white.
        rules.append(_shade_rule(f".attn-view .toks>.w{level}", STRIP_RGB, level / (STRIP_LEVELS - 1)))
    return (
        "<style>.attn-view{font-family:ui-monospace,monospace;font-size:14px;line-height:1.9}"
        ".attn-view .row{display:flex;gap:8px;align-items:flex-start;margin-bottom:4px}"
        ".attn-view .head{min-width:3.6em;font-weight:600;opacity:.75}"
        ".attn-view .toks{display:flex;flex-wrap:wrap}"
        # Bare spans: a strip is hundreds of tokens, and every class or title is work for the browser's sanitizer.
        ".attn-view .toks>span{padding:0 2px;margin:0 1px 2px 0;border-radius:2px;white-space:pre;"
        "background:#fff;color:#111}"
        f".attn-view .t{{box-shadow:inset 0 -3px 0 {TARGET_COLOR}}}"
        ".attn-view .d{outline:2px solid #111}"
        ".attn-view .note{opacity:.7;font-size:12px}" + "".join(rules) + "</style>"
    )


_STRIP_CSS = _strip_css()


def _strip_token(position: int, label: str, level: int, marks: list[str], weight: float) -> str:
    # Unshaded tokens carry no class and weights under MIN_ATTENTION no tooltip: most of a trained head's row.
    classes = " ".join([f"w{level}"] * bool(level) + marks)
    cls = f' class="{classes}"' if classes else ""
    tip = f" title=\"position {position} '{label}': {weight:.3f}\"" if weight >= MIN_ATTENTION else ""
    return f"<span{cls}{tip}>{label}</span>"


def token_attention_html(analysis: TextAnalysis, query: int, heads: Sequence[Head], max_tokens: int = 200) -> str:
    """Each head as a row of the text, every token shaded by how much the destination token attends to it."""
    start = max(0, query - max_tokens + 1)
    labels = [html.escape(label) for label in analysis.labels[start : query + 1]]
    marks = [["t"] * bool(analysis.targets[query, k]) + ["d"] * (k == query) for k in range(start, query + 1)]
    rows = []
    for layer, head in heads:
        weights = analysis.patterns[layer, head, query, start : query + 1].astype(float)
        # Lift small weights so they stay visible; the tooltip has the exact value from MIN_ATTENTION up.
        levels = np.round(np.clip(weights, 0, 1) ** 0.6 * (STRIP_LEVELS - 1)).astype(int)
        spans = [
            _strip_token(start + i, label, lv, mark, w)
            for i, (lv, mark, label, w) in enumerate(zip(levels, marks, labels, weights, strict=True))
        ]
        rows.append(
            f'<div class="row"><span class="head">{head_name((layer, head))}</span>'
            f'<span class="toks">{"".join(spans)}</span></div>'
        )
    prefix = f"<div class='note'>… {start} earlier tokens not shown</div>" if start else ""
    return f"{_STRIP_CSS}<div class='attn-view'>{prefix}{''.join(rows)}</div>"


LOSS_CHANGE_LEVELS = 8  # shades each way: better after (blue) and worse after (red)
LOSS_CHANGE_FULL_NATS = 3.0  # a change this large or larger takes the darkest shade


def _loss_change_css() -> str:
    rules = []
    for level in range(1, LOSS_CHANGE_LEVELS + 1):
        for name, rgb in (("b", STRIP_RGB), ("r", (214, 39, 40))):
            rules.append(_shade_rule(f".loss-change .{name}{level}", rgb, level / LOSS_CHANGE_LEVELS))
    return (
        "<style>.loss-change{font-family:ui-monospace,monospace;font-size:14px;line-height:1.9;display:flex;"
        "flex-wrap:wrap}.loss-change>span{padding:0 2px;margin:0 1px 2px 0;border-radius:2px;white-space:pre}"
        + "".join(rules)
        + "</style>"
    )


_LOSS_CHANGE_CSS = _loss_change_css()


def loss_change_html(labels: Sequence[str], change: np.ndarray) -> str:
    """The text, each token shaded by how its loss changed between two snapshots (Olsson et al.'s per-token
    figure): blue where the later snapshot predicts it better, red where worse. change[i] is the change of the
    loss of predicting token i + 1, so the first token (nothing predicts it) is unshaded."""
    spans = [f"<span>{html.escape(labels[0])}</span>"] if labels else []
    for label, d in zip(labels[1:], change, strict=False):
        level = int(np.ceil(min(abs(float(d)), LOSS_CHANGE_FULL_NATS) / LOSS_CHANGE_FULL_NATS * LOSS_CHANGE_LEVELS))
        cls = f' class="{"b" if d < 0 else "r"}{level}"' if level else ""
        spans.append(f'<span{cls} title="{float(d):+.2f} nats">{html.escape(label)}</span>')
    return f"{_LOSS_CHANGE_CSS}<div class='loss-change'>{''.join(spans)}</div>"
