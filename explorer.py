"""Induction heads explorer: the script every visit runs (app.py serves it: `streamlit run app.py`, ./start.sh).

The page list (st.navigation over pages/*.py) lives in ui/nav.py; the sidebar run + step picker is
drawn here, before the page, so every page shares it.
"""

from __future__ import annotations

from ui import nav, server, state

server.limit_torch_threads()
page = nav.navigation()
with state.app_run():
    state.sidebar_picker()
    page.run()
server.freeze_long_lived_objects()
server.start_memory_trimmer()
