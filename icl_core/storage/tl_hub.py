"""The field's published attention-only training runs (TransformerLens format) from the Hub, as our runs.

A repo holds `config.json` and one `.pth` per checkpoint, labelled by tokens seen
(`checkpoints/tokens_{N:012d}.pth`, Neel Nanda's) or by step (`checkpoints/checkpoint_{S:07d}.pth`,
Hoogland et al.'s); formats in ../shared/notes/hub-models.md. Here: list a repo's checkpoints (with
sizes, before anything large is fetched), choose some log-spaced, download only those (plus config and
tokenizer files; never optimizer or scheduler states), and convert each once into our run layout
(safetensors + JSON) so later loads never unpickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from icl_core.errors import CheckpointError, HubError
from icl_core.model.config import ModelConfig, TrainConfig
from icl_core.model.tl_format import convert_state_dict, load_checkpoint, model_config_from_tl
from icl_core.model.transformer import AttnOnlyTransformer
from icl_core.storage import hub
from icl_core.storage.runs import IMPORTED_SUFFIX_PARTIAL, imported_runs_dir
from icl_core.storage.snapshots import atomic_write_json, read_json, write_manifest, write_snapshot

# Checkpoint files and the unit of their label; anything else in the repo (optimizer, scheduler) is never fetched.
CHECKPOINT_PATTERNS = (
    (re.compile(r"^checkpoints/tokens_(\d+)\.(?:pth|safetensors)$"), "tokens"),
    (re.compile(r"^checkpoints/checkpoint_(\d+)\.(?:pth|safetensors)$"), "step"),
)
TOKENIZER_FILES = ("tokenizer.json",)
# The field's published attention-only runs over training (../shared/notes/hub-models.md), offered as presets.
PUBLISHED_REPOS = {
    "NeelNanda/Attn_Only_1L512W_C4_Code": "1 layer, 8 heads, 512 wide; C4 and code; ~160 checkpoints, ~200 MB each",
    "NeelNanda/Attn_Only_2L512W_C4_Code": "2 layers, 8 heads, 512 wide; C4 and code; ~160 checkpoints, ~200 MB each",
    "NeelNanda/Attn_Only_3L512W_C4_Code": "3 layers, 8 heads, 512 wide; C4 and code; ~160 checkpoints, ~200 MB each",
    "NeelNanda/Attn_Only_4L512W_C4_Code": "4 layers, 8 heads, 512 wide; C4 and code; ~160 checkpoints, ~200 MB each",
    "timaeus/L2W256-3m-rr": "2 layers, 8 heads, 256 wide, shortformer; TinyStories (Hoogland et al. 2024); "
    "thousands of checkpoints",
}
DEFAULT_CHECKPOINTS = 24
# One published checkpoint is ~200 MB (48k vocabulary, fp32): a higher per-file cap than our own runs'.
DEFAULT_MAX_CHECKPOINT_MB = 400


@dataclass(frozen=True)
class Checkpoint:
    path: str  # inside the repo
    label: int  # tokens seen or step, by `unit`
    size: int  # bytes


@dataclass(frozen=True)
class TLRepo:
    repo_id: str
    revision: str
    config: dict
    model_config: ModelConfig
    unit: str  # "tokens" or "step": what the checkpoint labels count
    checkpoints: tuple[Checkpoint, ...]  # in label order

    def download_bytes(self, chosen: Sequence[Checkpoint]) -> int:
        return sum(c.size for c in chosen)


def parse_checkpoints(listing: dict[str, int]) -> tuple[str, list[Checkpoint]]:
    """(unit, checkpoints in label order) from a repo listing (path -> bytes); HubError when there are none."""
    found: dict[str, list[Checkpoint]] = {"tokens": [], "step": []}
    for path, size in listing.items():
        for pattern, unit in CHECKPOINT_PATTERNS:
            m = pattern.match(path)
            if m:
                found[unit].append(Checkpoint(path, int(m.group(1)), int(size)))
    for unit_found in found.values():  # a label published both ways: the safetensors file (it holds no pickle)
        by_label: dict[int, Checkpoint] = {}
        for c in sorted(unit_found, key=lambda c: c.path.endswith(".safetensors")):
            by_label[c.label] = c
        unit_found[:] = by_label.values()
    unit = max(found, key=lambda u: len(found[u]))
    if not found[unit]:
        raise HubError(
            "no training checkpoints found: expected checkpoints/tokens_<N>.pth or checkpoints/checkpoint_<step>.pth "
            "(or .safetensors)"
        )
    return unit, sorted(found[unit], key=lambda c: c.label)


def pick_log_spaced(checkpoints: Sequence[Checkpoint], n: int) -> list[Checkpoint]:
    """n checkpoints spread evenly in log(label) (the first and the last always), as Olsson et al. sample."""
    if n >= len(checkpoints):
        return list(checkpoints)
    if n < 2:
        raise ValueError("pick at least 2 checkpoints")
    labels = np.array([max(c.label, 1) for c in checkpoints], dtype=float)
    targets = np.geomspace(labels[0], labels[-1], n)
    chosen: list[int] = []
    for t in targets:
        order = np.argsort(np.abs(np.log(labels) - np.log(t)))
        chosen.append(next(int(i) for i in order if int(i) not in chosen))
    return [checkpoints[i] for i in sorted(chosen)]


def list_repo(repo_id: str, revision: str | None = None, token: str | None = None) -> TLRepo:
    """The repo's config and checkpoints (sizes included), reading only config.json and the file listing."""
    from huggingface_hub import hf_hub_download

    repo_id = hub.parse_repo_id(repo_id)
    revision = hub.check_revision(revision)
    endpoint, cache, offline = hub.hub_endpoint(), hub.hub_cache_dir(), hub.is_offline()
    saved = cache / "tl_listings" / (repo_id.replace("/", "--") + "@" + revision.replace("/", "-") + ".json")
    try:
        config_path = hf_hub_download(
            repo_id, "config.json", revision=revision, token=token or None, endpoint=endpoint, cache_dir=cache,
            local_files_only=offline,
        )  # fmt: skip
        if offline:
            listing = _saved_listing(saved, Path(config_path).parent)
        else:
            listing = hub.list_files(repo_id, revision, token, endpoint)
            saved.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(saved, listing)
    except HubError:
        raise
    except Exception as exc:
        raise hub.download_error(exc, repo_id, revision, token, endpoint, offline, cache, "config.json") from exc
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError("config.json", f"not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError("config.json", "expected a JSON object")
    model_config = model_config_from_tl(config, f"{repo_id}: config.json")
    unit, checkpoints = parse_checkpoints(listing)
    return TLRepo(repo_id, revision, config, model_config, unit, tuple(checkpoints))


def _saved_listing(saved: Path, snapshot_dir: Path) -> dict[str, int]:
    """Offline: the listing saved when the repo was last listed online (the same checkpoints, so the same step
    numbers), else the files the cache holds."""
    try:
        listing = json.loads(saved.read_text())
        return {str(k): int(v) for k, v in listing.items()}
    except (OSError, ValueError, AttributeError):
        cached = [p for p in snapshot_dir.rglob("*") if p.is_file()]
        return {p.relative_to(snapshot_dir).as_posix(): p.stat().st_size for p in cached}


def run_dir_for(repo: TLRepo) -> Path:
    safe = repo.repo_id.replace("/", "--") + ("" if repo.revision == "main" else "@" + repo.revision.replace("/", "-"))
    return imported_runs_dir() / safe


def import_checkpoints(
    repo: TLRepo,
    chosen: Sequence[Checkpoint],
    token: str | None = None,
    progress: hub.ProgressFn | None = None,
    tokens_per_step: int | None = None,
) -> Path:
    """Download the chosen checkpoints (the HF cache is reused, so a second import or an offline one costs
    nothing) and write them as one of our runs; returns its folder. Checkpoints already converted are kept.
    tokens_per_step puts step-labelled checkpoints on the tokens axis (batch size x context of their training)."""
    from huggingface_hub import hf_hub_download

    endpoint, cache = hub.hub_endpoint(), hub.hub_cache_dir()
    offline = hub.is_offline()
    max_file = hub.cap_mb(hub.MAX_FILE_MB_ENV, DEFAULT_MAX_CHECKPOINT_MB)
    max_total = hub.cap_mb(hub.MAX_TOTAL_MB_ENV, hub.DEFAULT_MAX_TOTAL_MB)
    for c in chosen:
        if c.size > max_file * 1e6:
            raise HubError(f"{c.path} is {hub.fmt_mb(c.size)}, over the {max_file} MB limit for one file.")
    if repo.download_bytes(chosen) > max_total * 1e6:
        raise HubError(
            f"{len(chosen)} checkpoints are {hub.fmt_mb(repo.download_bytes(chosen))}, over the {max_total} MB limit "
            f"for a download ({hub.MAX_TOTAL_MB_ENV}): pick fewer checkpoints."
        )
    run_dir = run_dir_for(repo)
    cfg = repo.model_config
    total = repo.download_bytes(chosen)

    def fetch(filename: str, repo_id: str = repo.repo_id) -> Path:
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=repo.revision if repo_id == repo.repo_id else None,
                    token=token or None,
                    endpoint=endpoint,
                    cache_dir=cache,
                    local_files_only=offline,
                )
            )
        except Exception as exc:
            raise hub.download_error(exc, repo_id, repo.revision, token, endpoint, offline, cache, filename) from exc

    # Written beside the run, renamed into place at the end: a cut-short import leaves no half-run in the picker,
    # and a repeated one continues from the checkpoints already converted.
    staging = run_dir.with_name(run_dir.name + IMPORTED_SUFFIX_PARTIAL)
    if run_dir.is_dir() and not staging.exists():
        # Redoing a finished import (another choice, an evaluation cut short) starts from its converted and
        # evaluated snapshots: hard links, so nothing is copied, and the run stays in the picker until the swap.
        shutil.copytree(run_dir, staging, copy_function=_link_or_copy)
    staging.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = staging / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        if not (tokenizer_dir / name).exists():
            if not cfg.tokenizer:
                raise CheckpointError("config.json", "names no tokenizer (tokenizer_name)")
            shutil.copy(fetch(name, cfg.tokenizer), tokenizer_dir / name)
    done_bytes = 0
    kept: set[str] = set()
    for i, c in enumerate(chosen):
        # Token-labelled checkpoints are numbered by their place in the whole repo, not in this choice: a retried
        # import with another choice must not take an earlier attempt's snapshot for a different checkpoint.
        step = c.label if repo.unit == "step" else repo.checkpoints.index(c)
        stem = staging / f"step_{step:06d}"
        kept.add(stem.name)
        # Step-labelled checkpoints (Hoogland et al.'s) say nothing of tokens: 0 (unknown) without tokens_per_step.
        tokens = c.label if repo.unit == "tokens" else c.label * (tokens_per_step or 0)
        meta_path = stem.with_suffix(".json")
        if not meta_path.exists():
            path = fetch(c.path)
            where = f"{repo.repo_id}/{c.path}"
            state = convert_state_dict(load_checkpoint(path, where), cfg, where)
            model = AttnOnlyTransformer(cfg)
            model.load_state_dict(state)
            write_snapshot(staging, model, step, tokens, {}, dtype=torch.float32)  # fp32: TransformerLens's numbers
        elif read_json(meta_path).get("tokens_seen") != tokens:  # redone with another tokens_per_step
            atomic_write_json(meta_path, {**read_json(meta_path), "tokens_seen": tokens})
        done_bytes += c.size
        if progress is not None:
            progress(
                hub.DownloadProgress(
                    "downloading", i + 1, len(chosen), done_bytes, total, f"{repo.repo_id}: {i + 1}/{len(chosen)}"
                )
            )
    for leftover in staging.glob("step_*"):  # converted by an earlier attempt that chose other checkpoints
        if leftover.name.split(".")[0] not in kept:
            leftover.unlink()
    write_manifest(
        staging,
        TrainConfig(run_name=run_dir.name[:64], model=cfg, compute_icl_score=False),
        {
            "status": "imported",
            "source": {"repo_id": repo.repo_id, "revision": repo.revision, "unit": repo.unit,
                       "tokens_per_step": tokens_per_step, "checkpoints": [c.path for c in chosen]},
            "imported_at": time.time(),
        },
    )  # fmt: skip
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)  # the run appears whole or not at all
    return run_dir


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def describe(repo: TLRepo, chosen: Sequence[Checkpoint]) -> str:
    """What a download will fetch, for the confirmation the page shows before it starts."""
    return (
        f"{len(chosen)} of {len(repo.checkpoints)} checkpoints ({repo.unit} {chosen[0].label:,} to "
        f"{chosen[-1].label:,}), {hub.fmt_mb(repo.download_bytes(chosen))}"
    )


