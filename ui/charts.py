"""Altair chart builders (and one HTML token view): data in, chart out, no Streamlit calls.

Token positions are plotted as numbers and labelled through a Vega label expression, because token
labels repeat ("a" occurs many times) and an axis keyed on labels would merge them.
"""

from __future__ import annotations

import contextlib
import copy
import html
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from icl_core.analysis import circuits, fuzzy
from icl_core.analysis.pca import PCA_MIN_STEP
from icl_core.analysis.phase import EARLY_STAGE_LABEL
from icl_core.analysis.text import TextAnalysis
from icl_core.heads import Head, head_name
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN

ICL_MARKS = (ICL_EARLY_TOKEN, ICL_LATE_TOKEN)  # the ICL score's tokens, marked on every loss curve

ATTN_SCHEME = "blues"
TARGET_COLOR = "#e4572e"  # induction targets and induction heads, everywhere in the app
OTHER_COLOR = "#8c8c8c"
DIVERGING = "blueorange"
KIND_LABEL = {"K": "K-composition", "Q": "Q-composition", "V": "V-composition"}
SELECT_COLOR = "#d62728"
WINDOW_COLOR = "#f2a541"
SE_BAND_COLOR = "#0072B2"  # the ±2 standard error band around a single-run metric
# One categorical palette for runs (Okabe-Ito: tells colours apart for colour-blind viewers, on light and
# dark backgrounds) and one for heads, used by every chart.
RUN_SCALE = alt.Scale(range=["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"])
HEAD_SCALE = alt.Scale(scheme="tableau20")


SUBTITLE_COLOR = "#8a8a8a"  # mid grey: readable on Streamlit's light and dark themes alike

# Altair checks every spec against the Vega-Lite JSON schema when it is turned into a dict: a quarter of a page
# rerun's server time (py-spy, Attention page). The charts here are fixed code, so the app skips the check; the
# tests turn it on (conftest sets this variable), where a malformed chart fails loudly.
VALIDATE_ENV = "ICL_VALIDATE_CHARTS"
_SPEC_LOCK = threading.Lock()  # Altair's theme and data transformer are process-wide settings


def vega_lite_spec(chart: Any) -> dict[str, Any]:
    """The Vega-Lite dict st.altair_chart would send for this chart (Altair theme "none", the data as Arrow
    datasets by content hash: streamlit 1.67's _convert_altair_to_vega_lite_spec), without the schema check
    unless ICL_VALIDATE_CHARTS is set. tests/test_charts_spec.py checks the two agree."""
    from streamlit.elements.vega_charts import _to_arrow_dataset

    datasets: dict[str, Any] = {}
    alt.data_transformers.register("icl_arrow_dataset", _to_arrow_dataset)
    validate = os.environ.get(VALIDATE_ENV, "") not in ("", "0")
    with _SPEC_LOCK:
        theme = alt.theme.enable("none") if alt.theme.active == "default" else contextlib.nullcontext()
        with theme, alt.data_transformers.enable("icl_arrow_dataset", datasets=datasets):
            spec = chart.to_dict(validate=validate)
    existing = spec.get("datasets")
    spec["datasets"] = {**existing, **datasets} if isinstance(existing, dict) else datasets
    return spec


DATA, RULE, TOP = "data", "rule", "top"  # dataset names of the charts drawn from a cached layout
LABELS = "token_labels"  # their token labels, one top-level array parameter


Build = Callable[[tuple[Any, ...], Mapping[str, Any], bool], Any]  # (shape, datasets, present) -> Altair chart


@lru_cache(maxsize=128)
def cached_layout(build: Build, shape: tuple[Any, ...], present: bool) -> Mapping[str, Any]:
    """The chart's spec with its datasets left as names: built by Altair once per shape."""
    return vega_lite_spec(finish(build(shape, {n: alt.NamedData(n) for n in (DATA, RULE, TOP)}, present), present))


