"""Charts of heads: composition and circuit heatmaps, copying scores, and bars per head (ablation, attribution,
fuzzy copying).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from icl_core.analysis import circuits, fuzzy
from ui.theme import DIVERGING, OTHER_COLOR, TARGET_COLOR

KIND_LABEL = {"K": "K-composition", "Q": "Q-composition", "V": "V-composition"}


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
