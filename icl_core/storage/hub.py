"""Runs on the Hugging Face Hub: download (cached, usable offline). Publishing and the command line are in
icl_core.storage.hub_publish, the translation of failures into one sentence in icl_core.storage.hub_errors.

A Hub repo holds one run exactly as it lies on disk (see icl_core.storage.snapshots): run.json, step_*.json,
step_*.safetensors, train_log.jsonl and a README.md model card. Nothing else is ever downloaded or
uploaded: no pickles (.bin, .pt, .pkl), no resume state.

API for the Models page (pages/models.py); every failure raises icl_core.errors.HubError whose message
is fit to show as it is:

    parse_repo_id(text: str) -> str
        "owner/name" from what a user typed (a repo id or a https://huggingface.co/owner/name link).
    download_run(repo_id: str, revision: str | None = None, token: str | None = None,
                 progress: Callable[[DownloadProgress], None] | None = None) -> Path
        Download (or take from the cache) and validate a run; returns its folder, which
        icl_core.storage.snapshots loads like a shipped run. `progress` is called with
        DownloadProgress(stage, files_done, files_total, bytes_done, bytes_total, message) and its .fraction
        in [0, 1], from whichever thread makes progress (huggingface_hub downloads in several): a UI that may
        draw only from its own thread relays it (ui/relay.py). The run then appears in
        icl_core.storage.runs.discover_runs() with source "hub".
    downloaded_runs() -> list[HubRun]
        Runs downloaded before (icl_core.storage.runs.HubRun: repo_id, revision, commit, path, run_name,
        downloaded_at, label). forget_run(repo_id, revision="main") -> bool drops one from the list.
    hub_cache_dir() -> Path, hub_endpoint() -> str, is_offline() -> bool

Environment, read at each call (huggingface_hub reads it once, at import): HF_ENDPOINT (another Hub,
e.g. a test server), HF_HUB_OFFLINE=1 (serve only what was downloaded before), HF_TOKEN (default
token), HF_HUB_CACHE / HF_HOME (cache location; else ICL_DATA_DIR/hf_cache, since a Space's container
may write only below its own folders).

"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icl_core.errors import CheckpointError, HubError
from icl_core.storage.hub_errors import download_error, hub_did_not_answer
from icl_core.storage.runs import HubRun, data_dir, forget_hub_run, hub_runs, record_hub_run
from icl_core.storage.snapshots import MANIFEST, SnapshotInfo, list_snapshots, load_model, read_manifest

DEFAULT_ENDPOINT = "https://huggingface.co"
# Only our own formats: JSON and safetensors never execute code when loaded, pickles (.bin/.pt) can.
RUN_FILE_PATTERNS = ["run.json", "step_*.json", "step_*.safetensors", "train_log.jsonl", "README.md"]
# Size caps checked against the repo's file listing before anything is downloaded (MB, from the environment).
MAX_FILE_MB_ENV, MAX_TOTAL_MB_ENV = "ICL_HUB_MAX_FILE_MB", "ICL_HUB_MAX_TOTAL_MB"
DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TOTAL_MB = 200, 2000
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}$")
_URL_PREFIX_RE = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or constants.HF_HUB_OFFLINE


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return data_dir() / "hf_cache"


def parse_repo_id(text: str) -> str:
    """'owner/name' from a repo id or a Hub link; HubError if it cannot be one."""
    raw = text if isinstance(text, str) else ""
    repo = _URL_PREFIX_RE.sub("", raw.strip()).strip("/")
    repo = re.split(r"/(?:tree|blob|resolve)/", repo)[0]
    if not _REPO_ID_RE.match(repo) or "--" in repo or ".." in repo:
        raise HubError(
            f"{text!r} is not a valid Hub repo id: expected OWNER/NAME using letters, digits, '-', '_' and '.' "
            "(e.g. 'alice/induction-heads-2l')."
        )
    return repo


def check_revision(revision: str | None) -> str:
    if revision is None or revision == "":
        return "main"
    if not isinstance(revision, str) or not _REVISION_RE.match(revision) or ".." in revision:
        raise HubError(f"{revision!r} is not a valid revision: give a branch, a tag or a commit hash.")
    return revision


DownloadStage = Literal["connecting", "downloading", "verifying", "done"]


@dataclass(frozen=True)
class DownloadProgress:
    stage: DownloadStage
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = ""

    @property
    def fraction(self) -> float:
        if self.stage == "done":
            return 1.0
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if self.files_total:
            return min(1.0, self.files_done / self.files_total)
        return 0.0


ProgressFn = Callable[[DownloadProgress], None]


class _Tally:
    """Collects what huggingface_hub's progress bars report, from whichever thread reports it, and hands each
    change to `progress` as a DownloadProgress (in the reporting thread)."""

    def __init__(self, progress: ProgressFn | None = None, label: str = "") -> None:
        self.lock = threading.Lock()
        self.bars: list[_SilentBar] = []
        self.progress = progress
        self.label = label
        self.last: tuple[int, int, int, int] | None = None

    def bar_class(self) -> type:
        tally = self

        class Bar(_SilentBar):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                with tally.lock:
                    tally.bars.append(self)

            def update(self, n: float | None = 1) -> None:
                with tally.lock:  # several download threads feed one bar
                    super().update(n)
                tally.report()

        return Bar

    def snapshot(self) -> tuple[int, int, int, int]:
        with self.lock:
            byte_bars = [b for b in self.bars if b.unit == "B"]
            file_bars = [b for b in self.bars if b.unit != "B"]
            return (
                max((int(b.n) for b in file_bars), default=0),
                max((int(b.total or 0) for b in file_bars), default=0),
                max((int(b.n) for b in byte_bars), default=0),
                max((int(b.total or 0) for b in byte_bars), default=0),
            )

    def report(self) -> None:
        state = self.snapshot()
        with self.lock:
            if self.progress is None or state == self.last or not state[1]:
                return
            self.last = state
        files_done, files_total, bytes_done, bytes_total = state
        text = f"Downloading {self.label}: {files_done}/{files_total} files"
        if bytes_total:
            text += f", {fmt_mb(bytes_done)} of {fmt_mb(bytes_total)}"
        self.progress(DownloadProgress("downloading", files_done, files_total, bytes_done, bytes_total, text))


class _SilentBar:
    """Just enough of tqdm for huggingface_hub: counts, prints nothing (the app shows its own bar)."""

    def __init__(self, *args: Any, total: float | None = None, initial: float = 0, unit: str = "it", **_: Any):
        self.total = total
        self.n = initial
        self.unit = unit

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def format_dict(self) -> dict[str, Any]:
        return {}

    def close(self) -> None: ...

    def refresh(self, *args: Any, **kwargs: Any) -> None: ...

    def set_description(self, *args: Any, **kwargs: Any) -> None: ...

    def set_description_str(self, *args: Any, **kwargs: Any) -> None: ...

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None: ...


def cap_mb(env: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(env, default)))
    except ValueError:
        return default


def select_run_files(listing: dict[str, int]) -> list[str]:
    """The files of a repo listing (path -> size in bytes) that a run download fetches.

    Top-level names only (a pattern must never reach into a sub-folder), our file patterns only, and a
    snapshot's weights only together with its JSON. HubError if a file or the total
    is over the caps (ICL_HUB_MAX_FILE_MB, ICL_HUB_MAX_TOTAL_MB).
    """
    top = {
        p: n
        for p, n in listing.items()
        if "/" not in p and any(fnmatch.fnmatchcase(p, pat) for pat in RUN_FILE_PATTERNS)
    }
    # Weights without their snapshot JSON are nobody's: never fetched (a JSON without weights is, and fails the check).
    chosen = sorted(p for p in top if not p.endswith(".safetensors") or p.removesuffix(".safetensors") + ".json" in top)
    max_file, max_total = cap_mb(MAX_FILE_MB_ENV, DEFAULT_MAX_FILE_MB), cap_mb(MAX_TOTAL_MB_ENV, DEFAULT_MAX_TOTAL_MB)
    for p in chosen:
        if top[p] > max_file * 1e6:
            raise HubError(f"{p} is {fmt_mb(top[p])}, over the {max_file} MB limit for one file ({MAX_FILE_MB_ENV}).")
    total = sum(top[p] for p in chosen)
    if total > max_total * 1e6:
        raise HubError(
            f"the run is {fmt_mb(total)}, over the {max_total} MB limit for a download ({MAX_TOTAL_MB_ENV})."
        )
    return chosen


def list_files(repo_id: str, revision: str, token: str | None, endpoint: str) -> dict[str, int]:
    """The repo's files at `revision`, with their sizes in bytes."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    entries = HfApi(endpoint=endpoint, token=token or None).list_repo_tree(repo_id, revision=revision, recursive=True)
    return {e.path: int(e.size or 0) for e in entries if isinstance(e, RepoFile)}