@dataclass(frozen=True)
class FilledChart:
    """A chart drawn from a layout built once by Altair (per shape: heads, window, presenter mode) and this call's
    data. Building the Altair chart was most of the Attention page's server time on every step change; the
    datasets keep fixed names, so when only the numbers change the spec stays the same and the browser swaps
    the data into the chart it has instead of building a new one. tests/test_charts_spec.py checks the result
    equals the chart built for the data directly."""

    build: Build  # everything but the data comes from `shape` and `present`
    shape: tuple[Any, ...]
    present: bool
    datasets: Mapping[str, pd.DataFrame]
    params: Mapping[str, Any] = field(default_factory=dict)  # top-level parameter values (token labels)

    @property
    def table(self) -> pd.DataFrame:
        """The main dataset (the one a CSV export holds)."""
        return pd.concat([self.datasets[n] for n in (DATA, TOP) if n in self.datasets], ignore_index=True)

    def _filled(self, datasets: dict[str, Any], records: bool = False) -> dict[str, Any]:
        spec = copy.deepcopy(dict(cached_layout(self.build, self.shape, self.present)))  # the cached one is shared
        fixed = spec.get("datasets", {})  # data the layout holds itself (constant marks), as Arrow
        if records:
            import pyarrow as pa

            fixed = {k: pa.ipc.open_stream(v).read_all().to_pylist() for k, v in fixed.items()}
        spec["datasets"] = {**fixed, **datasets}
        if self.params:
            spec["params"] = [*spec.get("params", []), *({"name": k, "value": v} for k, v in self.params.items())]
        return spec

    def spec(self) -> dict[str, Any]:
        """What st.vega_lite_chart draws: the datasets as Arrow, as vega_lite_spec sends an Altair chart's. Built
        once per chart: a page can build it before it draws anything (pages/attention.py says why). A shallow copy:
        st.vega_lite_chart moves the top-level datasets out of the dict it is given."""
        return dict(self._drawn_spec)

    def ready(self) -> FilledChart:
        """This chart with its spec built now (a page that builds every view before drawing the first)."""
        self._drawn_spec  # noqa: B018 - builds and keeps it
        return self

    @cached_property
    def _drawn_spec(self) -> dict[str, Any]:
        from streamlit import dataframe_util

        return self._filled({k: dataframe_util.convert_anything_to_arrow_bytes(v) for k, v in self.datasets.items()})

    def to_dict(self) -> dict[str, Any]:
        """The spec with its data inline as JSON records (the PNG/SVG export reads this, as an Altair chart's)."""
        return self._filled({k: json.loads(v.to_json(orient="records")) for k, v in self.datasets.items()}, True)


def finish(chart: Any, present: bool = False) -> Any:
    """The chart as the app draws it: subtitles readable on both themes; `present`: type sized for a projector."""
    if not present:
        return chart.configure_title(subtitleColor=SUBTITLE_COLOR)
    return (
        _height_is_the_plots(chart)
        .configure_axis(labelFontSize=16, titleFontSize=18, labelLimit=400)
        .configure_legend(labelFontSize=16, titleFontSize=16, symbolSize=160)
        .configure_title(fontSize=22, subtitleFontSize=16, subtitleColor=SUBTITLE_COLOR)
        .configure_header(labelFontSize=18, titleFontSize=18)
    )


