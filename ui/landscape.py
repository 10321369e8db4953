"""The Phase change page's loss-landscape section: the LLC over training with its stage boundaries, and the SGLD
chains behind the selected snapshot's estimate. A section takes its inputs as arguments (the page composes)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from icl_core.analysis import llc, stages
from icl_core.analysis.costs import say_seconds
from icl_core.analysis.summary import fmt_tokens
from icl_core.errors import ICLError
from icl_core.model.config import BYTES_TOKENIZER
from icl_core.storage.published import published_stage_boundaries
from icl_core.storage.snapshots import SnapshotInfo
from icl_core.tasks import llc_tasks
from ui import analyses, chrome, layout, runs, training_charts
from ui.blocks import block
from ui.quote import user_text
from ui.tables import html_table
from ui.visitor import visitor_key

LLC_EXPLAINED = (
    "The **local learning coefficient** (LLC, singular learning theory) counts how many directions around the "
    "snapshot's weights the loss really depends on: a simple solution leaves many directions free (low LLC), an "
    "elaborate one pins more of them down (high LLC). It is measured by letting noisy gradient steps (SGLD) wander "
    "near the weights and seeing how far the loss rises. Hoogland et al. 2024 split training into **stages** at "
    "the turning points of this curve; in their 2-layer model the induction heads form in the fourth."
)
STAGES_EXPLAINED = (
    "A **stage** is a stretch of training between two such turning points: while the LLC climbs the model "
    "is building something that ties down more of its weights; where it levels off or falls, it has settled "
    "or found a simpler way to do the same. The Phase change page draws the LLC under the ICL score on the same "
    "token axis, with the boundaries this app detects (its rule is stated under the chart), so you can see "
    "whether a boundary falls where the induction heads form."
)
LLC_ON_SHIPPED_RUNS = (
    "**What the shipped runs show** (README, checked by tests/test_llc.py): once its estimates are valid, every "
    "run's LLC only rises, to the end of training, and the rule finds **no boundary on any of the five**: here "
    "the LLC does not mark where the induction heads form. Inside the phase-change window the 2- and 3-layer "
    "runs' LLC grows somewhat faster than just before it, with every probe draw's window, but not by enough to "
    "be sure, given how much neighbouring snapshots' estimates scatter. Restricted to one head (the refined LLC, "
    "attn2 and attn3): the previous-token head and other layer-0 heads rise first, before the window; the "
    "induction head (attn2's L1H3, attn3's L2H2) rises above the other heads of its layer from the window's start "
    "on, by one to two units."
)


def llc_rows(snaps: Sequence[SnapshotInfo], estimates: dict[int, llc.LLCEstimate]) -> list[dict[str, Any]]:
    """One row per estimated snapshot: its LLC and the standard error of the chains' mean."""
    return [
        {
            "step": s.step,
            "tokens": s.tokens_seen,
            "llc": estimates[s.step].mean,
            "llc_se": estimates[s.step].std / math.sqrt(len(estimates[s.step].per_chain)),
        }
        for s in snaps
        if s.step in estimates
    ]


def rllc_rows(snaps: Sequence[SnapshotInfo], rllc: dict[int, dict[str, llc.LLCEstimate]]) -> list[dict[str, Any]]:
    """One row per (estimated snapshot, head): the head's refined LLC, its chains' standard error, and the tokens
    of the head's next estimated snapshot (where its cell ends on the heads × tokens chart)."""
    rows: list[dict[str, Any]] = [
        {
            "step": s.step,
            "tokens": s.tokens_seen,
            "head": head,
            "rllc": est.mean,
            "rllc_se": est.std / math.sqrt(len(est.per_chain)),
        }
        for s in snaps
        for head, est in sorted(rllc.get(s.step, {}).items())
    ]
    last: dict[str, dict[str, Any]] = {}
    for row in reversed(rows):  # each cell ends where the same head's next estimate starts (the last: a bit on)
        row["next_tokens"] = last[row["head"]]["tokens"] if row["head"] in last else int(row["tokens"] * 1.2)
        last[row["head"]] = row
    return rows


