"""Deploy this repository to a Hugging Face Space (Docker SDK) as it is: every file git tracks, in one commit.

    .venv/bin/python scripts/deploy_space.py OWNER/SPACE [--token T] [--private]
    .venv/bin/python scripts/deploy_space.py OWNER/SPACE --dry-run   # what would go, and how; sends nothing

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


HUB_LFS_BYTES = 10 * 1024 * 1024  # the Hub sends a file this large through LFS/Xet whatever .gitattributes says
SAMPLE_BYTES = 512  # what huggingface_hub shows the Hub of a file before it is sent (lfs.py: UploadInfo.sample)


def upload_plan(root: Path = ROOT) -> list[tuple[str, int, str]]:
    """(path, bytes, how) for every file deploy() would upload, by the Hub's preupload rule (huggingface_hub PR
    #828; tests/fake_hub.py serves the same): "LFS (binary)" for a NUL byte in the file's first 512 bytes,
    "LFS (10 MB or more)", "LFS (.gitattributes)" where the Space's .gitattributes (this repository's, once
    deployed) routes it to LFS, else "regular"."""
    files = tracked_files(root)
    attrs = subprocess.run(
        ["git", "check-attr", "-z", "filter", "--stdin"], cwd=root, input="\0".join(files) + "\0",
        capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    lfs = {path for path, value in zip(attrs[0::3], attrs[2::3], strict=False) if value == "lfs"}
    plan = []
    for path in files:
        size = (root / path).stat().st_size
        with open(root / path, "rb") as f:
            sample = f.read(SAMPLE_BYTES)
        if b"\0" in sample:
            how = "LFS (binary)"
        elif size >= HUB_LFS_BYTES:
            how = "LFS (10 MB or more)"
        else:
            how = "LFS (.gitattributes)" if path in lfs else "regular"
        plan.append((path, size, how))
    return plan


def print_plan(plan: list[tuple[str, int, str]]) -> None:
    for path, size, how in plan:
        print(f"{size:>12,}  {how:<20}  {path}")
    through_lfs = [size for _, size, how in plan if how.startswith("LFS")]
    total = sum(size for _, size, _ in plan)
    print(f"{len(plan)} files, {total / 1e6:.1f} MB; {len(through_lfs)} through LFS ({sum(through_lfs) / 1e6:.1f} MB)")


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
    parser.add_argument("--dry-run", action="store_true", help="list the files, their sizes and which go through LFS")
    args = parser.parse_args(argv)
    if args.dry_run:
        try:
            print_plan(upload_plan())
        except HubError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"dry run: nothing was sent to {args.space}")
        return 0
    try:
        url = deploy(args.space, args.token, args.private)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"deployed: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
