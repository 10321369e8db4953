"""The training timeline on a page: a custom component (ui/timeline.js) that scrubs and plays through every
snapshot in the browser, from a package built once per run (Phase change) or per text (Attention).

Moving through training costs the server nothing; the component sends the snapshot on screen back once, when
play pauses or the scrubber is released, and `state.set_step` makes it the app's shared step. A text's package
needs one forward pass per snapshot: it is built on a worker thread while the page draws its current-step views,
and the timeline's slot says "Preparing the timeline" until it is there. A run whose build would pass
MAX_BUILD_S (large imported models) keeps the server-side Play button instead, and the page says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from icl_core.analysis.phase import best_induction_head
from icl_core.analysis.text import analyze_tokens, prepare_text
from icl_core.analysis.timeline import (
    HeatmapWindow,
    TextOverTraining,
    text_frames,
    text_over_training,
)
from icl_core.heads import Head, head_name
from icl_core.storage.snapshots import SnapshotInfo, load_model
from ui import play, runs, server, state, widget_state
from ui.chrome import presenting
from ui.quote import user_text
from ui.theme import STRIP_RGB, TARGET_COLOR
from ui.training_charts import TIMELINE_EVENT

_HERE = Path(__file__).parent
_COMPONENT = st.components.v2.component(
    "icl_timeline",
    js=(_HERE / "timeline.js").read_text(encoding="utf-8"),
    css=(_HERE / "timeline.css").read_text(encoding="utf-8"),
)
COMMIT = "commit"  # the component's trigger: the step on screen when play paused or the scrubber was let go
MAX_BUILD_S = 5.0  # a text's package that would take longer keeps server-side stepping (issue 32's bound)
ESTIMATE_FROM = 3  # snapshots timed before the build's cost is estimated
BUILD_NICENESS = 10  # the build thread's priority: below the page scripts and forwards visitors wait for
WAIT_TICK_S = 0.05  # how often the page looks at a build in progress (each look lets a click interrupt the run)
# Texts kept over training per process (13 MB each for 128 tokens on the 3-layer run, ~1 MB for a sentence on
# attn2). A class types one text each: with 4 kept, the preset every visitor opens first was pushed out and rebuilt
# behind the others' texts (Attention page p95 12.7 s, 10 visitors: benchmarks/classroom.py). KEEP_BYTES bounds it.
KEEP_TEXTS = 32
KEEP_BYTES = 128_000_000  # and at most this much of them (a 512-token text on it holds 214 MB: kept alone)
TEXT_IDLE_S = 120.0  # a text no page asked for in this long is dropped once visitors leave (server.on_release)
KEEP_RUN_MODELS = 2  # runs whose snapshot models the build thread keeps loaded (attn3's 68: ~30 MB): loading them
# was 40% of a build (py-spy, 10 visitors)


COMMITTED = "_timeline_committed"  # a commit arrived: a fragment holding the timeline reruns the whole app


def _take_commit(key: str) -> None:
    step = getattr(st.session_state.get(key), COMMIT, None)
    if isinstance(step, int):
        state.set_step(step)
        st.session_state[COMMITTED] = True


def follow_commit() -> None:
    """Call first in a fragment that draws a timeline: a commit reruns only the fragment it came from, but the
    sidebar, the link and the rest of the page must follow the new step, so the whole app reruns at once."""
    if st.session_state.pop(COMMITTED, False):
        st.rerun(scope="app")


def draw(package: dict[str, Any], key: str) -> None:
    """The timeline for this package (phase or text frames); its commit sets the shared step (in a fragment, call
    follow_commit first)."""
    st.session_state.pop(COMMITTED, None)  # this run draws every page element: nothing left to follow
    frames = {k: v for k, v in package.items() if k != "index"}
    _COMPONENT(
        data={
            **package,
            # The same frames on a rerun (another step, another widget) keep the views the browser built for them.
            "frames_id": hashlib.blake2b(json.dumps(frames, sort_keys=True).encode(), digest_size=12).hexdigest(),
            "colors": {"attention": list(STRIP_RGB), "target": TARGET_COLOR},
            "present": presenting(),
            "event": TIMELINE_EVENT,  # what the charts bound to the timeline listen for (ui/training_charts.py)
        },
        key=key,
        on_commit_change=lambda: _take_commit(key),
        width="stretch",
    )


class TimelineTooSlow(Exception):
    """Building this run's timeline would take longer than MAX_BUILD_S."""


