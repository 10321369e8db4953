"""Deploy this repository to a Hugging Face Space (Docker SDK) as it is: every file git tracks, in one commit.

    .venv/bin/python scripts/deploy_space.py OWNER/SPACE [--token T] [--private]

Built on huggingface_hub's upload_folder rather than `git push`: the Hub refuses a push whose history holds a
binary file as a plain git blob (this repository's history does: its snapshots predate .gitattributes), while
upload_folder asks the Hub, file by file, how to send it and sends binaries through LFS/Xet. Only tracked files
go (`git ls-files`), so local runs, caches and the virtual environment never leave the machine; files the Space
has that the repository no longer tracks are deleted in the same commit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from icl_core.errors import HubError  # noqa: E402
from icl_core.storage import hub, hub_publish  # noqa: E402

NOT_DEPLOYED = ("staging/",)  # tracked work in progress (unfinished training runs): not the app's


def tracked_files(root: Path = ROOT) -> list[str]:
    """The files a fresh clone holds that the Space needs (all but NOT_DEPLOYED), relative to root."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HubError(f"{root} is not a git checkout: deploy from a clone of the repository ({exc})") from exc
    return [p for p in out.decode().split("\0") if p and (root / p).is_file() and not p.startswith(NOT_DEPLOYED)]


def deploy(space_id: str, token: str | None = None, private: bool = False, root: Path = ROOT) -> str:
    """Create the Space if needed and upload the repository's tracked files to it; returns the Space's URL."""
    from huggingface_hub import HfApi

    space_id = hub.parse_repo_id(space_id)
    if hub.is_offline():
        raise HubError("Offline mode is on (HF_HUB_OFFLINE=1): unset it to deploy.")
    files = tracked_files(root)
    endpoint = hub.hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token or None)
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="docker", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=space_id, repo_type="space", folder_path=root, allow_patterns=files, delete_patterns=["*"],
            commit_message=f"Deploy {len(files)} files",
        )  # fmt: skip
    except Exception as exc:
        raise hub_publish.publish_error(exc, space_id, token, endpoint) from exc
    return f"{endpoint}/spaces/{space_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", help="OWNER/SPACE")
    parser.add_argument("--token", default=None, help="a token with write access (default: HF_TOKEN)")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        url = deploy(args.space, args.token, args.private)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"deployed: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
