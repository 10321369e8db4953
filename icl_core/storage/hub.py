"""Runs on the Hugging Face Hub: download (cached, usable offline) and publish.

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
        icl_core.storage.snapshots loads like a shipped run. `progress` is called in the caller's thread
        (safe for st.* calls) with DownloadProgress(stage, files_done, files_total, bytes_done,
        bytes_total, message) and its .fraction in [0, 1]. The run then appears in
        icl_core.storage.runs.discover_runs() with source "hub".
    downloaded_runs() -> list[HubRun]
        Runs downloaded before (icl_core.storage.runs.HubRun: repo_id, revision, commit, path, run_name,
        downloaded_at, label). forget_run(repo_id, revision="main") -> bool drops one from the list.
    publish_run(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str
        Create the repo if needed and upload the run in one commit; returns the repo's URL.
    hub_cache_dir() -> Path, hub_endpoint() -> str, is_offline() -> bool

Environment, read at each call (huggingface_hub reads it once, at import): HF_ENDPOINT (another Hub,
e.g. a test server), HF_HUB_OFFLINE=1 (serve only what was downloaded before), HF_TOKEN (default
token), HF_HUB_CACHE / HF_HOME (cache location; else ICL_DATA_DIR/hf_cache, since a Space's container
may write only below its own folders).

CLI:
    python -m icl_core.storage.hub download OWNER/REPO [--revision R] [--token T]
    python -m icl_core.storage.hub publish RUN_DIR OWNER/REPO [--token T] [--private]
    python -m icl_core.storage.hub list
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icl_core.errors import CheckpointError, HubError
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


@dataclass(frozen=True)
class DownloadProgress:
    stage: str  # "connecting", "downloading", "verifying" or "done"
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
    """Collects what huggingface_hub's progress bars report, from whichever thread reports it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bars: list[_SilentBar] = []

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


def _hub_did_not_answer(exc: Exception) -> bool:
    """No connection, a timeout, or an HTTP error that is not about the repo or the token: a run downloaded
    before may still come from the cache (and if not, the error says the Hub did not answer)."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError | RepositoryNotFoundError | RevisionNotFoundError):
        return False
    if isinstance(exc, HfHubHTTPError):
        return _status(exc) not in (401, 403)
    return isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError)


def list_files(repo_id: str, revision: str, token: str | None, endpoint: str) -> dict[str, int]:
    """The repo's files at `revision`, with their sizes in bytes."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    entries = HfApi(endpoint=endpoint, token=token or None).list_repo_tree(repo_id, revision=revision, recursive=True)
    return {e.path: int(e.size or 0) for e in entries if isinstance(e, RepoFile)}