def draw_rllc(
    run_dir: Path, snaps: Sequence[SnapshotInfo], window_tokens: tuple[int, int] | None, valid_from: int | None
) -> None:
    """Each head's refined LLC over training (Wang et al. 2024), where the run carries it: heads × tokens seen, and
    how fast each head's grows before, in and after the phase-change window. `valid_from`: the tokens from which
    the whole model's LLC is valid (stages.first_valid_tokens); earlier cells are grey."""
    rllc = analyses.rllc_of(run_dir, snaps)
    rows = rllc_rows(snaps, rllc)
    if not rows:
        return
    df = pd.DataFrame(rows).assign(valid=lambda d: d["tokens"] >= (valid_from or 0))
    chart = chrome.memo_chart(
        training_charts.heads_over_training,
        df,
        "rllc",
        "Refined LLC per head (SGLD moves only that head's weights); orange rules: the phase-change window",
        window_tokens,
        "valid",
    )
    chrome.show_chart(chart, width="stretch")
    if window_tokens is not None:
        # Plain HTML, not st.dataframe: the grid's first draw reran the page while the timeline played.
        growth = pd.DataFrame(head_growth_rows(rows, window_tokens, valid_from))
        numbers = dict.fromkeys(("before", "inside", "after", "±"), ".1f")
        st.html(block("Refined LLC growth per decade of tokens", html_table(growth, formats=numbers)))
    cfg = snaps[-1].model_config
    complete = sum(1 for s in snaps if len(rllc.get(s.step, {})) == cfg.n_layers * cfg.n_heads)
    st.caption(
        f"{complete} of {len(snaps)} snapshots have every head's estimate (computed coarse to fine, so a partial "
        "sweep spans training; the rest: `python -m icl_core.analysis.llc_over_training RUN --heads`, resumable). "
        "Same SGLD settings as the LLC. Grey: before the whole model's LLC is valid"
        + (f" ({fmt_tokens(valid_from)} tokens)" if valid_from else " (it is not estimated: each head's own verdict)")
        + ". Growth per decade of tokens as for the LLC above (stages.growth_around_window)."
    )


def head_growth_rows(
    rows: list[dict[str, Any]], window_tokens: tuple[int, int], valid_from: int | None
) -> list[dict[str, Any]]:
    """Per head: its refined LLC's growth before, inside and after the window, with the s.e. from its scatter."""
    out = []
    for head in sorted({r["head"] for r in rows}):
        mine = [r for r in rows if r["head"] == head]
        tokens, values = [r["tokens"] for r in mine], [r["rllc"] for r in mine]
        g = stages.growth_around_window(tokens, values, *window_tokens, valid_from=valid_from)
        if g is not None:
            out.append({"head": head, "before": g.before, "inside": g.inside, "after": g.after, "±": g.se_per_decade})
    return out


def stage_rows(rows: list[dict[str, Any]], source_repo: str | None) -> list[dict[str, Any]]:
    """The detected boundaries (stages.stage_boundaries) and, for an imported run that has them, the published."""
    found = stages.stage_boundaries([r["tokens"] for r in rows], [r["llc"] for r in rows], [r["llc_se"] for r in rows])
    out = [{"tokens": t, "label": f"detected boundary ({fmt_tokens(t)} tokens)", "kind": "detected"} for t in found]
    for label, tokens in published_stage_boundaries(source_repo or ""):
        out.append({"tokens": tokens, "label": label, "kind": "published"})
    return out


def growth_text(rows: list[dict[str, Any]], window_tokens: tuple[int, int]) -> str:
    """The probe-free comparison with the phase-change window: how fast the LLC grows before, in and after it."""
    g = stages.growth_around_window([r["tokens"] for r in rows], [r["llc"] for r in rows], *window_tokens)
    if g is None:
        return "Too few valid LLC estimates to compare their growth with the window."

    def say(v: float | None) -> str:
        return "n/a (no valid estimates there)" if v is None else f"{v:,.1f}"

    return (
        f"Growth of the LLC per decade of tokens seen: before the window {say(g.before)}, inside it "
        f"{say(g.inside)}, after it {say(g.after)} (± {g.se_per_decade:,.1f} each; the outer stretches as wide as "
        f"the window; each end a mean of 3 snapshots; the ± comes from the snapshots' scatter of "
        f"{g.scatter:,.1f} about the smoothed curve, which is larger than the chains' spread)."
    )


