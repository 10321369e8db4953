"""Where runs live and how the app finds them: shipped, user-trained, and downloaded from the Hub."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from icl_core.errors import CheckpointError
from icl_core.snapshots import MANIFEST, read_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO_ROOT / "checkpoints"


def data_dir() -> Path:
    """Writable folder for user-trained runs, jobs and downloads (ICL_DATA_DIR, else the repo root)."""
    return Path(os.environ.get("ICL_DATA_DIR", REPO_ROOT))


def user_runs_dir() -> Path:
    return data_dir() / "runs"


@dataclass(frozen=True)
class RunRef:
    name: str  # unique label shown in the run picker
    path: Path
    source: str  # "shipped", "trained" or "hub"


def _runs_under(root: Path, source: str) -> list[RunRef]:
    if not root.is_dir():
        return []
    refs = []
    for child in sorted(root.iterdir()):
        if (child / MANIFEST).is_file():
            refs.append(RunRef(child.name, child, source))
    return refs


def discover_runs(extra: list[RunRef] | None = None) -> list[RunRef]:
    """Shipped runs first, then user-trained runs, then `extra` (e.g. Hub downloads); names made unique."""
    refs = _runs_under(SHIPPED_DIR, "shipped") + _runs_under(user_runs_dir(), "trained") + list(extra or [])
    seen: set[str] = set()
    out = []
    for ref in refs:
        name = ref.name if ref.name not in seen else f"{ref.name} ({ref.source})"
        seen.add(name)
        out.append(RunRef(name, ref.path, ref.source))
    return out


def is_run_dir(path: Path) -> bool:
    try:
        read_manifest(path)
    except CheckpointError:
        return False
    return True
