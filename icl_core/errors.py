"""The one family of exceptions our code raises for bad input, so the UI can show a clean message."""

from __future__ import annotations


class ICLError(Exception):
    """Base class: any error whose message is fit to show to a user as it is."""


class ConfigError(ICLError):
    """A configuration is invalid (unknown key, wrong type, impossible value)."""


class CheckpointError(ICLError):
    """A snapshot or run on disk is missing, truncated, corrupt or does not match its config."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputTextError(ICLError):
    """User-typed text cannot be turned into a model input."""


class HubError(ICLError):
    """Downloading from or publishing to the Hugging Face Hub failed."""
