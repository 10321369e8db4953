"""Models: every run the app knows (shipped, trained, downloaded) and a form to fetch one from the Hub."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from icl_core.analysis.evaluation import estimated_seconds
from icl_core.analysis.summary import SAME_DATA
from icl_core.errors import ICLError
from icl_core.model.config import ICL_FORMULA
from icl_core.storage import hub, published, tl_hub
from icl_core.storage.runs import refused_run_links
from icl_core.tasks import imports
from ui import runs, state, widget_state
from ui.quote import user_text
from ui.relay import run_relaying

FLASH_KEY = "_models_flash"


PICK_KEY, GO_KEY = "models_pick", "_models_go"


def _open(paths: dict[str, str]) -> None:
    # Read the pick here, not at render time: the selectbox may have changed in this same rerun.
    pick = st.session_state.get(PICK_KEY)
    if pick in paths:
        state.request_run(Path(paths[pick]))
        st.session_state[GO_KEY] = True


state.ensure_sidebar()  # first: sets the page layout when this file runs without explorer.py
st.title("Models")
st.caption(
    "Every run the explorer can show. **shipped** runs come with the app, **trained** ones were made on the "
    "Train page, **hub** ones were downloaded from the Hugging Face Hub, **extra** ones come from folders named "
    "in ICL_EXTRA_RUNS_DIRS."
)
for line in refused_run_links():
    st.warning(user_text(line, 300))
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    st.success(flash)

known_runs = state.list_runs()
current = state.current_selection()
if not known_runs:
    st.info("No runs yet: train one on the Train page, or download one below.")
else:
    rows = [runs.run_overview(r) for r in known_runs]
    df = pd.DataFrame(rows)
    columns = [
        "run",
        "source",
        "layers",
        "heads",
        "d_model",
        "context",
        "smeared keys",
        "snapshots",
        "last step",
        "tokens seen",
        "train loss",
        "held-out loss",
        "ICL score",
        "ICL score s.e.",
        "best induction score",
        "phase change at (tokens)",
        "status",
        "data",
        "error",
    ]
    st.dataframe(
        df[[c for c in columns if c in df.columns]],
        hide_index=True,
        column_config={
            "train loss": st.column_config.NumberColumn(format="%.3f"),
            "held-out loss": st.column_config.NumberColumn(format="%.3f"),
            "ICL score": st.column_config.NumberColumn(format="%+.3f", help=f"{ICL_FORMULA}: negative = ICL"),
            "ICL score s.e.": st.column_config.NumberColumn(
                format="%.3f", help="standard error of the ICL score over the held-out examples it was measured on"
            ),
            "data": st.column_config.TextColumn(
                help="whether the run's evaluation set and training text match this machine's"
            ),
            "best induction score": st.column_config.NumberColumn(
                format="%.2f", help="highest prefix-matching score of a head in layer ≥ 1 at the last step"
            ),
            "tokens seen": st.column_config.NumberColumn(format="compact"),
            "phase change at (tokens)": st.column_config.NumberColumn(format="compact"),
            "error": st.column_config.TextColumn(help="why a run cannot be shown, if it cannot"),
        },
    )
    for r in rows:
        if r.get("data") not in (None, SAME_DATA):
            st.warning(f"**{user_text(r['run'])}**: {user_text(r['data'], 300)}.")
    names = {r["run"]: r["path"] for r in rows}
    # The pick starts at (and follows) the sidebar's run, until the visitor picks another one here.
    if current is not None:
        widget_state.reset_on(PICK_KEY, current.run.name, current.run.name)
    with st.container(horizontal=True, wrap=False, vertical_alignment="bottom"):  # the button keeps its width
        st.selectbox("Explore a run", list(names), key=PICK_KEY)
        st.button("Open in the explorer", on_click=_open, args=(names,), key="models_open", type="primary")
    if current is not None:
        st.caption(f"Selected now: **{current.run.name}**.")
    if st.session_state.pop(GO_KEY, False):
        st.switch_page("pages/attention.py")

st.subheader("Download a run from the Hugging Face Hub")
with st.form("hub_download"):
    repo = st.text_input("Repository", placeholder="owner/name or https://huggingface.co/owner/name", key="hub_repo")
    revision = st.text_input("Revision (optional)", placeholder="main, a tag or a commit hash", key="hub_revision")
    token = st.text_input(
        "Access token (only for private repositories)", type="password", key="hub_token", help="Not stored."
    )
    submitted = st.form_submit_button("Download", key="hub_download_submit")

if submitted:
    bar = st.progress(0.0, text="Starting…")

    def report(p: object) -> None:
        fraction = float(getattr(p, "fraction", 0.0))
        message = getattr(p, "message", "") or getattr(p, "stage", "")
        bar.progress(min(max(fraction, 0.0), 1.0), text=str(message) or "Downloading…")

    try:
        path = run_relaying(
            lambda relay: hub.download_run(
                repo.strip(), revision=revision.strip() or None, token=token or None, progress=relay
            ),
            report,
        )
    except ICLError as exc:
        bar.empty()
        st.error(user_text(exc, 500))
    except Exception as exc:  # a network stack can fail in ways the hub module did not foresee
        bar.empty()
        st.error(f"The download failed unexpectedly: {type(exc).__name__}: {user_text(exc, 500)}")
    else:
        bar.empty()
        state.request_run(path)
        label = hub.parse_repo_id(repo) + (f"@{revision.strip()}" if revision.strip() else "")
        st.session_state[FLASH_KEY] = f"Downloaded {label} and selected it in the sidebar."
        st.rerun()

# -- the field's published runs over training (TransformerLens format): listed here, imported in the background --

OTHER_REPO = "another repository…"
LISTED_KEY, TL_ERROR_KEY = "_models_tl_listed", "_models_tl_error"


def _look_up() -> None:
    pick = st.session_state.get("tl_preset")
    repo_id = str((st.session_state.get("tl_repo") or "").strip() if pick == OTHER_REPO else pick or "")
    st.session_state.pop(LISTED_KEY, None)
    try:
        listed = tl_hub.list_repo(repo_id, token=st.session_state.get("tl_token") or None)
        st.session_state[LISTED_KEY] = listed
        # The defaults follow the repo: as many checkpoints as the disk cap keeps, its own tokens per step.
        st.session_state["tl_n"] = tl_hub.default_count(listed)
        st.session_state["tl_tokens_per_step"] = listed.tokens_per_step or 0
    except ICLError as exc:
        st.session_state[TL_ERROR_KEY] = str(exc)
    except Exception as exc:  # a network stack can fail in ways the hub module did not foresee
        st.session_state[TL_ERROR_KEY] = f"The look-up failed unexpectedly: {type(exc).__name__}: {exc}"


def _start(n: int) -> None:
    try:
        imports.start_import(
            st.session_state[LISTED_KEY], n, token=st.session_state.get("tl_token") or None,
            tokens_per_step=st.session_state.get("tl_tokens_per_step") or None,
        )  # fmt: skip
    except ICLError as exc:
        st.session_state[TL_ERROR_KEY] = str(exc)
    else:
        st.session_state.pop(LISTED_KEY, None)


def _import_action(action: str, info: imports.ImportInfo) -> None:
    try:
        if action == "cancel":
            imports.cancel_import(info)
        else:
            imports.resume_import(info, token=st.session_state.get("tl_token") or None)
    except ICLError as exc:
        st.session_state[TL_ERROR_KEY] = str(exc)


def _import_card(info: imports.ImportInfo) -> None:
    with st.container(border=True):
        st.markdown(f"**{user_text(info.repo_id)}** · {info.state}")
        if info.state == imports.DOWNLOADING:
            text = f"downloaded, converted and evaluated {info.done} of {info.total} checkpoints, one at a time "
            text += f"({hub.fmt_mb(info.done_bytes)} of {hub.fmt_mb(info.total_bytes)} downloaded)"
        elif info.state == imports.EVALUATING:
            text = f"evaluated {info.done} of {info.total} checkpoints left by an earlier attempt"
        else:
            text = user_text(info.message, 200) or info.state
        st.progress(1.0 if info.state == imports.FINISHED else info.fraction, text=text)
        if info.error:
            st.error(user_text(info.error, 500))
        if info.active:
            st.button("Cancel", key=f"tl_cancel_{info.key}", on_click=_import_action, args=("cancel", info))
        elif info.resumable:
            st.button(
                "Resume", key=f"tl_resume_{info.key}", on_click=_import_action, args=("resume", info),
                help="Continues where it stopped: checkpoints already converted and evaluated are kept.",
            )  # fmt: skip


@st.fragment(run_every=2)
def active_imports_panel() -> None:
    # The sidebar is drawn by full runs only: when an imported run appears, rerun the app so the picker lists it.
    if tuple(r.name for r in state.list_runs()) != st.session_state.get(IMPORT_RUNS_SEEN_KEY):
        st.rerun(scope="app")
    all_imports = imports.list_imports()
    for info in all_imports:
        _import_card(info)
    if not any(i.active for i in all_imports):
        st.rerun(scope="app")  # all ended: the full run draws them without polling


def imports_panel() -> None:
    """Each import's card; polled every 2 s only while one of them is running."""
    all_imports = imports.list_imports()
    if any(i.active for i in all_imports):
        active_imports_panel()
    else:
        for info in all_imports:
            _import_card(info)


