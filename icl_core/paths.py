"""Where the repository is: the shipped runs, the default data folder and the workers' working directory."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
