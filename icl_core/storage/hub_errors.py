"""What went wrong with a Hub download, in one sentence a visitor can act on: the Hub's and huggingface_hub's
errors (a missing or gated repo, a bad token, no network, an offline cache miss) translated to HubError."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from icl_core.errors import HubError


def hub_did_not_answer(exc: Exception) -> bool:
    """No connection, a timeout, or an HTTP error that is not about the repo or the token: a run downloaded
    before may still come from the cache (and if not, the error says the Hub did not answer)."""
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError | RepositoryNotFoundError | RevisionNotFoundError):
        return False
    if isinstance(exc, HfHubHTTPError):
        return http_status(exc) not in (401, 403)
    return isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError)


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def http_status(exc: BaseException) -> int | None:
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

    status = http_status(exc)
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
        code = http_status(answered) or 0
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
        status = http_status(exc)
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
