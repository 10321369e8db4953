"""Train page: start, watch, cancel and resume training jobs. All logic lives in icl_core.tasks.jobs."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from icl_core.errors import ICLError
from icl_core.model.config import (
    LIMITS,
    MAX_RUN_NAME,
    FormField,
    ModelConfig,
    TrainConfig,
    form_field,
    load_train_config,
)
from icl_core.server_policy import server_policy
from icl_core.storage.runs import REPO_ROOT
from icl_core.tasks import admission, jobs
from ui import state
from ui.quote import user_text
from ui.visitor import visitor_key

CONFIG_DIR = REPO_ROOT / "configs"
DEFAULTS_PRESET = "(defaults)"
MAX_ENDED_JOBS_SHOWN = 15

PROCESSES = "nproc"  # a form entry that is not a config field: how many processes train the run
BROWSER_MAX_INT = 2**53 - 1  # a browser number field holds integers up to this exactly
# The form's layout, row by row; each field's label, help, step and bounds come from its dataclass (model/config.py).
MODEL_ROWS = (
    ("model.n_layers", "model.n_heads", "model.d_model", "model.d_head", "model.n_ctx"),
    ("model.smeared_keys",),
)
TRAINING_ROWS = (
    ("batch_size", "total_steps", "lr", "seed"),
    ("n_snapshots", "eval_examples", "device", PROCESSES),
    ("compute_icl_score", "icl_examples"),
)
ADVANCED_ROWS = (
    ("warmup_steps", "weight_decay", "grad_clip"),
    ("lr_schedule", "n_dense_snapshots", "dense_from_step", "dense_to_step"),
    ("log_every", "resume_every", "snapshot_dtype"),
)
WIDE = {"compute_icl_score": 2}  # columns a field takes in its row (1 unless named): its label is long
# widget key -> path inside the config dict; the preset fills them, the form reads them back.
FIELDS: dict[str, tuple[str, ...]] = {
    f"train_{path.split('.')[-1]}": tuple(path.split("."))
    for rows in (MODEL_ROWS, TRAINING_ROWS, ADVANCED_ROWS)
    for row in rows
    for path in row
    if path != PROCESSES
}


def _form_field(path: tuple[str, ...]) -> FormField:
    return form_field(ModelConfig if path[0] == "model" else TrainConfig, path[-1])


FLOAT_KEYS = {key for key, path in FIELDS.items() if _form_field(path).kind == "float"}


def load_presets() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every configs/*.json as a full config dict (name -> dict), and the files that failed to load."""
    presets: dict[str, dict[str, Any]] = {}
    problems = []
    for path in sorted(Path(CONFIG_DIR).glob("*.json")):
        try:
            presets[path.stem] = load_train_config(path).to_dict()
        except ICLError as exc:
            problems.append(str(exc))
    presets[DEFAULTS_PRESET] = TrainConfig().to_dict()
    return presets, problems


def apply_preset(presets: dict[str, dict[str, Any]]) -> None:
    cfg = presets[st.session_state.train_preset]
    for key, path in FIELDS.items():
        value: Any = cfg
        for part in path:
            value = value[part]
        # number_input refuses an int value next to float bounds ("grad_clip": 1 in a JSON file).
        st.session_state[key] = float(value) if key in FLOAT_KEYS else value
    st.session_state.train_run_name = jobs.suggest_run_name(cfg["run_name"])
    st.session_state.train_nproc = 1


