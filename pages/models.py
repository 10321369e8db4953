"""Models: every run the app knows (shipped, trained, downloaded) and a form to fetch one from the Hub."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from icl_core.analysis.summary import SAME_DATA
from icl_core.errors import ICLError
from ui import cache, state
from ui.quote import user_text

FLASH_KEY = "_models_flash"


PICK_KEY, PICK_FOR_KEY, GO_KEY = "models_pick", "_models_pick_for", "_models_go"


def _open(paths: dict[str, str]) -> None:
    # Read the pick here, not at render time: the selectbox may have changed in this same rerun.
    pick = st.session_state.get(PICK_KEY)
    if pick in paths:
        state.request_run(Path(paths[pick]))
        st.session_state[GO_KEY] = True


state.ensure_sidebar()  # first: sets the page layout when this file runs without app.py
st.title("Models")
st.caption(
    "Every run the explorer can show. **shipped** runs come with the app, **trained** ones were made on the "
    "Train page, **hub** ones were downloaded from the Hugging Face Hub, **extra** ones come from folders named "
    "in ICL_EXTRA_RUNS_DIRS."
)
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    st.success(flash)

runs = state.list_runs()
current = state.current_selection()
if not runs:
    st.info("No runs yet: train one on the Train page, or download one below.")
else:
    rows = [cache.run_overview(r) for r in runs]
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
            "ICL score": st.column_config.NumberColumn(format="%+.3f", help="loss(500) − loss(50): negative = ICL"),
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
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    names = {r["run"]: r["path"] for r in rows}
    # The pick starts at (and follows) the sidebar's run, until the visitor picks another one here.
    if current is not None and st.session_state.get(PICK_FOR_KEY) != current.run.name:
        st.session_state[PICK_KEY] = current.run.name
        st.session_state[PICK_FOR_KEY] = current.run.name
    with c1:
        st.selectbox("Explore a run", list(names), key=PICK_KEY)
    with c2:
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
    submitted = st.form_submit_button("Download")

if submitted:
    try:
        from icl_core.storage import hub  # imported here: huggingface_hub is only needed when someone downloads
    except ImportError as exc:
        st.error(f"Hub support is not available in this installation ({user_text(exc, 500)}).")
        st.stop()
    bar = st.progress(0.0, text="Starting…")

    def report(p: object) -> None:
        fraction = float(getattr(p, "fraction", 0.0))
        message = getattr(p, "message", "") or getattr(p, "stage", "")
        bar.progress(min(max(fraction, 0.0), 1.0), text=str(message) or "Downloading…")

    try:
        path = hub.download_run(repo.strip(), revision=revision.strip() or None, token=token or None, progress=report)
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
