"""Publish a run to the Hugging Face Hub (one commit of its files and a model card), and the hub command line.

CLI:
    python -m icl_core.storage.hub_publish download OWNER/REPO [--revision R] [--token T]
    python -m icl_core.storage.hub_publish publish RUN_DIR OWNER/REPO [--token T] [--private]
    python -m icl_core.storage.hub_publish list
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from icl_core.errors import HubError
from icl_core.storage.hub import (
    RUN_FILE_PATTERNS,
    DownloadProgress,
    download_run,
    downloaded_runs,
    hub_endpoint,
    is_offline,
    parse_repo_id,
    validate_run,
)
from icl_core.storage.hub_errors import http_status
from icl_core.storage.snapshots import SnapshotInfo


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
    manifest, snapshots = validate_run(run_dir, f"Cannot publish {run_dir}")
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

    status = http_status(exc)
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
    parser = argparse.ArgumentParser(
        prog="python -m icl_core.storage.hub_publish", description="Runs on the Hugging Face Hub."
    )
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
    raise SystemExit(main())