def fmt_mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _run_reporting(fn: Callable[[], Any], tally: _Tally, progress: ProgressFn | None, label: str) -> Any:
    """Run fn in a worker thread and relay its progress from this one (Streamlit allows st.* only here)."""
    if progress is None:
        return fn()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    worker = threading.Thread(target=work, name="hub-download", daemon=True)
    worker.start()
    last = None
    while True:
        worker.join(0.1)
        state = tally.snapshot()
        if state != last and state[1]:
            files_done, files_total, bytes_done, bytes_total = state
            text = f"Downloading {label}: {files_done}/{files_total} files"
            if bytes_total:
                text += f", {fmt_mb(bytes_done)} of {fmt_mb(bytes_total)}"
            progress(DownloadProgress("downloading", files_done, files_total, bytes_done, bytes_total, text))
            last = state
        if not worker.is_alive():
            break
    if "error" in result:
        raise result["error"]
    return result["value"]


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
            if not _hub_did_not_answer(exc):
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
    tally = _Tally()

    def fetch() -> str:
        return _fetch_run_files(repo_id, revision, token, endpoint, cache, offline, tally)

    try:
        path = Path(_run_reporting(fetch, tally, progress, label))
    except HubError:
        raise
    except Exception as exc:
        raise download_error(exc, repo_id, revision, token, endpoint, offline, cache) from exc

    if progress is not None:
        progress(DownloadProgress("verifying", message=f"Checking {label}"))
    manifest, snapshots = _validate_run(
        path, f"'{label}'", " Only runs published with this app (python -m icl_core.storage.hub publish) can be opened."
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


def _validate_run(path: Path, what: str, hint: str = "") -> tuple[dict[str, Any], list[SnapshotInfo]]:
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


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


@dataclass(frozen=True)
class _DownloadTarget:
    """What a failed download was after, for the error message."""

    repo_id: str
    revision: str
    endpoint: str
    offline: bool
    cache: Path
    has_token: bool
    filename: str | None = None  # the file asked for, where one was

    @property
    def label(self) -> str:
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"

    @property
    def host(self) -> str:
        return self.endpoint.split("://", 1)[-1]

    @property
    def private_hint(self) -> str:
        return (
            f"Repository '{self.repo_id}' was not found on {self.host}, or it is private or gated: "
            "if it is private, pass a token with read access (--token, or the HF_TOKEN variable)."
        )


def _access_error(exc: Exception, t: _DownloadTarget) -> HubError | None:
    """The repo or revision does not exist, or this token may not read it."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = _status(exc)
    if isinstance(exc, RemoteEntryNotFoundError):
        return HubError(f"Repository '{t.label}' has no file '{t.filename or '?'}'.")
    if isinstance(exc, HFValidationError):
        return HubError(f"Invalid repo id or revision for {t.label}: {exc}")
    if isinstance(exc, GatedRepoError):
        return HubError(
            f"'{t.repo_id}' is a gated repository: accept its conditions at {t.endpoint}/{t.repo_id} "
            "and pass a token of the account that did."
        )
    if isinstance(exc, RepositoryNotFoundError):
        if status == 404:
            return HubError(f"Repository '{t.repo_id}' does not exist on {t.host}: check the OWNER/NAME spelling.")
        if t.has_token:
            return HubError(f"Repository '{t.repo_id}' was not found on {t.host}, or your token cannot read it.")
        return HubError(t.private_hint)
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"Repository '{t.repo_id}' has no branch, tag or commit '{t.revision}'.")
    if isinstance(exc, HfHubHTTPError) and status == 401:
        if not t.has_token:
            return HubError(t.private_hint)
        return HubError(f"{t.host} rejected the token (401 Unauthorized): check that it is valid and not expired.")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return HubError(f"Your token is not allowed to read '{t.repo_id}' (403 Forbidden).")
    return None


def _not_a_hub(t: _DownloadTarget, detail: Exception) -> HubError:
    return HubError(
        f"The server at {t.endpoint} does not answer like a Hugging Face Hub ({detail}): check HF_ENDPOINT."
    )


def _cache_miss_error(exc: Exception, t: _DownloadTarget) -> HubError | None:
    """The Hub could not be asked (offline, unreachable, not a Hub) and the cache does not hold the run."""
    from huggingface_hub.errors import (
        FileMetadataError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
    )

    if isinstance(exc, IncompleteSnapshotError):
        return HubError(
            f"An earlier download of {t.label} did not finish and the Hub cannot be reached to complete it: "
            "connect to the network and download it again."
        )
    if not isinstance(exc, LocalEntryNotFoundError):
        return None
    if t.offline:
        return HubError(
            f"Offline mode is on (HF_HUB_OFFLINE=1) and {t.label} has not been downloaded before: "
            "unset HF_HUB_OFFLINE and connect to the network to download it."
        )
    answered = exc.__cause__
    if isinstance(answered, FileMetadataError):
        return _not_a_hub(t, answered)
    if isinstance(answered, HfHubHTTPError):
        code = _status(answered) or 0
        advice = "try again later." if code >= 500 else "check the repo id (and HF_ENDPOINT if it is set)."
        return HubError(
            f"The Hub at {t.endpoint} answered HTTP {code} and {t.label} is not in the local cache: {advice}"
        )
    cause = _root_cause(exc)
    why = f"{type(cause).__name__}: {cause}" if cause is not exc else "no connection"
    return HubError(
        f"Cannot reach the Hub at {t.endpoint} ({why}) and {t.label} is not in the local cache: "
        "check the network connection (and HF_ENDPOINT if it is set)."
    )


def _transfer_error(exc: Exception, t: _DownloadTarget) -> HubError:
    """The download started and then failed: a bad answer, a lost connection, or a full disk."""
    import httpx2
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError

    if isinstance(exc, FileMetadataError):
        return HubError(
            f"The server at {t.endpoint} does not answer like a Hugging Face Hub ({exc}): check HF_ENDPOINT."
        )
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        code = f"HTTP {status}" if status else "an error"
        return HubError(f"The Hub answered {code} while downloading {t.label}; try again later.")
    if isinstance(exc, httpx2.HTTPError | ConnectionError | TimeoutError):
        return HubError(f"Lost the connection to {t.endpoint} while downloading {t.label} ({exc}); try again.")
    if isinstance(exc, OSError):
        return HubError(f"Could not store {t.label} in the cache at {t.cache}: {exc}")
    return HubError(f"Downloading {t.label} failed: {type(exc).__name__}: {exc}")


def download_error(
    exc: Exception,
    repo_id: str,
    revision: str,
    token: str | None,
    endpoint: str,
    offline: bool,
    cache: Path,
    filename: str | None = None,
) -> HubError:
    """One clear sentence for whatever huggingface_hub raised while downloading a run (or one of its files)."""
    has_token = bool(token or os.environ.get("HF_TOKEN"))
    target = _DownloadTarget(repo_id, revision, endpoint, offline, cache, has_token, filename)
    return _access_error(exc, target) or _cache_miss_error(exc, target) or _transfer_error(exc, target)


def _run_files(run_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in run_dir.iterdir()
        if p.is_file() and any(fnmatch.fnmatchcase(p.name, pat) for pat in RUN_FILE_PATTERNS)
    )


def _model_card(repo_id: str, manifest: dict[str, Any], snapshots: list[SnapshotInfo]) -> str:
    cfg = manifest.get("config", {})
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    steps = ", ".join(str(s.step) for s in snapshots[:6]) + (", ..." if len(snapshots) > 6 else "")
    return (
        "---\n"
        "tags:\n- induction-heads\n- icl-explorer\n- attention-only-transformer\n"
        "---\n\n"
        f"# {repo_id}\n\n"
        f"Run `{manifest.get('run_name', '?')}` of the induction-heads explorer (Olsson et al. 2022): "
        f"an attention-only transformer with {model.get('n_layers', '?')} layer(s) and "
        f"{model.get('n_heads', '?')} head(s) per layer, {len(snapshots)} snapshots (steps {steps}).\n\n"
        "Files: `run.json` (manifest and training config), `step_*.safetensors` (weights) with "
        "`step_*.json` (model config and metrics at that step), `train_log.jsonl` (loss curve).\n"
    )


def publish_run(run_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload a run (our files only, never resume state) to a Hub model repo; returns the repo URL."""
    repo_id = parse_repo_id(repo_id)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HubError(f"Cannot publish {run_dir}: no such folder.")
    manifest, snapshots = _validate_run(run_dir, f"Cannot publish {run_dir}")
    if is_offline():
        raise HubError("Offline mode is on (HF_HUB_OFFLINE=1): unset it to publish to the Hub.")

    from huggingface_hub import HfApi

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token or None)
    with tempfile.TemporaryDirectory(prefix="icl-publish-") as tmp:
        # A copy freezes the file set (a run still training keeps writing) and adds the card in one commit.
        staging = Path(tmp)
        for path in _run_files(run_dir):
            shutil.copyfile(path, staging / path.name)
        if not (staging / "README.md").exists():
            (staging / "README.md").write_text(_model_card(repo_id, manifest, snapshots))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                repo_type="model",
                allow_patterns=RUN_FILE_PATTERNS,
                commit_message=f"Upload run {manifest.get('run_name', run_dir.name)} ({len(snapshots)} snapshots)",
            )
        except Exception as exc:
            raise publish_error(exc, repo_id, token, endpoint) from exc
    return f"{endpoint}/{repo_id}"