def fmt_mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _fetch_run_files(
    repo_id: str, revision: str, token: str | None, endpoint: str, cache: Path, offline: bool, tally: _Tally
) -> str:
    """The run's files into the HF cache; returns the snapshot folder.

    Online, the repo listing decides exactly which files come (and refuses oversized ones) before any download.
    Offline, or when the Hub does not answer, the cache serves what such a download fetched and checked.
    """
    from huggingface_hub import snapshot_download

    wanted, unanswered = RUN_FILE_PATTERNS, None
    if not offline:
        try:
            wanted = select_run_files(list_files(repo_id, revision, token, endpoint))
        except Exception as exc:
            if not hub_did_not_answer(exc):
                raise
            unanswered = exc
    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            token=token or None,
            endpoint=endpoint,
            cache_dir=cache,
            local_files_only=offline or unanswered is not None,
            allow_patterns=wanted,
            tqdm_class=tally.bar_class(),
            max_workers=4,
        )
    except Exception as exc:
        if unanswered is not None:
            raise exc from unanswered  # the message says why the Hub could not be asked
        raise


def download_run(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Download a run from the Hub (or take it from the cache) and check it loads; returns its folder."""
    repo_id = parse_repo_id(repo_id)
    revision = check_revision(revision)
    label = repo_id if revision == "main" else f"{repo_id}@{revision}"
    if progress is not None:
        progress(DownloadProgress("connecting", message=f"Looking up {label}"))

    offline = is_offline()
    endpoint = hub_endpoint()
    cache = hub_cache_dir()
    tally = _Tally(progress, label)
    try:
        path = Path(_fetch_run_files(repo_id, revision, token, endpoint, cache, offline, tally))
    except HubError:
        raise
    except Exception as exc:
        raise download_error(exc, repo_id, revision, token, endpoint, offline, cache) from exc

    if progress is not None:
        progress(DownloadProgress("verifying", message=f"Checking {label}"))
    manifest, snapshots = validate_run(
        path,
        f"'{label}'",
        " Only runs published with this app (python -m icl_core.storage.hub_publish publish) can be opened.",
    )
    record_hub_run(
        HubRun(
            repo_id=repo_id,
            revision=revision,
            commit=path.name,
            path=path,
            run_name=str(manifest.get("run_name", "")),
            downloaded_at=time.time(),
        )
    )
    if progress is not None:
        progress(DownloadProgress("done", message=f"{label}: {len(snapshots)} snapshots ready"))
    return path


def downloaded_runs() -> list[HubRun]:
    return hub_runs()


def forget_run(repo_id: str, revision: str = "main") -> bool:
    return forget_hub_run(repo_id, revision)


def validate_run(path: Path, what: str, hint: str = "") -> tuple[dict[str, Any], list[SnapshotInfo]]:
    """A run folder must load exactly like a shipped one: manifest, snapshots, every snapshot's weights."""
    if not (path / MANIFEST).is_file():
        raise HubError(f"{what} is not an ICL Explorer run: it has no {MANIFEST} manifest.{hint}")
    try:
        manifest = read_manifest(path)
        snapshots = list_snapshots(path)
    except CheckpointError as exc:
        raise HubError(f"{what}: {Path(exc.path).name} is unusable: {exc.problem}") from exc
    if not snapshots:
        raise HubError(f"{what} has a {MANIFEST} manifest but no snapshots (step_*.json).")
    for info in snapshots:
        try:
            load_model(info)
        except CheckpointError as exc:
            raise HubError(f"{what}: {Path(exc.path).name} is unusable: {exc.problem}") from exc
    return manifest, snapshots
