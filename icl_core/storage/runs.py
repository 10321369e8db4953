"""Where runs live and how the app finds them: shipped, user-trained, and downloaded from the Hub."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from icl_core.paths import REPO_ROOT
from icl_core.storage.snapshots import MANIFEST, TRAIN_LOG, atomic_write_json

SHIPPED_DIR = REPO_ROOT / "checkpoints"


def data_dir() -> Path:
    """Writable folder for user-trained runs, jobs and downloads (ICL_DATA_DIR, else the repo root)."""
    return Path(os.environ.get("ICL_DATA_DIR", REPO_ROOT))


def user_runs_dir() -> Path:
    return data_dir() / "runs"


IMPORTED_SUFFIX_PARTIAL = ".partial"  # an import still being written (or cut short): never listed


def imported_runs_dir() -> Path:
    """TransformerLens-format runs from the Hub, converted to our layout (icl_core.storage.tl_hub)."""
    return data_dir() / "hub_tl"


@dataclass(frozen=True)
class RunRef:
    name: str  # unique label shown in the run picker
    path: Path
    source: str  # "shipped", "trained" or "hub"


def _runs_under(root: Path, source: str, links: bool = True) -> list[RunRef]:
    """The runs in `root`: `root` itself if it is a run folder, else its child folders that are. links=False
    (the data folder, where visitors' jobs and imports write) leaves out run folders that are symbolic links:
    whatever they point at was not written here (refused_run_links names them)."""
    if (root / MANIFEST).is_file():
        return [RunRef(root.name, root, source)]
    if not root.is_dir():
        return []
    return [
        RunRef(c.name, c, source)
        for c in sorted(root.iterdir())
        if (c / MANIFEST).is_file() and (links or not c.is_symlink())
    ]


def refused_run_links() -> list[str]:
    """One line for each run folder in the data folder that is a symbolic link, left out of the run picker."""
    out = []
    for root in (user_runs_dir(), imported_runs_dir()):
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if child.is_symlink():
                    out.append(
                        f"{child.relative_to(data_dir())} is a symbolic link: runs are read only from folders "
                        "written in the data folder"
                    )
    return out


EXTRA_RUNS_ENV = "ICL_EXTRA_RUNS_DIRS"


def extra_run_refs(env_value: str | None = None) -> list[RunRef]:
    """Runs named by ICL_EXTRA_RUNS_DIRS (os.pathsep-separated): each entry a run folder or a folder of runs."""
    raw = os.environ.get(EXTRA_RUNS_ENV, "") if env_value is None else env_value
    refs: list[RunRef] = []
    for entry in (p for p in raw.split(os.pathsep) if p.strip()):
        refs.extend(_runs_under(Path(entry.strip()).expanduser(), "extra"))
    return refs


def read_train_log(run_dir: Path) -> list[dict[str, float]]:
    """The run's training log (step, tokens, loss, ...); lines cut by a crash are skipped."""
    path = Path(run_dir) / TRAIN_LOG
    rows: list[dict[str, float]] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("step", "tokens", "loss")):
            rows.append(entry)
    return rows


HUB_REGISTRY = "hub_runs.json"
# Streamlit serves every session from one process: serialise the registry's read-modify-write.
_REGISTRY_LOCK = threading.Lock()


@dataclass(frozen=True)
class HubRun:
    """A run downloaded from the Hub before; `path` is its snapshot folder in the local HF cache."""

    repo_id: str
    revision: str  # as asked for: a branch, tag or commit
    commit: str  # the commit it resolved to
    path: Path
    run_name: str = ""
    downloaded_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    @property
    def label(self) -> str:
        return self.repo_id if self.revision == "main" else self.key


def hub_registry_path() -> Path:
    return data_dir() / HUB_REGISTRY


def _read_hub_registry() -> dict[str, dict]:
    try:
        data = json.loads(hub_registry_path().read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: the downloads are still in the HF cache, the next download rewrites it
    runs = data.get("runs") if isinstance(data, dict) else None
    return runs if isinstance(runs, dict) else {}


def hub_runs() -> list[HubRun]:
    """Runs downloaded from the Hub before whose folder is still on disk, by label."""
    out = []
    for key, entry in _read_hub_registry().items():
        try:
            run = HubRun(
                repo_id=str(entry["repo_id"]),
                revision=str(entry["revision"]),
                commit=str(entry["commit"]),
                path=Path(entry["path"]),
                run_name=str(entry.get("run_name", "")),
                downloaded_at=float(entry.get("downloaded_at", 0.0)),
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            continue  # a hand-edited or foreign entry: skip it, keep the rest
        if run.key == key and (run.path / MANIFEST).is_file():
            out.append(run)
    return sorted(out, key=lambda r: r.label)


def record_hub_run(run: HubRun) -> None:
    with _REGISTRY_LOCK:
        runs = _read_hub_registry()
        runs[run.key] = {
            "repo_id": run.repo_id,
            "revision": run.revision,
            "commit": run.commit,
            "path": str(run.path),
            "run_name": run.run_name,
            "downloaded_at": run.downloaded_at,
        }
        atomic_write_json(hub_registry_path(), {"version": 1, "runs": runs})


def forget_hub_run(repo_id: str, revision: str = "main") -> bool:
    """Drop a download from the run picker (its files stay in the HF cache). True if it was listed."""
    with _REGISTRY_LOCK:
        runs = _read_hub_registry()
        if runs.pop(f"{repo_id}@{revision}", None) is None:
            return False
        atomic_write_json(hub_registry_path(), {"version": 1, "runs": runs})
        return True


def discover_runs(extra: list[RunRef] | None = None) -> list[RunRef]:
    """Shipped runs first, then user-trained runs, then Hub downloads, then `extra`; names made unique."""
    hub = [RunRef(r.label, r.path, "hub") for r in hub_runs()]
    imported = [
        RunRef(r.name.replace("--", "/", 1), r.path, "hub")
        for r in _runs_under(imported_runs_dir(), "hub", links=False)
        if not r.name.endswith(IMPORTED_SUFFIX_PARTIAL)
    ]
    refs = (
        _runs_under(SHIPPED_DIR, "shipped")
        + _runs_under(user_runs_dir(), "trained", links=False)
        + hub
        + imported
        + list(extra or [])
    )
    seen: set[str] = set()
    out = []
    for ref in refs:
        name = ref.name if ref.name not in seen else f"{ref.name} ({ref.source})"
        seen.add(name)
        out.append(RunRef(name, ref.path, ref.source))
    return out