def publish_error(exc: Exception, repo_id: str, token: str | None, endpoint: str) -> HubError:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    status = _status(exc)
    owner = repo_id.split("/")[0]
    if isinstance(exc, LocalTokenNotFoundError) or (isinstance(exc, HfHubHTTPError) and status == 401):
        if not token and not os.environ.get("HF_TOKEN"):
            return HubError(
                f"Publishing to {repo_id} needs a token with write access: pass --token or set HF_TOKEN "
                "(create one at https://huggingface.co/settings/tokens)."
            )
        return HubError(f"The Hub rejected the token for {repo_id} (401): it must be valid and have write access.")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return HubError(f"Your token may not write to '{owner}' (403 Forbidden): use a token with write access there.")
    if isinstance(exc, HfHubHTTPError) and status == 409:
        return HubError(f"Could not create {repo_id}: {exc.server_message or 'a conflicting repository exists'}.")
    if isinstance(exc, HFValidationError):
        return HubError(f"Invalid repo id {repo_id!r}: {exc}")
    if isinstance(exc, HfHubHTTPError):
        detail = exc.server_message or f"HTTP {status}"
        return HubError(f"Publishing to {repo_id} failed: the Hub answered {detail}.")
    if isinstance(exc, httpx2.HTTPError | ConnectionError | TimeoutError):
        return HubError(f"Cannot reach the Hub at {endpoint} to publish {repo_id} ({exc}).")
    return HubError(f"Publishing to {repo_id} failed: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icl_core.storage.hub", description="Runs on the Hugging Face Hub.")
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="download a run into the local cache and check that it loads")
    down.add_argument("repo_id", help="OWNER/REPO")
    down.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    down.add_argument("--token", default=None, help="for private or gated repos (default: HF_TOKEN)")
    pub = sub.add_parser("publish", help="upload a run folder to a model repo")
    pub.add_argument("run_dir")
    pub.add_argument("repo_id", help="OWNER/REPO (created if it does not exist)")
    pub.add_argument("--token", default=None, help="token with write access (default: HF_TOKEN)")
    pub.add_argument("--private", action="store_true")
    sub.add_parser("list", help="runs downloaded before")
    args = parser.parse_args(argv)

    def report(p: DownloadProgress) -> None:
        print(p.message, file=sys.stderr, flush=True)

    try:
        if args.command == "download":
            print(download_run(args.repo_id, args.revision, args.token, progress=report))
        elif args.command == "publish":
            print(publish_run(args.run_dir, args.repo_id, token=args.token, private=args.private))
        else:
            for run in downloaded_runs():
                print(f"{run.key}\t{run.commit[:12]}\t{run.path}")
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