def _height_is_the_plots(chart: Any) -> Any:
    """A full-width chart whose height is its plot's: Streamlit's default ("fit") keeps the whole chart at that
    height, so presenter mode's large type squeezed a plot over training to ~60 px and pushed its title out of
    view. Not for charts that size themselves (a width or an autosize of their own) or compound ones (Vega-Lite
    cannot fit those: a facet chart drew nothing)."""
    if not isinstance(chart, alt.Chart | alt.LayerChart):
        return chart
    if chart.autosize is not alt.Undefined or chart.width is not alt.Undefined:
        return chart
    return chart.properties(autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def legend(columns: int = 1) -> alt.Legend:
    """Every entry shown: Vega cuts a legend that is taller than its chart, so long ones go in columns."""
    return alt.Legend(columns=columns, symbolLimit=0, labelLimit=240)


PCA_TITLE = "Per-token-loss PCA: every run's training trajectory"


MIN_ATTENTION = 0.01  # attention weights under this are left out of the vector heatmaps (drawn faint in the PNGs)


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


STRIP_LEVELS = 20  # shades of the token strips: a class each, so a strip token carries no style of its own
STRIP_RGB = (31, 119, 180)  # the token strips' blue at full weight (blended over white below it)


def _strip_css() -> str:
    rules = []
    for level in range(STRIP_LEVELS):
        alpha = level / (STRIP_LEVELS - 1)
        # Opaque colours (the blue blended over white), so the strip reads the same on a dark theme; `.toks>` so a
        # shade outranks the bare token's white.
        r, g, b = (round(255 + alpha * (c - 255)) for c in STRIP_RGB)
        rules.append(
            f".attn-view .toks>.w{level}{{background:rgb({r},{g},{b});color:{'#fff' if alpha > 0.55 else '#111'}}}"
        )
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
    return alt.layer(boxes, text).properties(
        width=alt.Step(cell),
        height=alt.Step(cell),
        title="Click a token to make it the destination",
        # The cells keep their size; title and legend are added around them (a plain chart would squeeze them in).
        autosize=alt.AutoSizeParams(type="pad", contains="padding"),
    )


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
    return alt.layer(bars, rule).properties(height=220, title="Per-token loss along the sequence")


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
EARLY_STAGE_COLOR = "#9e9e9e"


def _early_stage_layer(stage_end: int | None, first_tokens: int, log_x: bool) -> list[alt.Chart]:
    """The early stage (icl_core.analysis.phase.early_stage_end) shaded grey and named: its swing of the ICL
    score is positional, not in-context learning. On a linear axis over millions of tokens it is a sliver, so
    the name is written only on the log axis, where the stage takes a visible share of the width."""
    if not stage_end or stage_end <= first_tokens:
        return []
    df = pd.DataFrame({"start": [first_tokens], "end": [stage_end], "label": [EARLY_STAGE_LABEL]})
    base = alt.Chart(df)
    layers = [
        base.mark_rect(color=EARLY_STAGE_COLOR, opacity=0.18).encode(
            x="start:Q", x2="end:Q", tooltip=[alt.Tooltip("label:N", title="")]
        )
    ]
    if log_x:
        layers.append(
            base.mark_text(align="left", baseline="top", dx=3, dy=3, color="#616161", fontSize=11).encode(
                x="start:Q", y=alt.value(0), text=alt.value("early stage")
            )
        )
    return layers


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


ICL_SUBTITLE = "lower = more in-context learning · band: ±2 standard errors"  # under every ICL-score chart's title


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
    x_domain: tuple[int, int] | None = None,
    se: str | None = None,
    subtitle: str = "",
    log_x: bool = True,
    early_stage_end: int | None = None,
) -> alt.LayerChart:
    """A metric against tokens seen (log x, or linear as the paper draws it): phase-change window shaded orange,
    the early stage (`early_stage_end`: tokens) grey, induction onset dashed, selected step ruled.
    `subtitle`: how to read it, on a line of its own (a long title is cut to the chart's width).

    With `pick` (a parameter name), clicking near a point selects its snapshot: the points carry a click
    selection over the `step` field (the data needs a step column). With `se` (a column of standard errors),
    a band of ±2 standard errors is drawn around the line.
    """
    data = df[((df["tokens"] > 0) | (not log_x)) & df[y].notna()]  # log axis: step 0 (no tokens) has no place
    # Charts read together share x_domain (tokens seen): the phase window and the selected step line up.
    if log_x:
        x_scale = alt.Scale(type="log", domain=list(x_domain), nice=False) if x_domain else alt.Scale(type="log")
    else:
        x_scale = alt.Scale(domain=[0, x_domain[1]], nice=False) if x_domain else alt.Scale(zero=True)
    x = alt.X("tokens:Q", scale=x_scale, title="tokens seen" + (" (log scale)" if log_x else ""))
    enc: dict[str, Any] = {"x": x, "y": alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False))}
    tips = [c for c in ("step", "tokens", "head", "series") if c in data.columns]
    enc["tooltip"] = [*tips, alt.Tooltip(f"{y}:Q", format=".3f")]
    if color:
        scale = HEAD_SCALE if color == "head" else RUN_SCALE
        n_entries = data[color].nunique()
        enc["color"] = alt.Color(f"{color}:N", title=None, scale=scale, legend=legend(1 + (n_entries - 1) // 6))
    line = alt.Chart(data).mark_line(point=points and not pick, strokeWidth=1.8).encode(**enc)
    marks: list[alt.Chart] = [line]
    if se and se in data.columns and data[se].notna().any():
        band = data.assign(_lo=data[y] - 2 * data[se], _hi=data[y] + 2 * data[se])
        band_enc = {k: v for k, v in enc.items() if k in ("x", "color")}
        marks.insert(
            0,
            alt.Chart(band)
            .mark_area(opacity=0.25, **({} if color else {"color": SE_BAND_COLOR}))
            .encode(**band_enc, y=alt.Y("_lo:Q", title=y_title, scale=alt.Scale(zero=False)), y2="_hi:Q"),
        )
    if pick:
        # The points carry the selection (a line mark would report its first point); small ones when the
        # line had none, so the chart reads the same and clicks still have something to land on.
        size = 30 if points else 12
        marks.append(
            alt.Chart(data).mark_point(filled=True, size=size).encode(**enc).add_params(pick_param(pick, ["step"]))
        )
    positive = data["tokens"][data["tokens"] > 0]
    first = (x_domain[0] if x_domain else int(positive.min()) if len(positive) else 1) if log_x else 0
    layers = [
        *_early_stage_layer(early_stage_end, first, log_x),
        *_window_layer(window_tokens),
        *_onset_layer(onset_tokens),
        *marks,
        *_rule_layer(selected_tokens),
    ]
    return alt.layer(*layers).properties(
        title=alt.TitleParams(title, subtitle=subtitle) if subtitle else title, height=height
    )


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
    color = alt.Color("run:N", title="run", scale=RUN_SCALE)
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
    # One line per hint: Vega cuts a subtitle line at the chart's width (the click hint, at a projector's size).
    subtitle = [
        f"square: each run's first snapshot in the plane (step ≥ {PCA_MIN_STEP})",
        "ring: the selected step (nearest in tokens seen)"
        + (" · click a point to select its run and step" if pick else ""),
    ]
    return alt.layer(paths, *dots, starts, rings, names).properties(
        title=alt.TitleParams(PCA_TITLE, subtitle=subtitle),
        height=420,
    )


def _loss_curves_chart(shape: tuple[Any, ...], data: Mapping[str, Any], present: bool) -> alt.LayerChart:
    title, color_title, height, order, on_top, y_domain = shape
    y_scale = alt.Scale(domain=list(y_domain), nice=False) if y_domain else alt.Scale(zero=False)
    enc = {
        "x": alt.X("index:Q", scale=alt.Scale(type="log"), title="token index in the context (log scale)"),
        "y": alt.Y("loss:Q", title="mean loss (nats)", scale=y_scale),
        "color": alt.Color("series:N", title=color_title or None, sort=list(order), scale=RUN_SCALE, legend=legend()),
        "tooltip": ["series:N", "index:Q", alt.Tooltip("loss:Q", format=".3f")],
    }
    lines = [alt.Chart(data[DATA]).mark_line(strokeWidth=1.6, clip=True).encode(**enc)]
    if on_top:
        lines.append(alt.Chart(data[TOP]).mark_line(strokeWidth=2.6, clip=True).encode(**enc))
    marks = (
        alt.Chart(pd.DataFrame({"index": list(ICL_MARKS), "label": [f"token {t}" for t in ICL_MARKS]}))
        .mark_rule(color="#888", strokeDash=[3, 3])
        .encode(x="index:Q", tooltip=["label"])
    )
    return alt.layer(marks, *lines).properties(title=title, height=height)


LOG_POINTS_PER_DECADE = 40  # finer than a line on a log axis shows


def log_spaced(last: int, per_decade: int = LOG_POINTS_PER_DECADE) -> np.ndarray:
    """Token indices 1..last, as many as a log-x line needs: every one at first, then ~per_decade per decade.

    All 511 points of a loss curve cost Vega ~30 ms per data update in the browser, on every head toggle of the
    Ablation page; ~80 draw the same line on a log axis. The ICL score's tokens (50, 500) are always in, so the
    tooltips at the dashed marks read the exact values.
    """
    if last < 1:
        return np.array([], dtype=int)
    count = int(per_decade * np.log10(last)) + 1
    marks = [t for t in ICL_MARKS if t <= last]
    return np.unique(np.concatenate([np.round(np.geomspace(1, last, max(count, 2))).astype(int), np.array(marks, int)]))


def loss_curves(
    df: pd.DataFrame,
    title: str,
    color_title: str = "",
    height: int = 260,
    on_top: str | None = None,
    y_from: Sequence[str] | None = None,
    present: bool = False,
    series: Sequence[str] | None = None,
) -> FilledChart:
    """Loss against token index (log x), one line per series, with the ICL score's tokens 50 and 500 marked.

    `on_top`: the series drawn last (over the others); `y_from`: the series that set the y-range (others are
    clipped), so a much higher curve (step 0) does not flatten the in-context drop of the ones that matter.
    `series`: every series the chart may show, in legend order, when some come and go (the ablated curve): the
    layout then stays the same, and the browser swaps the data instead of building a new chart.
    """
    data = df[df["index"].isin(log_spaced(int(df["index"].max())))] if len(df) else df
    y_domain = None
    if y_from:
        shown = data[data["series"].isin(list(y_from))]["loss"]
        if len(shown):
            pad = 0.05 * float(shown.max() - shown.min()) or 0.1
            y_domain = (float(shown.min()) - pad, float(shown.max()) + pad)
    order = tuple(series) if series is not None else tuple(dict.fromkeys(data["series"]))
    below = data[data["series"] != on_top] if on_top else data
    datasets = {DATA: below, **({TOP: data[data["series"] == on_top]} if on_top else {})}
    shape = (title, color_title, height, order, on_top, y_domain)
    return FilledChart(_loss_curves_chart, shape, present, datasets)


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


def smooth(values: np.ndarray, window: int = 9) -> np.ndarray:
    """Centred moving average (edges use what is there), to read a noisy small-batch loss curve."""
    if len(values) < window:
        return values
    kernel = np.ones(window)
    num = np.convolve(values, kernel, mode="same")
    den = np.convolve(np.ones_like(values), kernel, mode="same")
    return num / den


# ---------------------------------------------------------------------------------------------
# Circuits and attribution charts


def _head_axis(n_heads: int) -> alt.Axis:
    # Every head labelled (Vega would drop "overlapping" ones in a narrow column); upright when there are many.
    return alt.Axis(labelAngle=0 if n_heads <= 12 else -90, labelOverlap=False)


COMPOSITION_ROW_PX = 520  # the three facets' plot width that, with axes, fits a 1024 px page with the sidebar


def composition_heatmaps(comp: circuits.CompositionScores) -> alt.FacetChart:
    """K, Q and V composition side by side: earlier heads down, later heads across, baseline subtracted."""
    df = pd.DataFrame(comp.records())
    df["composition"] = df["kind"].map(KIND_LABEL)
    df["score"] = df["score"].round(3)
    df["raw"] = df["raw"].round(3)
    top = float(max(df["score"].abs().max(), 0.05))
    base = alt.Chart().encode(
        x=alt.X("late:N", title="later head (reads)", sort=comp.col_labels, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("early:N", title="earlier head (writes)", sort=comp.row_labels),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            "score:Q",
            scale=alt.Scale(scheme=DIVERGING, domain=[-top, top], domainMid=0),
            title="score − baseline",
            legend=alt.Legend(orient="bottom"),  # beside the facets it pushed the chart past a 1024 px page
        ),
        tooltip=["composition", "early", "late", alt.Tooltip("score:Q", format="+.3f"), alt.Tooltip("raw:Q")],
    )
    text = base.mark_text(fontSize=11).encode(text=alt.Text("score:Q", format="+.2f"))
    width = min(42 * max(len(comp.col_labels), 1), 300)
    return (
        alt.layer(rect, text, data=df)
        .properties(width=width, height=min(30 * len(comp.row_labels), 300))
        .facet(
            facet=alt.Facet("composition:N", title=None, sort=[KIND_LABEL[k] for k in circuits.COMPOSITION_KINDS]),
            # Side by side while three fit a 1024 px page (a 2-layer model's 4 later heads); stacked beyond that.
            columns=3 if 3 * width <= COMPOSITION_ROW_PX else 1,
        )
        .properties(
            title=alt.TitleParams(
                "Composition scores, random baseline subtracted",
                subtitle=f"baseline (mean score of random matrices of the same shapes) = {comp.baseline:.3f}",
            )
        )
    )


def copying_bars(rows: list[dict[str, object]]) -> alt.Chart:
    """Per head: eigenvalue (Elhage et al.) and empirical (Olsson et al.) copying scores, both in [-1, 1]."""
    df = pd.DataFrame(rows)
    long = df.melt(
        id_vars=["head", "layer"], value_vars=["eigenvalue", "empirical"], var_name="score", value_name="value"
    )
    long["value"] = long["value"].round(3)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=list(df["head"]), axis=_head_axis(len(df))),
            xOffset=alt.XOffset("score:N"),
            y=alt.Y("value:Q", title="copying score", scale=alt.Scale(domain=[-1, 1])),
            color=alt.Color("score:N", title=None),
            tooltip=["head", "score", alt.Tooltip("value:Q", format="+.3f")],
        )
        .properties(title="Copying scores per head (positive = copies the attended token)", height=240)
    )


