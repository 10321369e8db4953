"""Altair chart builders (and one HTML token view): data in, chart out, no Streamlit calls.

Token positions are plotted as numbers and labelled through a Vega label expression, because token
labels repeat ("a" occurs many times) and an axis keyed on labels would merge them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from icl_core.ablation import Head
from icl_core.explore import TextAnalysis, head_name

ATTN_SCHEME = "blues"
TARGET_COLOR = "#e4572e"  # induction targets, everywhere in the app
SELECT_COLOR = "#d62728"
WINDOW_COLOR = "#f2a541"
PCA_TITLE = "Per-token-loss PCA: every run's training trajectory"


def _label_expr(labels: Sequence[str], offset: int = 0) -> str:
    # JSON string literals are valid Vega expression literals (quotes and backslashes escaped).
    return f"{json.dumps(list(labels))}[datum.value - {offset}]"


def attention_heatmaps(
    analysis: TextAnalysis, heads: Sequence[Head], start: int, end: int, min_weight: float = 0.01
) -> alt.FacetChart:
    """One heatmap per head (destination token down, source token across) over positions [start, end)."""
    pats = analysis.patterns
    labels = analysis.labels
    qs, ks = np.tril_indices(end - start)
    qs, ks = qs + start, ks + start
    frames = []
    for layer, head in heads:
        w = pats[layer, head, qs, ks]
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
    df["to"] = [labels[i] for i in df["q"]]
    df["from"] = [labels[i] for i in df["k"]]
    n = end - start
    cell = int(np.clip(520 / max(n, 1), 5, 16))
    font = int(np.clip(cell - 1, 6, 12))
    domain = list(range(start, end))
    expr = _label_expr(labels[start:end], start)
    x = alt.X(
        "k:O",
        title="source token (attended to)",
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(labelExpr=expr, labelAngle=0, labelFontSize=font, labelFont="monospace"),
    )
    y = alt.Y(
        "q:O",
        title="destination token",
        scale=alt.Scale(domain=domain),
        axis=alt.Axis(labelExpr=expr, labelFontSize=font, labelFont="monospace"),
    )
    tooltip = [
        alt.Tooltip("head:N"),
        alt.Tooltip("q:O", title="destination position"),
        alt.Tooltip("to:N", title="destination token"),
        alt.Tooltip("k:O", title="source position"),
        alt.Tooltip("from:N", title="source token"),
        alt.Tooltip("attention:Q", format=".3f"),
        alt.Tooltip("induction_target:N", title="induction target"),
    ]
    base = alt.Chart().encode(x=x, y=y)
    rect = base.mark_rect().encode(
        color=alt.Color("attention:Q", scale=alt.Scale(domain=[0, 1], scheme=ATTN_SCHEME), title="attention"),
        tooltip=tooltip,
    )
    outline = (
        base.transform_filter("datum.induction_target")
        .mark_rect(filled=False, stroke=TARGET_COLOR, strokeWidth=1.5)
        .encode(tooltip=tooltip)
    )
    columns = 4 if n <= 24 else 2
    order = [head_name(h) for h in heads]
    return (
        alt.layer(rect, outline, data=df)
        .properties(width=cell * n, height=cell * n)
        .facet(facet=alt.Facet("head:N", sort=order, title=None), columns=columns)
        .properties(title="Attention patterns (orange outline: induction targets)")
    )


def token_attention_html(analysis: TextAnalysis, query: int, heads: Sequence[Head], max_tokens: int = 200) -> str:
    """Each head as a row of the text, every token shaded by how much the destination token attends to it."""
    start = max(0, query - max_tokens + 1)
    rows = []
    for layer, head in heads:
        weights = analysis.patterns[layer, head, query]
        spans = []
        for k in range(start, query + 1):
            w = float(weights[k])
            alpha = w**0.6  # lift small weights so they stay visible; the tooltip has the exact value
            fg = "#fff" if alpha > 0.55 else "#111"
            style = [f"background:rgba(31,119,180,{alpha:.3f})", f"color:{fg}"]
            if analysis.targets[query, k]:
                style.append(f"box-shadow:inset 0 -3px 0 {TARGET_COLOR}")
            if k == query:
                style.append("outline:2px solid #111")
            label = html.escape(analysis.labels[k])
            tip = html.escape(f"position {k} '{analysis.labels[k]}': {w:.3f}")
            spans.append(f'<span class="tok" style="{";".join(style)}" title="{tip}">{label}</span>')
        rows.append(
            f'<div class="row"><span class="head">{head_name((layer, head))}</span>'
            f'<span class="toks">{"".join(spans)}</span></div>'
        )
    prefix = f"<div class='note'>… {start} earlier tokens not shown</div>" if start else ""
    css = (
        "<style>.attn-view{font-family:ui-monospace,monospace;font-size:14px;line-height:1.9}"
        ".attn-view .row{display:flex;gap:8px;align-items:flex-start;margin-bottom:4px}"
        ".attn-view .head{min-width:3.6em;font-weight:600;color:#555}"
        ".attn-view .toks{display:flex;flex-wrap:wrap}"
        ".attn-view .tok{padding:0 2px;margin:0 1px 2px 0;border-radius:2px;white-space:pre}"
        ".attn-view .note{color:#777;font-size:12px}</style>"
    )
    return f"{css}<div class='attn-view'>{prefix}{''.join(rows)}</div>"


def loss_along_sequence(analysis: TextAnalysis, query: int | None = None) -> alt.LayerChart:
    """Per-token loss at each position, coloured by whether the current token occurred earlier (induction can help)."""
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
    bars = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("position:Q", title="position (loss of predicting the next token)", scale=alt.Scale(nice=False)),
            y=alt.Y("loss:Q", title="loss (nats)"),
            color=alt.Color(
                "kind:N",
                scale=alt.Scale(domain=["first occurrence", "token seen before"], range=["#9ecae1", TARGET_COLOR]),
                title=None,
            ),
            tooltip=["position", "token", "next token", alt.Tooltip("loss:Q", format=".3f"), "kind"],
        )
    )
    layers: list[alt.Chart] = [bars]
    if query is not None and query < n:
        layers.append(
            alt.Chart(pd.DataFrame({"position": [query]}))
            .mark_rule(color=SELECT_COLOR, strokeDash=[4, 3])
            .encode(x="position:Q")
        )
    return alt.layer(*layers).properties(height=220, title="Per-token loss along the sequence")


def _window_layer(window_tokens: tuple[int, int] | None) -> list[alt.Chart]:
    if window_tokens is None:
        return []
    t0, t1 = window_tokens
    df = pd.DataFrame({"start": [max(t0, 1)], "end": [max(t1, 1)], "label": ["phase change"]})
    return [
        alt.Chart(df)
        .mark_rect(color=WINDOW_COLOR, opacity=0.18)
        .encode(x="start:Q", x2="end:Q", tooltip=[alt.Tooltip("label:N", title="")])
    ]


ONSET_COLOR = "#7b3294"


def _onset_layer(onset_tokens: int | None) -> list[alt.Chart]:
    if not onset_tokens:
        return []
    df = pd.DataFrame({"tokens": [onset_tokens], "label": ["induction heads form"]})
    return [
        alt.Chart(df)
        .mark_rule(color=ONSET_COLOR, strokeDash=[6, 4], strokeWidth=1.5)
        .encode(x="tokens:Q", tooltip=[alt.Tooltip("label:N", title="")])
    ]


def _rule_layer(selected_tokens: int | None) -> list[alt.Chart]:
    if not selected_tokens:
        return []
    return [
        alt.Chart(pd.DataFrame({"tokens": [selected_tokens]}))
        .mark_rule(color=SELECT_COLOR, strokeWidth=2)
        .encode(x="tokens:Q")
    ]


def pick_param(name: str, fields: Sequence[str]) -> alt.Parameter:
    """A click selection of the nearest point, reporting `fields` (Streamlit returns them: see state.chart_pick)."""
    return alt.selection_point(name=name, fields=list(fields), on="click", nearest=True)


def over_training(
    df: pd.DataFrame,
    y: str,
    title: str,
    y_title: str,
    window_tokens: tuple[int, int] | None = None,
    selected_tokens: int | None = None,
    color: str | None = None,
    points: bool = True,
    height: int = 230,
    onset_tokens: int | None = None,
    pick: str | None = None,
) -> alt.LayerChart:
    """A metric against tokens seen (log x): phase-change window shaded, induction onset dashed, selected step ruled.

    With `pick` (a parameter name), clicking near a point selects its snapshot: the points carry a click
    selection over the `step` field (the data needs a step column).
    """
    data = df[(df["tokens"] > 0) & df[y].notna()]  # log axis: step 0 (no tokens yet) cannot be placed
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens seen (log scale)")
    enc: dict[str, Any] = {"x": x, "y": alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False))}
    tips = [c for c in ("step", "tokens", "head", "series") if c in data.columns]
    enc["tooltip"] = [*tips, alt.Tooltip(f"{y}:Q", format=".3f")]
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=None)
    line = alt.Chart(data).mark_line(point=points and not pick, strokeWidth=1.8).encode(**enc)
    marks: list[alt.Chart] = [line]
    if pick:
        # The points carry the selection (a line mark would report its first point); small ones when the
        # line had none, so the chart reads the same and clicks still have something to land on.
        size = 30 if points else 12
        marks.append(
            alt.Chart(data).mark_point(filled=True, size=size).encode(**enc).add_params(pick_param(pick, ["step"]))
        )
    layers = [*_window_layer(window_tokens), *_onset_layer(onset_tokens), *marks, *_rule_layer(selected_tokens)]
    return alt.layer(*layers).properties(title=title, height=height)


def pca_chart(
    rows: list[dict[str, Any]],
    highlighted: list[dict[str, Any]],
    explained: tuple[float, float],
    pick: str | None = None,
) -> alt.LayerChart:
    """Every run's trajectory in the PC1-PC2 plane; the selected snapshot ringed on each run.

    With `pick` (a parameter name), clicking near a point selects it: a click selection over (run, step).
    """
    df = pd.DataFrame(rows)
    hl = pd.DataFrame(highlighted) if highlighted else pd.DataFrame(columns=[*df.columns, "focus"])
    x = alt.X("pc1:Q", title=f"PC1 ({explained[0]:.0%} of variance)")
    y = alt.Y("pc2:Q", title=f"PC2 ({explained[1]:.0%} of variance)")
    tips = ["run:N", "step:Q", "tokens:Q", alt.Tooltip("icl_score:Q", format="+.3f", title="ICL score")]
    color = alt.Color("run:N", title="run")
    paths = (
        alt.Chart(df)
        .mark_line(point=False if pick else alt.OverlayMarkDef(size=28), opacity=0.75)
        .encode(x=x, y=y, color=color, order="order:Q", tooltip=tips)
    )
    dots = []
    if pick:
        dots.append(
            alt.Chart(df)
            .mark_point(size=28, filled=True, opacity=0.75)
            .encode(x=x, y=y, color=color, tooltip=tips)
            .add_params(pick_param(pick, ["run", "step"]))
        )
    starts = (
        alt.Chart(df)
        .transform_filter("datum.order == 0")
        .mark_point(shape="square", size=90, filled=True)
        .encode(x=x, y=y, color=color, tooltip=tips)
    )
    rings = alt.Chart(hl).mark_point(size=420, filled=False, strokeWidth=3).encode(x=x, y=y, color=color, tooltip=tips)
    names = (
        alt.Chart(hl)
        .mark_text(dx=14, dy=-12, align="left", fontWeight="bold")
        .encode(x=x, y=y, text="run:N", color=color)
    )
    subtitle = "square: step 0 · ring: the selected step (nearest in tokens seen)"
    if pick:
        subtitle += " · click a point to select that run and step"
    return alt.layer(paths, *dots, starts, rings, names).properties(
        title=alt.TitleParams(PCA_TITLE, subtitle=subtitle),
        height=420,
    )


def loss_curves(df: pd.DataFrame, title: str, color_title: str = "", height: int = 260) -> alt.LayerChart:
    """Loss against token index (log x), one line per series, with the ICL score's tokens 50 and 500 marked."""
    data = df[df["index"] >= 1]
    line = (
        alt.Chart(data)
        .mark_line(strokeWidth=1.6)
        .encode(
            x=alt.X("index:Q", scale=alt.Scale(type="log"), title="token index in the context (log scale)"),
            y=alt.Y("loss:Q", title="mean loss (nats)", scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=color_title or None, sort=list(dict.fromkeys(data["series"]))),
            tooltip=["series", "index", alt.Tooltip("loss:Q", format=".3f")],
        )
    )
    marks = (
        alt.Chart(pd.DataFrame({"index": [50, 500], "label": ["token 50", "token 500"]}))
        .mark_rule(color="#888", strokeDash=[3, 3])
        .encode(x="index:Q", tooltip=["label"])
    )
    return alt.layer(marks, line).properties(title=title, height=height)


