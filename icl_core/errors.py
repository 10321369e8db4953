"""The one family of exceptions our code raises for bad input, so the UI can show a clean message."""

from __future__ import annotations

import os
from pathlib import Path

from icl_core.paths import REPO_ROOT


def display_path(path: object) -> str:
    """A path as a user may see it: relative to the data folder or the repository, never the server's layout."""
    p = Path(str(path))
    for root in (os.environ.get("ICL_DATA_DIR"), REPO_ROOT):
        if root:
            try:
                return p.resolve().relative_to(Path(root).resolve()).as_posix()
            except (ValueError, OSError):
                continue
    return "/".join(p.parts[-2:]) if len(p.parts) > 1 else p.name


class ICLError(Exception):
    """Base class: any error whose message is fit to show to a user as it is."""


class ConfigError(ICLError):
    """A configuration is invalid (unknown key, wrong type, impossible value)."""


class CheckpointError(ICLError):
    """A snapshot or run on disk is missing, truncated, corrupt or does not match its config."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{display_path(path)}: {problem}")

    def __reduce__(self):  # st.cache_data pickles results that hold these
        return (type(self), (self.path, self.problem))


class InputTextError(ICLError):
    """User-typed text cannot be turned into a model input."""


class HubError(ICLError):
    """Downloading from or publishing to the Hugging Face Hub failed."""
