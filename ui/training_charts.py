"""Charts over training (a metric against tokens seen, log or linear, with the early stage, the phase-change
window, the induction onset and the selected step), the loss-PCA plane and loss curves against token index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import altair as alt
import numpy as np
import pandas as pd

from icl_core.analysis.pca import PCA_MIN_STEP
from icl_core.analysis.phase import EARLY_STAGE_LABEL
from icl_core.model.config import ICL_FORMULA
from ui.theme import (
    EARLY_STAGE_COLOR,
    HEAD_SCALE,
    ICL_MARKS,
    ONSET_COLOR,
    RUN_SCALE,
    SE_BAND_COLOR,
    SELECT_COLOR,
    WINDOW_COLOR,
    legend,
)
from ui.vega import DATA, TOP, FilledChart, pick_param

PCA_TITLE = "Per-token-loss PCA: every run's training trajectory"
ICL_TITLE = f"ICL score: {ICL_FORMULA}"  # every chart of the ICL score over training


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


STAGE_COLOR = {"detected": "#455a64", "published": "#00897b"}


def _stage_layer(stages: pd.DataFrame | None) -> list[alt.Chart]:
    """Stage boundaries (columns tokens, label, kind: detected or published) as dashed rules, one colour each."""
    if stages is None or stages.empty:
        return []
    kinds = sorted(stages["kind"].unique())
    color = alt.Color(
        "kind:N",
        title="stage boundary",
        scale=alt.Scale(domain=kinds, range=[STAGE_COLOR[k] for k in kinds]),
        legend=alt.Legend(orient="bottom"),
    )
    return [
        alt.Chart(stages)
        .mark_rule(strokeDash=[2, 3], strokeWidth=1.6)
        .encode(x="tokens:Q", color=color, tooltip=[alt.Tooltip("label:N", title=""), "tokens:Q"])
    ]


def _rule_layer(selected_tokens: int | None) -> list[alt.Chart]:
    if not selected_tokens:
        return []
    return [
        alt.Chart(pd.DataFrame({"tokens": [selected_tokens]}))
        .mark_rule(color=SELECT_COLOR, strokeWidth=2)
        .encode(x="tokens:Q")
    ]


# The training timeline's frame (ui/timeline.js) as a chart parameter evaluated in the browser: bound to
# document.body, which the timeline sets and signals on every frame (Vega-Lite's BindDirect), so every chart
# drawn with it follows the scrubber and Play with no server round trip. Unset until a timeline is on the page:
# then nothing is marked.
TIMELINE_PARAM, TIMELINE_EVENT = "timeline_index", "icl-timeline"
_ON_FRAME = f"datum.frame === {TIMELINE_PARAM}"  # the timeline sets a number; any other value marks nothing


def timeline_param() -> alt.Parameter:
    return alt.param(name=TIMELINE_PARAM, bind=alt.BindDirect(element="body", event=TIMELINE_EVENT))


def timeline_frames(tokens: Sequence[int]) -> pd.DataFrame:
    """The timeline's frames (one per snapshot, in order) and their tokens seen: the data of a timeline rule."""
    return pd.DataFrame({"frame": range(len(tokens)), "tokens": list(tokens)})


def _timeline_rule_layer(frames: pd.DataFrame | None, log_x: bool) -> list[alt.Chart]:
    if frames is None:
        return []
    shown = frames[frames["tokens"] > 0] if log_x else frames  # a log axis has no place for step 0
    return [
        alt.Chart(shown).transform_filter(_ON_FRAME).mark_rule(color=SELECT_COLOR, strokeWidth=2).encode(x="tokens:Q")
    ]