def comparison_bars(df: pd.DataFrame, title: str) -> alt.Chart:
    """Grouped bars: one group per measure, one bar per scenario."""
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("scenario:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=220), sort=None),
            y=alt.Y("value:Q", title="nats"),
            color=alt.Color("scenario:N", legend=None, sort=None),
            column=alt.Column("measure:N", title=None, sort=None),
            tooltip=["scenario", "measure", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=220, height=200, title=title)
    )


def scores_heatmap(grid: Sequence[Sequence[float]], title: str, domain: tuple[float, float] = (0, 1)) -> alt.Chart:
    """A small layer x head grid of one score, the value printed in each cell."""
    rows = [
        {"layer": f"layer {layer}", "head": f"head {head}", "value": float(v)}
        for layer, values in enumerate(grid)
        for head, v in enumerate(values)
    ]
    df = pd.DataFrame(rows)
    base = alt.Chart(df).encode(x=alt.X("head:N", title=None), y=alt.Y("layer:N", title=None))
    rect = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(domain=list(domain), scheme="oranges"), legend=None),
        tooltip=["layer", "head", alt.Tooltip("value:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=12).encode(text=alt.Text("value:Q", format=".2f"))
    return alt.layer(rect, text).properties(title=title, height=45 * len(grid) + 10)