def config_from_widgets(presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # Start from the preset so fields without a widget keep the preset's value.
    cfg = copy.deepcopy(presets[st.session_state.train_preset])
    cfg["run_name"] = st.session_state.train_run_name.strip()
    for key, path in FIELDS.items():
        target = cfg
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = st.session_state[key]
    return cfg


def submit(presets: dict[str, dict[str, Any]]) -> None:
    # A callback, so the suggested next run name can be set before the widgets are drawn again.
    try:
        info = jobs.submit_job(
            config_from_widgets(presets), nproc=int(st.session_state.train_nproc), owner=visitor_key()
        )
    except ICLError as exc:
        st.session_state.train_flash = ("error", str(exc))
        return
    except OSError as exc:  # a full disk or a read-only data folder: say so, never a traceback
        st.session_state.train_flash = ("error", f"Could not create the job: {exc.strerror or exc}.")
        return
    st.session_state.train_flash = ("success", f"Started job {info.job_id}: training run '{info.run_name}'.")
    st.session_state.train_run_name = jobs.suggest_run_name(info.run_name)


def config_widget(column: DeltaGenerator, key: str) -> None:
    """One config field's widget, drawn from its declaration (model/config.form_field)."""
    if key == f"train_{PROCESSES}":
        column.number_input(
            "Processes (DDP)", step=1, key=key,
            help=f"More than 1 runs torchrun; 1 to {server_policy().cpu_count} (this machine's cores).",
        )  # fmt: skip
        return
    spec = _form_field(FIELDS[key])
    bounds = None if spec.low is None or spec.high is None else f"{spec.low:,} to {min(spec.high, BROWSER_MAX_INT):,}"
    help_text = "; ".join(part for part in (spec.help, bounds) if part) or None
    if spec.kind == "choice":
        column.selectbox(spec.label, spec.options, key=key, help=help_text)
    elif spec.kind == "bool":
        column.checkbox(spec.label, key=key, help=help_text)
    elif spec.kind == "float":
        # value=None: a value Streamlit cannot take (NaN, inf) becomes None, which validation refuses, instead of
        # the widget's default (0), which it would accept.
        column.number_input(spec.label, value=None, step=spec.step, format="%.5f", key=key, help=help_text)
    else:
        column.number_input(spec.label, step=int(spec.step or 1), key=key, help=help_text)


def config_rows(rows: tuple[tuple[str, ...], ...]) -> None:
    for row in rows:
        widths = [WIDE.get(path.split(".")[-1], 1) for path in row]
        for column, path in zip(st.columns(widths), row, strict=True):
            config_widget(column, f"train_{path.split('.')[-1]}")


def config_form(presets: dict[str, dict[str, Any]]) -> None:
    with st.form("train_form"):
        st.text_input(
            "Run name", key="train_run_name", max_chars=MAX_RUN_NAME, help="The run's folder name; must not be in use."
        )
        st.caption(
            "Each field's limits are in its help; a value outside them is refused with a message, never changed. "
            f"Limits on this server: at most {LIMITS.max_parameters / 1e6:.0f}M parameters, about "
            f"{LIMITS.max_memory_bytes / 2**30:.0f} GiB for one training step, {LIMITS.max_eval_tokens / 1e6:.0f}M "
            f"evaluation tokens per snapshot (eval examples x context), {LIMITS.n_snapshots} snapshots."
        )
        st.markdown("**Model** (attention-only transformer)")
        config_rows(MODEL_ROWS)
        st.markdown("**Training**")
        config_rows(TRAINING_ROWS)
        with st.expander("Advanced"):
            config_rows(ADVANCED_ROWS)
        st.form_submit_button("Start training", key="train_submit", type="primary", on_click=submit, args=(presets,))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def kill_job(job_id: str, by: str | None) -> None:
    jobs.cancel_job(job_id, force=True, by=by)


def job_action(action: Callable[..., Any], job_id: str) -> None:
    # Callbacks run before the (fragment) rerun, so the card drawn next already shows the new state.
    try:
        action(job_id, by=visitor_key())
    except ICLError as exc:
        st.session_state[f"train_job_error_{job_id}"] = str(exc)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def job_card(job: jobs.JobInfo) -> None:
    with st.container(border=True):
        state = job.state + (" (cancelling…)" if job.cancel_requested and job.active else "")
        if job.waiting:
            place = jobs.queue_positions().get(job.job_id)
            state += f" · waiting for a free core, {_ordinal(place)} in line" if place else " · waiting"
        st.markdown(f"**{job.run_name}** · {state}")
        st.caption(
            f"job {job.job_id} · {job.device or 'device pending'}"
            + (f" · attempt {job.attempts}" if job.attempts > 1 else "")
            + (f" · last update {time.time() - job.heartbeat:.0f}s ago" if job.active and job.heartbeat else "")
        )
        loss = f"{job.loss:.3f}" if job.loss is not None else "–"
        eta = f" · ETA {_duration(job.eta_s)}" if job.state == jobs.RUNNING else ""
        st.progress(
            job.fraction,
            text=f"step {job.step}/{job.total_steps} · loss {loss} · {job.tokens:,} tokens · "
            f"{job.snapshots} snapshots{eta}",
        )
        if job.error:
            st.error(user_text(job.error, 500))
        cols = st.columns(4)
        if not admission.may_control(job.owner, visitor_key(), server_policy()):
            st.caption("Started by another visitor: only they can stop it.")
        elif job.active:
            cols[0].button(
                "Cancel", key=f"cancel_{job.job_id}", disabled=job.cancel_requested,
                on_click=job_action, args=(jobs.cancel_job, job.job_id),
            )  # fmt: skip
            if job.cancel_requested:
                cols[1].button(
                    "Kill now", key=f"kill_{job.job_id}", help="Stop now; a resume starts from the last saved state.",
                    on_click=job_action, args=(kill_job, job.job_id),
                )  # fmt: skip
        else:
            if job.resumable:
                cols[0].button(
                    "Resume", key=f"resume_{job.job_id}", on_click=job_action, args=(jobs.resume_job, job.job_id)
                )
            cols[1].button(
                "Remove from list", key=f"delete_{job.job_id}", on_click=job_action, args=(jobs.delete_job, job.job_id)
            )
        problem = st.session_state.pop(f"train_job_error_{job.job_id}", None)
        if problem:
            st.error(user_text(problem, 500))
        with st.expander("Log"):
            st.code(jobs.tail_log(job.job_id, 30) or "(empty)", language=None)


RUNS_SEEN_KEY = "_train_runs_seen"  # the runs the sidebar listed at the last full run of this page


@st.fragment(run_every=2)
def jobs_panel() -> None:
    # The sidebar is drawn by full runs only: when a job's run appears (or goes), rerun the whole app so the
    # run picker lists it without a reload.
    if tuple(r.name for r in state.list_runs()) != st.session_state.get(RUNS_SEEN_KEY):
        st.rerun(scope="app")
    all_jobs = jobs.list_jobs()
    if not all_jobs:
        st.info("No training jobs yet.")
        return
    active = [j for j in all_jobs if j.active]
    ended = [j for j in all_jobs if not j.active]
    for job in active + ended[:MAX_ENDED_JOBS_SHOWN]:
        job_card(job)
    if len(ended) > MAX_ENDED_JOBS_SHOWN:
        st.caption(f"{len(ended) - MAX_ENDED_JOBS_SHOWN} older jobs not shown.")


state.ensure_sidebar()  # first, as on every page (ARCHITECTURE.md): the page may run without explorer.py
st.title("Train")
st.caption(
    "Train an attention-only transformer in a background process (on a GPU when one is present). "
    "Its log-spaced snapshots appear among the runs while it trains; jobs keep running when you leave the page."
)
presets, problems = load_presets()
for problem in problems:
    st.warning(f"Preset skipped: {user_text(problem, 500)}")
names = list(presets)
if st.session_state.get("train_preset") not in presets:
    st.session_state.train_preset = names[0]
    apply_preset(presets)
st.selectbox("Preset", names, key="train_preset", on_change=apply_preset, args=(presets,))
config_form(presets)
flash = st.session_state.pop("train_flash", None)
if flash is not None:
    kind, message = flash
    if kind == "error":
        st.error(user_text(message, 500))
    else:
        # A toast, not a message: the jobs panel below reruns on its own, so a message above it would stay
        # on screen after the job it announces was cancelled.
        st.toast(user_text(message, 500), icon=":material/play_arrow:")
st.subheader("Jobs")
st.session_state[RUNS_SEEN_KEY] = tuple(r.name for r in state.list_runs())
jobs_panel()