IMPORT_RUNS_SEEN_KEY = "_models_runs_seen"

st.subheader("Published training runs (TransformerLens format)")
st.caption(
    "Attention-only models the field studies over training: Neel Nanda's (the models TransformerLens calls "
    "attn-only-1l … 4l) and Hoogland et al.'s. Pick how many checkpoints to fetch: log-spaced (first and last "
    "always), half of them inside the range where the run's induction heads are known to form. Only their "
    "weights, the config and the tokenizer are downloaded, never optimizer states, one checkpoint at a time: "
    "each is converted to fp16 safetensors, its download deleted, and it is evaluated in the background with "
    "the model's own tokenizer on the Python standard library's held-out source (random-token probes from the "
    "middle of the tokenizer's frequency ranking)."
)
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
with c1:
    preset = st.selectbox(
        "Run", [*published.PRESETS, OTHER_REPO], key="tl_preset",
        format_func=lambda r: r if r == OTHER_REPO else f"{r} — {published.PRESETS[r].description}",
    )  # fmt: skip
with c2:
    n_checkpoints = st.number_input(
        "Checkpoints",
        min_value=2,
        max_value=500,
        value=tl_hub.DEFAULT_CHECKPOINTS,
        key="tl_n",
        help="Set to what the disk cap keeps when a run is looked up.",
    )
