"""Charts of one text through one snapshot: attention heatmaps, the token picker, the loss along the sequence,
and the Ablation page's comparison bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import altair as alt
import numpy as np
import pandas as pd

from icl_core.analysis.text import TextAnalysis
from icl_core.heads import Head, head_name
from ui.theme import ATTN_SCHEME, MIN_ATTENTION, SELECT_COLOR, TARGET_COLOR
from ui.vega import DATA, LABELS, RULE, FilledChart, pick_param


def _attention_frame(analysis: TextAnalysis, heads: Sequence[Head], start: int, end: int, min_weight: float):
    """Long table (head, q, k, attention, induction_target, to, from) of the cells worth drawing."""
    qs, ks = np.tril_indices(end - start)
    qs, ks = qs + start, ks + start
    frames = []
    for layer, head in heads:
        w = analysis.patterns[layer, head, qs, ks]
        tgt = analysis.targets[qs, ks]
        keep = (w >= min_weight) | tgt  # near-zero cells are blank anyway: skipping them keeps the chart light
        frames.append(
            pd.DataFrame(
                {
                    "head": head_name((layer, head)),
                    "q": qs[keep],
                    "k": ks[keep],
                    "attention": np.round(w[keep], 3),
                    "induction_target": tgt[keep],
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df["to"] = [analysis.labels[i] for i in df["q"]]
    df["from"] = [analysis.labels[i] for i in df["k"]]
    return df


_ATTENTION_TOOLTIP = [
    alt.Tooltip("head:N"),
    alt.Tooltip("q:O", title="destination position"),
    alt.Tooltip("to:N", title="destination token"),
    alt.Tooltip("k:O", title="source position"),
    alt.Tooltip("from:N", title="source token"),
    alt.Tooltip("attention:Q", format=".3f"),
    alt.Tooltip("induction_target:N", title="induction target"),
]


def heatmap_sizes(n: int, present: bool) -> tuple[int, int]:
    """(pixels per token, label font size) of an n-token attention heatmap at full size."""
    cell = int(np.clip((900 if present else 520) / max(n, 1), 16 if present else 9, 26 if present else 16))
    return cell, int(np.clip(cell - 2, 12 if present else 8, 18 if present else 12))


def _heatmap_chart(shape: tuple[Any, ...], data: Mapping[str, Any], present: bool) -> alt.FacetChart:
    heads, start, end = shape
    n = end - start
    cell, font = heatmap_sizes(n, present)
    domain = list(range(start, end))
    expr = f"{LABELS}[datum.value - {start}]"  # one array for all axes (a literal would be rebuilt per label)
    x = alt.X(
        "k:O",
        title="source token (attended to)",
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(labelExpr=expr, labelAngle=0, labelFontSize=font, labelFont="monospace", labelOverlap=False),
    )
    y = alt.Y(
        "q:O",
        title="destination token",
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(labelExpr=expr, labelFontSize=font, labelFont="monospace", labelOverlap=False),
    )
    base = alt.Chart().encode(x=x, y=y)
    rect = base.mark_rect().encode(
        color=alt.Color("attention:Q", scale=alt.Scale(domain=[0, 1], scheme=ATTN_SCHEME), title="attention"),
        tooltip=_ATTENTION_TOOLTIP,
    )
    outline = (
        base.transform_filter("datum.induction_target")
        .mark_rect(filled=False, stroke=TARGET_COLOR, strokeWidth=1.5)
        .encode(tooltip=_ATTENTION_TOOLTIP)
    )
    return (
        alt.layer(rect, outline, data=data[DATA])
        .properties(width=cell * n, height=cell * n)
        .facet(
            facet=alt.Facet("head:N", sort=[head_name(h) for h in heads], title=None),
            columns=(2 if present else 4) if n <= 24 else (1 if present else 2),
        )
        .resolve_axis(x="independent", y="independent")  # token labels on every heatmap, not just the edges
        .properties(title="Attention patterns (orange outline: induction targets)")
    )


def attention_heatmaps(
    analysis: TextAnalysis,
    heads: Sequence[Head],
    start: int,
    end: int,
    min_weight: float = MIN_ATTENTION,
    present: bool = False,
) -> FilledChart:
    """One heatmap per head (destination token down, source token across) over positions [start, end).

    Every row and column is labelled with its token, on every heatmap (`present`: larger cells and type).
    """
    df = _attention_frame(analysis, heads, start, end, min_weight)
    shape = (tuple(heads), start, end)
    return FilledChart(_heatmap_chart, shape, present, {DATA: df}, {LABELS: list(analysis.labels[start:end])})


TOKENS_PER_ROW = 32
PICKER_KINDS = ["token", "induction target", "destination"]


def _picker_chart(shape: tuple[Any, ...], data: Mapping[str, Any], present: bool) -> alt.LayerChart:
    (param,) = shape
    cell = 30 if present else 22
    base = alt.Chart(data[DATA]).encode(
        x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None), tooltip=["position:Q", "token:N", "kind:N"]
    )
    boxes = (
        base.mark_rect(stroke="#888", strokeWidth=0.5, cursor="pointer")
        .encode(
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(domain=PICKER_KINDS, range=["#f4f4f4", "#f7c6b0", "#1f4e79"]),
                legend=alt.Legend(orient="bottom", title=None),
            )
        )
        .add_params(pick_param(param, ["position"]))
    )
    text = base.mark_text(font="monospace", fontSize=18 if present else 13).encode(
        text="token:N",
        color=alt.condition("datum.kind == 'destination'", alt.value("#fff"), alt.value("#111")),
    )
    # Sized per row and column of the data (Vega-Lite's step), not per text: every text shares one layout, so a
    # new text only swaps the data (a new layout cost ~30 ms to build here and more to draw anew in the browser).
    chart = alt.layer(boxes, text).properties(
        width=alt.Step(cell),
        height=alt.Step(cell),
        title="Click a token to make it the destination",
        # The cells keep their size; title and legend are added around them (a plain chart would squeeze them in).
        autosize=alt.AutoSizeParams(type="pad", contains="padding"),
    )
    return cast(alt.LayerChart, chart)


def token_picker(analysis: TextAnalysis, query: int, param: str, present: bool = False) -> FilledChart:
    """The text as a grid of tokens; clicking one selects it (a point selection over `position`).

    The destination token is filled, its induction targets (tokens right after an earlier occurrence) tinted.
    """
    n = len(analysis.labels)
    positions = np.arange(n)
    kinds = np.where(positions == query, "destination", np.where(analysis.targets[query], "induction target", "token"))
    df = pd.DataFrame(
        {
            "position": positions,
            "token": analysis.labels,
            "col": positions % TOKENS_PER_ROW,
            "row": positions // TOKENS_PER_ROW,
            "kind": kinds,
        }
    )
    return FilledChart(_picker_chart, (param,), present, {DATA: df})


def _loss_chart(shape: tuple[Any, ...], data: Mapping[str, Any], present: bool) -> alt.LayerChart:
    bars = (
        alt.Chart(data[DATA])
        .mark_bar()
        .encode(
            x=alt.X("position:Q", title="position (loss of predicting the next token)", scale=alt.Scale(nice=False)),
            y=alt.Y("loss:Q", title="loss (nats)"),
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(domain=["first occurrence", "token seen before"], range=["#9ecae1", TARGET_COLOR]),
                title=None,
            ),
            tooltip=["position:Q", "token:N", "next token:N", alt.Tooltip("loss:Q", format=".3f"), "kind:N"],
        )
    )
    rule = alt.Chart(data[RULE]).mark_rule(color=SELECT_COLOR, strokeDash=[4, 3]).encode(x="position:Q")
    return cast(alt.LayerChart, alt.layer(bars, rule).properties(height=220, title="Per-token loss along the sequence"))


def loss_along_sequence(analysis: TextAnalysis, query: int | None = None, present: bool = False) -> FilledChart:
    """Per-token loss at each position, coloured by whether the current token occurred earlier (induction can help);
    the destination token `query` ruled."""
    n = len(analysis.losses)
    toks = analysis.tokens
    seen_before = [bool((toks[1:i] == toks[i]).any()) for i in range(n)]
    df = pd.DataFrame(
        {
            "position": np.arange(n),
            "loss": np.round(analysis.losses, 3),
            "token": analysis.labels[:n],
            "next token": analysis.labels[1 : n + 1],
            "kind": ["token seen before" if s else "first occurrence" for s in seen_before],
        }
    )
    rule = pd.DataFrame({"position": [] if query is None else [query]}, dtype="int64")
    return FilledChart(_loss_chart, (), present, {DATA: df, RULE: rule})


def _comparison_bars_chart(shape: tuple[Any, ...], data: Mapping[str, Any], present: bool) -> alt.Chart:
    (title,) = shape
    return (
        alt.Chart(data[DATA])
        .mark_bar()
        .encode(
            # Scenario names go in the legend: as x labels, Vega drops the ones that would overlap.
            x=alt.X("scenario:N", title=None, axis=alt.Axis(labels=False, ticks=False), sort=None),
            y=alt.Y("value:Q", title="nats"),
            color=alt.Color(
                "scenario:N",
                sort=None,
                title=None,
                legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=400),
            ),
            column=alt.Column("measure:N", title=None, sort=None),
            tooltip=["scenario:N", "measure:N", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=220, height=200, title=title)
    )


def comparison_bars(df: pd.DataFrame, title: str, present: bool = False) -> FilledChart:
    """Grouped bars: one group per measure, one bar per scenario (the Ablation comparison's download)."""
    return FilledChart(_comparison_bars_chart, (title,), present, {DATA: df})
