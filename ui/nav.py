"""The app's page list, in one place: explorer.py runs it, and a page run on its own registers it too."""

from __future__ import annotations

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from ui.layout import PAGE_CSS

# (file, title, icon)
PAGES = [
    ("pages/home.py", "Start here: the tour", ":material/school:"),
    ("pages/attention.py", "Attention explorer", ":material/visibility:"),
    ("pages/phase_change.py", "Phase change", ":material/timeline:"),
    ("pages/ablation.py", "Ablation", ":material/content_cut:"),
    ("pages/circuits.py", "Circuits", ":material/hub:"),
    ("pages/analysis.py", "Head attribution", ":material/analytics:"),
    ("pages/models.py", "Models", ":material/inventory_2:"),
    ("pages/train.py", "Train", ":material/model_training:"),
]


def navigation() -> StreamlitPage:
    """Set the page layout, register the navigation menu and return the page the browser asked for."""
    pages = [st.Page(path, title=title, icon=icon, default=(path == "pages/home.py")) for path, title, icon in PAGES]
    page = st.navigation(pages)
    # After st.navigation: it sends the page's own title and icon, which would reset the layout.
    st.set_page_config(page_title="Induction heads explorer", page_icon="🔁", layout="wide")
    st.html(PAGE_CSS)
    return page