@dataclass
class _Build:
    future: Future[TextOverTraining]
    done_snapshots: int = 0
    total: int = 0
    used: float = field(default_factory=time.monotonic)  # when a page last asked for it


class _Builds:
    """Texts over training, built on one worker thread per process, kept for the last few texts."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timeline")
        self._lock = threading.Lock()
        self._builds: OrderedDict[Hashable, _Build] = OrderedDict()
        self._models: OrderedDict[Hashable, dict[Path, Any]] = OrderedDict()  # run -> loaded snapshot models

    def models_of(self, run: Hashable) -> dict[Path, Any]:
        """The build thread's loaded models of one run (only that thread touches them: one worker)."""
        with self._lock:
            models = self._models.setdefault(run, {})
            self._models.move_to_end(run)
            while len(self._models) > KEEP_RUN_MODELS:
                self._models.popitem(last=False)
            return models

    def get(self, key: Hashable, snaps: Sequence[SnapshotInfo], text: str) -> _Build:
        with self._lock:
            build = self._builds.get(key)  # a failed build is kept too: the key changes when the run's files do
            if build is not None:
                self._builds.move_to_end(key)
                build.used = time.monotonic()
                return build
            build = _Build(Future(), 0, len(snaps))
            run = key[0] if isinstance(key, tuple) else key
            build.future = self._pool.submit(lambda: _forward_all(snaps, text, build, self.models_of(run)))
            self._builds[key] = build
            self._trim()
            return build

    def forget_idle(self, idle_s: float = TEXT_IDLE_S) -> None:
        """Drop the finished texts no page asked for in `idle_s`, and the loaded models with them when none is
        left (called when visitors leave: server.on_release)."""
        now = time.monotonic()
        with self._lock:
            for key in [k for k, b in self._builds.items() if b.future.done() and now - b.used > idle_s]:
                del self._builds[key]
            if not self._builds:
                self._models.clear()

    def _trim(self) -> None:
        """Forget the oldest finished texts past KEEP_TEXTS or KEEP_BYTES (the newest is always kept)."""

        def size(build: _Build) -> int:
            finished = build.future.done() and build.future.exception() is None
            return build.future.result().nbytes if finished else 0

        while len(self._builds) > 1:
            total = sum(size(b) for b in self._builds.values())
            if len(self._builds) <= KEEP_TEXTS and total <= KEEP_BYTES:
                return
            oldest = next((k for k, b in self._builds.items() if b.future.done()), None)
            if oldest is None or oldest == next(reversed(self._builds)):
                return
            del self._builds[oldest]


def _forward_all(
    snaps: Sequence[SnapshotInfo], text: str, build: _Build, models: dict[Path, Any] | None = None
) -> TextOverTraining:
    """One forward pass per snapshot on models loaded by and for this thread (the pages' model cache, shared by
    every session under locks, is left alone); `models`: the run's models loaded by earlier builds, kept."""
    models = {} if models is None else models
    torch.set_num_threads(1)  # the app's forwards run on one thread each (ui/server.limit_torch_threads says why)
    # Below the visitors' own interactions: a build is background work (10: as `nice` gives; Linux threads have
    # their own priority, set by their native id).
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILD_NICENESS)
    analyses = []
    seconds = []  # this thread's CPU time per snapshot: what the build costs, whatever else the server is doing
    for i, snap in enumerate(snaps):
        started = time.thread_time()
        model = models.get(snap.weights_path)
        if model is None:
            model = models[snap.weights_path] = load_model(snap)
        prepared = prepare_text(text, snap.model_config.n_ctx, model.require_tokenizer())
        analyses.append(analyze_tokens(model, prepared.tokens))
        seconds.append(time.thread_time() - started)
        build.done_snapshots = i + 1
        if i + 1 == min(ESTIMATE_FROM, len(snaps)):  # the first snapshot also pays for warming up: a median
            estimate = statistics.median(seconds) * len(snaps)
            if estimate > MAX_BUILD_S:
                raise TimelineTooSlow(
                    f"a snapshot takes {statistics.median(seconds):.2f} s of CPU, so all {len(snaps)} would take "
                    f"{estimate:.0f} s, over {MAX_BUILD_S:g} s"
                )
    return text_over_training(analyses)


