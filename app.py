"""Induction heads explorer: `streamlit run app.py` (or ./start.sh) serves explorer.py, the app's script.

Streamlit imports a script's modules on the first visit: torch, pandas and Altair took ~2.5 s of a 2-core
machine before the first visitor saw anything. Served as an st.App, the server imports them while it starts
(the lifespan hook below, before it accepts a connection), so the first page waits only for its own work.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st


def _import_app_modules() -> None:
    import ui

    for module in pkgutil.iter_modules(ui.__path__):  # every ui module: icl_core, torch, pandas, Altair with them
        importlib.import_module(f"ui.{module.name}")
    # Streamlit's emoji table (a regex it compiles on the first page: ~230 ms, py-spy), then the PCA's scikit-learn.
    importlib.import_module("streamlit.emojis")
    importlib.import_module("sklearn.decomposition")
    # Out of the garbage collector's reach from now on (ui/server.freeze_long_lived_objects says why): otherwise the
    # first visit's full collections scan every object these imports made, 100-200 ms (gc callbacks).
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _warm_start(_app: Any) -> AsyncIterator[None]:
    # Before the server accepts a connection: its health check says "ok" once the modules are in.
    await asyncio.to_thread(_import_app_modules)
    yield


app = st.App("explorer.py", lifespan=_warm_start)