def main(argv: list[str] | None = None) -> int:
    """python -m icl_core.storage.tl_hub REPO [--checkpoints N]: import and evaluate a published run."""
    import argparse
    import sys

    from icl_core.analysis.evaluation import evaluate_run
    from icl_core.errors import ICLError

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repo", help="e.g. NeelNanda/Attn_Only_2L512W_C4_Code")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--checkpoints", type=int, default=DEFAULT_CHECKPOINTS, help="how many, log-spaced")
    parser.add_argument("--yes", action="store_true", help="do not ask before downloading")
    parser.add_argument(
        "--tokens-per-step", type=int, default=None, help="step-labelled checkpoints: tokens a training step saw"
    )
    args = parser.parse_args(argv)
    try:
        repo = list_repo(args.repo, args.revision)
        chosen = pick_log_spaced(repo.checkpoints, args.checkpoints)
        print(f"{repo.repo_id}: {describe(repo, chosen)}")
        if not args.yes and input("download? [y/N] ").strip().lower() != "y":
            return 1
        run_dir = import_checkpoints(
            repo, chosen, progress=lambda p: print(p.message, flush=True), tokens_per_step=args.tokens_per_step
        )
        evaluate_run(run_dir, progress=lambda i, n: print(f"evaluated {i}/{n}", flush=True))
    except ICLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