@st.cache_resource(show_spinner=False)
def _builds() -> _Builds:
    builds = _Builds()
    server.on_release(builds.forget_idle)
    return builds


def text_over_training_of(
    run_signature: Hashable, snaps: Sequence[SnapshotInfo], text: str, slot: Any
) -> TextOverTraining | None:
    """The text's forward passes at every snapshot, waited for in `slot` ("Preparing the timeline" and its
    progress); None, with the reason in `slot`, when the run is too slow to build (server-side Play instead)."""
    build = _builds().get((run_signature, text), snaps, text)
    shown = None
    while not build.future.done():
        progress = f"⏳ Preparing the timeline: {build.done_snapshots} of {build.total} snapshots…"
        if progress != shown:  # every write is a message the browser draws, beside the page's first views
            slot.caption(progress)
            shown = progress
        time.sleep(WAIT_TICK_S)
    try:
        return build.future.result()
    except TimelineTooSlow as exc:
        slot.caption(f"The timeline runs on the server for this run: {exc}. ▶ Play steps through the snapshots.")
    except Exception as exc:  # an optional view: whatever broke it (a corrupt snapshot, ...) is said, not raised
        slot.warning(f"No timeline for this text: {user_text(exc, 300)}. ▶ Play steps through the snapshots.")
    return None


def text_timeline(
    key: str,
    run_signature: Hashable,
    snaps: Sequence[SnapshotInfo],
    text: str,
    dest: int,
    heatmap: HeatmapWindow,
    selected_step: int,
) -> None:
    """The Attention page's timeline for one text and destination token (server-side Play where it is too slow)."""
    slot = st.empty()
    over = text_over_training_of(run_signature, snaps, text, slot)
    if over is None:
        with st.container(horizontal=True):
            play.play_button([s.step for s in snaps], key=f"{key}_play")
        return
    with slot.container():
        draw(text_frames(snaps, over, dest, heatmap, runs.tokenizer_of(snaps[-1]), selected_step), key)


HEATMAP_HEAD_KEY = "attn_timeline_head"  # the head whose heatmap the Attention page's timeline shows


def text_section(sel: state.Selection, text: str, dest: int, heads: list[Head], start: int, size: int) -> None:
    """The Attention page's "Over training": this text's views at every snapshot of the selected run, from the
    destination token `dest`, with one head's heatmap over tokens start..start+size-1 (the page's heatmap window)."""
    st.markdown(
        f"**Over training** · step {sel.step:,} now: press ▶ Play and watch the induction stripe appear at the "
        "phase change; drag or use the arrow keys to move through the snapshots."
    )
    names = [head_name(h) for h in heads]
    best = best_induction_head(sel.snapshot)
    widget_state.settle(HEATMAP_HEAD_KEY, names, head_name(best) if best else names[-1])
    head = heads[names.index(st.columns([1, 3])[0].selectbox("Heatmap head", names, key=HEATMAP_HEAD_KEY))]
    window = HeatmapWindow(head, start, size)
    text_timeline("attn_timeline", runs.run_signature(sel.run.path), sel.snapshots, text, dest, window, sel.step)
