"""The Vega-Lite spec machinery: Altair charts turned into the spec Streamlit sends, and charts drawn from a
layout built once per shape with fresh data. The only module that touches Streamlit's private chart code
(tests/test_charts_spec.py fails loudly when a Streamlit upgrade changes what it relies on).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import altair as alt
import pandas as pd

from ui.theme import SUBTITLE_COLOR

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


def pick_param(name: str, fields: Sequence[str]) -> alt.Parameter:
    """A click selection of the nearest point, reporting `fields` (Streamlit returns them: see picks.chart_pick)."""
    return alt.selection_point(name=name, fields=list(fields), on="click", nearest=True)


_MEMO: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
_MEMO_LOCK = threading.Lock()
MEMO_SPECS = 256  # finished specs kept per process (a run's Phase change charts: 5 per run, view and theme)


def memo_spec(present: bool, build: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The finished spec of the Altair chart build(*args, **kwargs) draws, built once per distinct inputs.

    A commit on the timeline reruns the Phase change page, whose charts depend on the run, not on the step (the
    step's rule follows the browser's timeline): Altair rebuilt the same five specs on every rerun of every
    visitor, ~30% of the page's server time (py-spy, 10 visitors, benchmarks/classroom.py). Data frames are keyed
    by their contents (pandas' row hashes), everything else by repr. Streamlit takes the top-level "datasets"
    and "data" out of the spec it is given: each call gets a shallow copy."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{build.__module__}.{build.__qualname__}|{present}".encode())
    for value in [*args, *sorted(kwargs.items())]:
        _hash_into(digest, value)
    key = digest.digest()
    with _MEMO_LOCK:
        spec = _MEMO.get(key)
        if spec is not None:
            _MEMO.move_to_end(key)
            return dict(spec)
    spec = vega_lite_spec(finish(build(*args, **kwargs), present))
    with _MEMO_LOCK:
        _MEMO[key] = spec
        while len(_MEMO) > MEMO_SPECS:
            _MEMO.popitem(last=False)
    return dict(spec)


def _hash_into(digest: Any, value: Any) -> None:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], pd.DataFrame):  # a keyword's frame
        digest.update(repr(value[0]).encode())
        value = value[1]
    if isinstance(value, pd.DataFrame):
        digest.update(repr((list(value.columns), [str(t) for t in value.dtypes], value.shape)).encode())
        digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
    else:
        digest.update(repr(value).encode())
    digest.update(b"\x00")