ICL_SUBTITLE = "lower = more in-context learning · band: ±2 standard errors"  # under every ICL-score chart's title
REPEATED_SUBTITLE = (
    "251 random tokens, then the same again: token 500 repeats one seen before, token 50 does not · "
    "no training data holds them"
)


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
    timeline: pd.DataFrame | None = None,
    stages: pd.DataFrame | None = None,
) -> alt.LayerChart:
    """A metric against tokens seen (log x, or linear as the paper draws it): phase-change window shaded orange,
    the early stage (`early_stage_end`: tokens) grey, induction onset dashed, selected step ruled.
    `subtitle`: how to read it, on a line of its own (a long title is cut to the chart's width).

    With `pick` (a parameter name), clicking near a point selects its snapshot: the points carry a click
    selection over the `step` field (the data needs a step column). With `se` (a column of standard errors),
    a band of ±2 standard errors is drawn around the line. With `timeline` (timeline_frames), the selected step's
    rule follows the page's training timeline in the browser instead of `selected_tokens`. With `stages`
    (tokens, label, kind), stage boundaries are drawn as dashed rules.
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
            .mark_area(opacity=0.25, color=alt.Undefined if color else SE_BAND_COLOR)
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
        *_stage_layer(stages),
        *marks,
        *(_timeline_rule_layer(timeline, log_x) if timeline is not None else _rule_layer(selected_tokens)),
    ]
    chart = cast(
        alt.LayerChart,
        alt.layer(*layers).properties(
            title=alt.TitleParams(title, subtitle=subtitle) if subtitle else title, height=height
        ),
    )
    return chart.add_params(timeline_param()) if timeline is not None else chart


def _padded_domain(values: pd.Series, pad: float = 0.05) -> alt.Scale:
    lo, hi = float(values.min()), float(values.max())
    margin = pad * (hi - lo) or 0.5
    return alt.Scale(domain=[lo - margin, hi + margin], nice=False)


def pca_chart(
    rows: list[dict[str, Any]],
    highlighted: list[dict[str, Any]],
    explained: tuple[float, float],
    pick: str | None = None,
    timeline: bool = False,
) -> alt.LayerChart:
    """Every run's trajectory in the PC1-PC2 plane; the selected snapshot ringed on each run.

    With `pick` (a parameter name), clicking near a point selects it: a click selection over (run, step).
    With `timeline`, `highlighted` holds the rings of every frame of the page's training timeline (a `frame`
    column), and the rings shown follow it in the browser.
    """
    df = pd.DataFrame(rows)
    hl = pd.DataFrame(highlighted) if highlighted else pd.DataFrame(columns=[*df.columns, "focus", "frame"])
    # Fixed domains: with data-driven ones, every frame of the timeline (a new ring) recomputed both scales and
    # redrew the axes (a third of a frame's time in the browser).
    x = alt.X("pc1:Q", title=f"PC1 ({explained[0]:.0%} of variance)", scale=_padded_domain(df["pc1"]))
    y = alt.Y("pc2:Q", title=f"PC2 ({explained[1]:.0%} of variance)", scale=_padded_domain(df["pc2"]))
    tips = ["run:N", "step:Q", "tokens:Q", alt.Tooltip("icl_score:Q", format="+.3f", title="ICL score")]
    # A fixed colour domain too: with one unioned from every layer's data, each new ring re-encoded every point.
    runs = sorted(df["run"].unique())
    color = alt.Color("run:N", title="run", scale=alt.Scale(domain=runs, range=RUN_SCALE.range))
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
    ringed = alt.Chart(hl).transform_filter(_ON_FRAME) if timeline else alt.Chart(hl)
    rings = ringed.mark_point(size=420, filled=False, strokeWidth=3).encode(x=x, y=y, color=color, tooltip=tips)
    names = ringed.mark_text(dx=14, dy=-12, align="left", fontWeight="bold").encode(x=x, y=y, text="run:N", color=color)
    # One line per hint: Vega cuts a subtitle line at the chart's width (the click hint, at a projector's size).
    subtitle = [
        f"square: each run's first snapshot in the plane (step ≥ {PCA_MIN_STEP})",
        "ring: the selected step (nearest in tokens seen)"
        + (" · click a point to select its run and step" if pick else ""),
    ]
    chart = cast(
        alt.LayerChart,
        alt.layer(paths, *dots, starts, rings, names).properties(
            title=alt.TitleParams(PCA_TITLE, subtitle=subtitle), height=420
        ),
    )
    return chart.add_params(timeline_param()) if timeline else chart


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
    return cast(alt.LayerChart, alt.layer(marks, *lines).properties(title=title, height=height))


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


def sgld_traces(df: pd.DataFrame, title: str) -> alt.Chart:
    """SGLD's diagnostics: each chain's loss above the starting weights' loss on the same batch (columns sgld_step,
    excess, chain). A trustworthy estimate's chains rise quickly, then run flat and together; a chain still
    climbing, or one far above the others, says the estimate is not to be trusted."""
    return (
        alt.Chart(df)
        .mark_line(strokeWidth=1.2, opacity=0.85)
        .encode(
            x=alt.X("sgld_step:Q", title="SGLD step"),
            y=alt.Y("excess:Q", title="loss − loss at the snapshot (nats)"),
            color=alt.Color("chain:N", title="chain", legend=alt.Legend(orient="bottom")),
            tooltip=["chain:N", "sgld_step:Q", alt.Tooltip("excess:Q", format=".4f")],
        )
        .properties(title=title, height=230)
    )


def _valid_domain(data: pd.DataFrame, value: str, valid: str) -> list[float] | Any:
    shown = data.loc[data[valid], value]
    return [float(shown.min()), float(shown.max())] if len(shown) else alt.Undefined


def heads_over_training(
    df: pd.DataFrame, value: str, title: str, window_tokens: tuple[int, int] | None, valid: str
) -> alt.LayerChart:
    """Heads × tokens seen (log): each head's row coloured by `value` from each estimated snapshot (`tokens`) to
    the next (`next_tokens`), the phase-change window ruled; grey where the boolean column `valid` is false (the
    colour scale spans the valid cells only). Reads at a glance which heads change, and when."""
    data = df[df["tokens"] > 0]
    x = alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens seen (log scale)")
    cells = (
        alt.Chart(data)
        .mark_rect()
        .encode(
            x=x,
            x2="next_tokens:Q",
            y=alt.Y("head:N", title=None, sort="ascending"),
            color=alt.condition(
                f"datum.{valid}",
                alt.Color(
                    f"{value}:Q",
                    title=value,
                    scale=alt.Scale(scheme="viridis", domain=_valid_domain(data, value, valid)),
                ),
                alt.value("#dddddd"),
            ),
            tooltip=["head:N", "step:Q", "tokens:Q", alt.Tooltip(f"{value}:Q", format=".1f")],
        )
    )
    layers: list[alt.Chart] = [cells]
    if window_tokens is not None:
        edges = pd.DataFrame({"tokens": [max(t, 1) for t in window_tokens]})
        layers.append(alt.Chart(edges).mark_rule(color=WINDOW_COLOR, strokeWidth=2).encode(x="tokens:Q"))
    return cast(alt.LayerChart, alt.layer(*layers).properties(title=title, height=22 * data["head"].nunique() + 40))