def trace_rows(estimate: llc.LLCEstimate) -> list[dict[str, Any]]:
    block = max(1, estimate.settings.n_steps // max(len(estimate.init_trace), 1))  # stored as block means
    return [
        {"chain": f"chain {c + 1}", "sgld_step": i * block, "excess": float(x)}
        for c in range(len(estimate.loss_trace))
        for i, x in enumerate(estimate.excess_trace(c))
    ]


@st.fragment(run_every=2)
def _follow_task(run_dir: Path) -> None:
    """The running task's progress, polled; the page is drawn again when it ends (with every estimate)."""
    info = llc_tasks.llc_task_of(run_dir)
    if info is None or not info.active:
        st.rerun(scope="app")
        return
    st.progress(info.fraction, text=f"Estimating the LLC: {info.message}")
    if info.owner in (None, visitor_key()):
        st.button("Stop (what is done is kept)", key="llc_stop", on_click=_stop, args=(info,))


def llc_task_controls(run_dir: Path, snaps: Sequence[SnapshotInfo], n_estimated: int) -> None:
    """Start, follow, stop or resume the background task that estimates the missing snapshots (llc_tasks)."""
    info = llc_tasks.llc_task_of(run_dir)
    if info is not None and info.active:
        _follow_task(run_dir)
        return
    if info is not None and info.error:
        st.warning(f"The last LLC estimate stopped: {user_text(info.error, 300)}")
    n_snaps = len(snaps)
    cost = say_seconds(llc_tasks.estimated_seconds(snaps) * (n_snaps - n_estimated) / n_snaps)
    if not os.access(run_dir, os.W_OK):  # cheap on every rerun; starting the task tries a write (can_store)
        st.info(f"{n_estimated} of {n_snaps} snapshots carry an LLC estimate; this run's folder is read-only here.")
        return
    label = "Estimate the LLC" if n_estimated == 0 else "Go on estimating the LLC"
    st.button(
        f"{label} at the {n_snaps - n_estimated} snapshots left ({cost} of server CPU, in the background)",
        key="llc_start",
        on_click=_start,
        args=(run_dir,),
        help="SGLD chains at every snapshot, saved one snapshot at a time: leave the page, come back, or stop it; "
        "nothing done is lost. One estimate runs at a time on a shared server.",
    )


def _start(run_dir: Path) -> None:
    try:
        llc_tasks.start_llc_task(run_dir, owner=visitor_key())
    except ICLError as exc:
        st.toast(user_text(exc, 300))


def _stop(info: llc_tasks.LLCTaskInfo) -> None:
    try:
        llc_tasks.cancel_llc_task(info, owner=visitor_key())
    except ICLError as exc:
        st.toast(user_text(exc, 300))


def draw_llc_section(
    run_dir: Path,
    snaps: Sequence[SnapshotInfo],
    step: int,
    window_tokens: tuple[int, int] | None,
    axes: dict[str, Any],
) -> None:
    st.subheader("The loss landscape: local learning coefficient")
    st.caption(LLC_EXPLAINED)
    estimates = analyses.llc_of(run_dir, snaps)
    if len(estimates) < len(snaps):
        llc_task_controls(run_dir, snaps, len(estimates))
    if not estimates:
        draw_rllc(run_dir, snaps, window_tokens, None)  # a run may carry the per-head estimates alone
        return
    rows = llc_rows(snaps, estimates)
    marks = stage_rows(rows, runs.source_repo_of(run_dir))
    df = pd.DataFrame(rows)
    left, right = layout.panels("llc", 2)
    with left:
        chart = chrome.memo_chart(
            training_charts.over_training,
            df,
            "llc",
            "Local learning coefficient",
            "LLC",
            window_tokens,
            se="llc_se",
            points=False,
            stages=pd.DataFrame(marks) if marks else None,
            subtitle="band: ±2 s.e. over chains; dotted: stage boundaries",
            **axes,
        )
        chrome.show_chart(chart, width="stretch")
    shown = max((s for s in estimates if s <= step), default=min(estimates))
    estimate = estimates[shown]
    with right:
        title = f"SGLD chains at step {shown:,}: LLC {estimate.mean:,.1f} ± {estimate.std:,.1f} (sd over chains)"
        chrome.show_chart(training_charts.sgld_traces(pd.DataFrame(trace_rows(estimate)), title), width="stretch")
    s = estimate.settings
    detected = [m for m in marks if m["kind"] == "detected"]
    ours = snaps[-1].model_config.tokenizer == BYTES_TOKENIZER
    data_text = (
        "the training text" if ours else "the standard library's held-out text in its tokens (not its training data)"
    )
    st.caption(
        f"{len(estimates)} of {len(snaps)} snapshots estimated. SGLD as devinterp 2.0.1: step size ε {s.epsilon:g}, "
        f"nβ {s.n_beta:g}, localization γ {s.gamma:g}, {s.n_chains} chains × {s.n_steps} steps of {s.batch_size} "
        f"windows of {data_text} (benchmarks/llc_calibration.py chose the settings). Boundaries (after the last "
        f"negative estimate): where the curve, smoothed over {stages.SMOOTHING_DECADES} decades of tokens, "
        f"turns, unless the turn is under {stages.MIN_CHANGE_SE:g}x the noise (chains' s.e. or the snapshots' "
        "scatter, the larger): "
        + (", ".join(f"{fmt_tokens(m['tokens'])} tokens" for m in detected) if detected else "none")
        + ". A negative LLC means SGLD found lower loss nearby: the snapshot is not at a local minimum (as at "
        "initialisation), and the estimate does not measure degeneracy there."
    )
    if window_tokens is not None:
        st.caption(growth_text(rows, window_tokens))
    valid_from = stages.first_valid_tokens([r["tokens"] for r in rows], [r["llc"] for r in rows])
    draw_rllc(run_dir, snaps, window_tokens, valid_from)