def circuit_heatmap(cm: circuits.CircuitMatrix, subtitle: str = "", value_title: str = "score") -> alt.Chart:
    """A token x token matrix as a heatmap, rows and columns in the matrix's own order (diverging around 0)."""
    m = np.asarray(cm.matrix, dtype=float)
    rows, cols = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    df = pd.DataFrame(
        {
            "row": np.asarray(cm.row_labels, dtype=object)[rows.ravel()],
            "col": np.asarray(cm.col_labels, dtype=object)[cols.ravel()],
            "value": np.round(m.ravel(), 3),
        }
    ).dropna()
    finite = m[np.isfinite(m)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    cell = int(np.clip(380 / max(m.shape[1], 1), 8, 16))  # fits a half-width column unscaled
    font = int(np.clip(cell - 2, 7, 12))
    return (
        alt.Chart(df)
        .mark_rect()
        .encode(
            x=alt.X(
                "col:N",
                title=cm.col_axis,
                sort=list(cm.col_labels),
                axis=alt.Axis(
                    labelAngle=0, labelFont="monospace", labelFontSize=font, orient="top", labelOverlap=False
                ),
            ),
            y=alt.Y(
                "row:N",
                title=cm.row_axis,
                sort=list(cm.row_labels),
                axis=alt.Axis(labelFont="monospace", labelOverlap=False),
            ),
            color=alt.Color(
                "value:Q", scale=alt.Scale(scheme=DIVERGING, domain=[-top, top], domainMid=0), title=value_title
            ),
            tooltip=[
                alt.Tooltip("row:N", title=cm.row_axis),
                alt.Tooltip("col:N", title=cm.col_axis),
                alt.Tooltip("value:Q", format="+.3f"),
            ],
        )
        .properties(
            title=alt.TitleParams(cm.title, subtitle=subtitle) if subtitle else cm.title,
            width=cell * m.shape[1],
            height=cell * m.shape[0],
            # Streamlit fits a plain chart's axes and legend *inside* width x height, squeezing the cells under
            # their labels; "pad" keeps one label per cell.
            autosize=alt.AutoSizeParams(type="pad", contains="padding"),
        )
    )


def head_bars(df: pd.DataFrame, y: str, title: str, y_title: str, sort: list[str] | None = None) -> alt.Chart:
    """One bar per head, induction heads in the app's induction colour (df: head, is_induction, y)."""
    data = df.copy()
    data["kind"] = np.where(data["is_induction"], "induction head", "other head")
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=sort or list(data["head"]), axis=_head_axis(len(data))),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=alt.Color(
                "kind:N",
                title=None,
                scale=alt.Scale(domain=["induction head", "other head"], range=[TARGET_COLOR, OTHER_COLOR]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=["head", "kind", alt.Tooltip(f"{y}:Q", format="+.3f")],
        )
        .properties(title=title, height=300)
    )