if preset == OTHER_REPO:
    st.text_input("Repository in the same format", placeholder="owner/name", key="tl_repo")
st.text_input("Access token (only for private repositories)", type="password", key="tl_token", help="Not stored.")
st.button("Look up its checkpoints", key="tl_look_up", on_click=_look_up)
problem = st.session_state.pop(TL_ERROR_KEY, None)
if problem:
    st.error(user_text(problem, 500))
listed = st.session_state.get(LISTED_KEY)
if listed is not None:
    chosen = tl_hub.choose(listed, int(n_checkpoints))
    cfg = listed.model_config
    window = listed.window
    st.info(
        f"**{user_text(listed.repo_id)}**: {cfg.n_layers} layers × {cfg.n_heads} heads, d_model {cfg.d_model}, "
        f"vocabulary {cfg.d_vocab:,}, context {cfg.n_ctx}, tokenizer {user_text(cfg.tokenizer)}; config from "
        f"{user_text(listed.config_source, 300)}. "
        + (f"Induction heads form at {window.lo_tokens / 1e9:.2g}B–{window.hi_tokens / 1e9:.2g}B tokens "
           f"({user_text(window.source)}). " if window else "")
        + f"Will fetch {user_text(tl_hub.describe(listed, chosen, estimated_seconds(cfg, len(chosen))), 500)}."
    )  # fmt: skip
    if listed.unit == "step":
        st.number_input(
            "Tokens per training step (batch size × context)", min_value=0, step=1024, key="tl_tokens_per_step",
            help="This repo labels its checkpoints by training step. The charts over training are drawn against "
            "tokens seen: the tokens one step trained on (filled in where the run's training config is known; "
            "0: unknown, and those charts stay empty).",
        )  # fmt: skip
    st.button(
        f"Download and evaluate {len(chosen)} checkpoints ({hub.fmt_mb(listed.download_bytes(chosen))} through, "
        f"{hub.fmt_mb(listed.kept_bytes(chosen))} kept)",
        key="tl_start", type="primary", on_click=_start, args=(len(chosen),),
    )  # fmt: skip
st.session_state[IMPORT_RUNS_SEEN_KEY] = tuple(r.name for r in state.list_runs())
imports_panel()
