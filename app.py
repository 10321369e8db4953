"""Induction heads explorer: entry point. Run with `streamlit run app.py` (or ./start.sh).

The sidebar's run + step picker is drawn here, before the page, so every page shares it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import state

ROOT = Path(__file__).resolve().parent

# (file, title, icon); pages written by other parts of the project are listed only once they exist.
PAGES = [
    ("pages/home.py", "Start here: the tour", ":material/school:"),
    ("pages/attention.py", "Attention explorer", ":material/visibility:"),
    ("pages/phase_change.py", "Phase change", ":material/timeline:"),
    ("pages/ablation.py", "Ablation", ":material/content_cut:"),
    ("pages/models.py", "Models", ":material/inventory_2:"),
    ("pages/train.py", "Train", ":material/model_training:"),
]

st.set_page_config(page_title="Induction heads explorer", page_icon="🔁", layout="wide")

pages = [
    st.Page(path, title=title, icon=icon, default=(path == "pages/home.py"))
    for path, title, icon in PAGES
    if (ROOT / path).is_file()
]
navigation = st.navigation(pages)
with state.app_run():
    state.sidebar_picker()
    navigation.run()