def fuzzy_prefix_bars(rows: list[dict[str, object]], kinds_label: dict[str, str]) -> alt.Chart:
    """Per head: prefix-matching score on exact, case-flipped and nearest-neighbour repeats."""
    df = pd.DataFrame(rows)
    df["repeat"] = df["kind"].map(kinds_label)
    df["prefix_matching"] = df["prefix_matching"].round(3)
    order = [kinds_label[k] for k in fuzzy.PERTURBATIONS if k in kinds_label]
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X("head:N", title=None, sort=list(dict.fromkeys(df["head"])), axis=_head_axis(df["head"].nunique())),
            xOffset=alt.XOffset("repeat:N", sort=order),
            y=alt.Y("prefix_matching:Q", title="prefix-matching score", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("repeat:N", title="first copy", sort=order),
            tooltip=["head", "repeat", alt.Tooltip("prefix_matching:Q", format=".3f")],
        )
        .properties(title="Fuzzy prefix matching: attention to the token after the perturbed match", height=240)
    )


def fuzzy_loss_bars(df: pd.DataFrame) -> alt.Chart:
    """Second-copy loss of the true next token and of the literal copy, per perturbation (df: repeat, measure, loss)."""
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y(
                "repeat:N",
                title=None,
                sort=list(dict.fromkeys(df["repeat"])),
                axis=alt.Axis(labelLimit=200, labelOverlap=False),
            ),
            yOffset=alt.YOffset("measure:N"),
            x=alt.X("loss:Q", title="loss (nats)"),
            color=alt.Color(
                "measure:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=300)
            ),
            tooltip=["repeat", "measure", alt.Tooltip("loss:Q", format=".3f")],
        )
        .properties(title="Loss on the second copy", height=240)
    )


LOSS_CHANGE_LEVELS = 8  # shades each way: better after (blue) and worse after (red)
LOSS_CHANGE_FULL_NATS = 3.0  # a change this large or larger takes the darkest shade


def _loss_change_css() -> str:
    rules = []
    for level in range(1, LOSS_CHANGE_LEVELS + 1):
        alpha = level / LOSS_CHANGE_LEVELS
        for name, rgb in (("b", STRIP_RGB), ("r", (214, 39, 40))):
            r, g, b = (round(255 + alpha * (c - 255)) for c in rgb)
            rules.append(
                f".loss-change .{name}{level}{{background:rgb({r},{g},{b});color:{'#fff' if alpha > 0.55 else '#111'}}}"
            )
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
