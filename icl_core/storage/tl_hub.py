"""The field's published training runs from the Hub, as our runs: attention-only ones (TransformerLens format) and
EleutherAI's Pythia (GPT-NeoX, one branch per step: storage/step_revisions.py, model/hf_format.py).

A repo holds one `.pth` per checkpoint, labelled by tokens seen (`checkpoints/tokens_{N:012d}.pth`, Neel
Nanda's, with `model_init.pth` at the root as tokens 0) or by step (`checkpoints/checkpoint_{S:07d}.pth`,
Hoogland et al.'s), and a `config.json` or, for runs whose authors ship none, a config known here
(storage/published.py); formats in ../shared/notes/hub-models.md. Here: list a repo's checkpoints (with sizes,
before anything large is fetched), choose some (dense where the phase change is known to be), and stream them:
download one, convert it to our fp16 safetensors, hand it to the caller (who evaluates it), drop the `.pth`
from the cache, then the next. Disk and memory hold one published checkpoint at a time; optimizer and
scheduler states are never fetched, and nothing downloaded is ever unpickled beyond tensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from icl_core.errors import CheckpointError, ConfigError, HubError
from icl_core.model import neox
from icl_core.model.config import ModelConfig, TrainConfig, parameter_count
from icl_core.model.family import read_published
from icl_core.model.tl_format import model_config_from_tl
from icl_core.storage import hub, step_revisions
from icl_core.storage.published import PYTHIA_TOKENS_PER_STEP, KnownWindow, builtin_config, known_window
from icl_core.storage.runs import IMPORTED_SUFFIX_PARTIAL, imported_runs_dir
from icl_core.storage.snapshots import (
    SnapshotInfo,
    atomic_write_json,
    read_json,
    read_snapshot_info,
    write_manifest,
    write_snapshot,
)

CONFIG_FILE = "config.json"
# Checkpoint files and the unit of their label; anything else in the repo (optimizer, scheduler, model_final.pth,
# whose label is not in its name) is never fetched.
CHECKPOINT_PATTERNS = (
    (re.compile(r"^checkpoints/tokens_(\d+)\.pth$"), "tokens"),
    (re.compile(r"^checkpoints/checkpoint_(\d+)\.pth$"), "step"),
)
# solu_project's train_model_ddp.py saves the initial weights here before the first step: label 0.
INIT_CHECKPOINT = "model_init.pth"
TOKENIZER_FILES = ("tokenizer.json",)
DEFAULT_CHECKPOINTS = 24  # at most; fewer where the disk cap says so (default_count)
# One published checkpoint is ~200 MB (48k vocabulary, fp32); it passes through the cache one at a time.
DEFAULT_MAX_CHECKPOINT_MB = 400
SNAPSHOT_DTYPE = torch.float16  # what is kept: half the published fp32 (see the README for what it changes)
_METADATA_BYTES = 64_000  # a snapshot's JSON with its metrics (loss curve, PCA vector, head scores)


@dataclass(frozen=True)
class Checkpoint:
    path: str  # inside the repo
    label: int  # tokens seen or step, by `unit`
    size: int  # bytes
    revision: str | None = None  # the branch it is on, where each checkpoint has its own (Pythia's step branches)

    @property
    def name(self) -> str:
        """The checkpoint as a person finds it on the Hub: its path, on its own branch where it has one."""
        return f"{self.revision}:{self.path}" if self.revision else self.path


@dataclass(frozen=True)
class TLRepo:
    repo_id: str
    revision: str
    config: dict
    model_config: ModelConfig
    unit: str  # "tokens" or "step": what the checkpoint labels count
    checkpoints: tuple[Checkpoint, ...]  # in label order
    config_source: str = CONFIG_FILE  # where the config came from: the repo's config.json or a cited loader
    tokens_per_step: int | None = None  # known for step-labelled runs with a built-in config
    window: KnownWindow | None = None  # where the phase change is known to be (tokens), if it is
    flagged: tuple[str, ...] = ()  # branches left out: their weights file is byte-identical to a later branch's

    def download_bytes(self, chosen: Sequence[Checkpoint]) -> int:
        return sum(c.size for c in chosen)

    def kept_bytes(self, chosen: Sequence[Checkpoint]) -> int:
        """Disk the imported run keeps: fp16 weights and metrics per checkpoint (the .pth files do not stay)."""
        return len(chosen) * snapshot_bytes(self.model_config)

    def tokens(self, c: Checkpoint, tokens_per_step: int | None = None) -> int:
        """Tokens seen at a checkpoint; 0 (unknown) for a step label when no tokens per step is known."""
        if self.unit == "tokens":
            return c.label
        return c.label * (tokens_per_step or self.tokens_per_step or 0)


def snapshot_bytes(cfg: ModelConfig) -> int:
    return parameter_count(cfg) * torch.finfo(SNAPSHOT_DTYPE).bits // 8 + _METADATA_BYTES


def parse_checkpoints(listing: dict[str, int]) -> tuple[str, list[Checkpoint]]:
    """(unit, checkpoints in label order) from a repo listing (path -> bytes); HubError when there are none."""
    found: dict[str, list[Checkpoint]] = {"tokens": [], "step": []}
    for path, size in listing.items():
        for pattern, unit in CHECKPOINT_PATTERNS:
            m = pattern.match(path)
            if m:
                found[unit].append(Checkpoint(path, int(m.group(1)), int(size)))
    unit = max(found, key=lambda u: len(found[u]))
    checkpoints = found[unit]
    if not checkpoints:
        raise HubError(
            "no training checkpoints found: expected checkpoints/tokens_<N>.pth or checkpoints/checkpoint_<step>.pth"
        )
    if INIT_CHECKPOINT in listing and not any(c.label == 0 for c in checkpoints):
        checkpoints.append(Checkpoint(INIT_CHECKPOINT, 0, int(listing[INIT_CHECKPOINT])))
    return unit, sorted(checkpoints, key=lambda c: c.label)


def pick_log_spaced(checkpoints: Sequence[Checkpoint], n: int) -> list[Checkpoint]:
    """n checkpoints spread evenly in log(label) (the first and the last always), as Olsson et al. sample."""
    if n >= len(checkpoints):
        return list(checkpoints)
    if n < 2:
        raise ValueError("pick at least 2 checkpoints")
    if checkpoints[0].label == 0:  # the initial weights, then log-spaced from the first step saved
        return (
            [checkpoints[0], *pick_log_spaced(checkpoints[1:], n - 1)] if n > 2 else [checkpoints[0], checkpoints[-1]]
        )
    labels = np.array([c.label for c in checkpoints], dtype=float)
    targets = np.geomspace(labels[0], labels[-1], n)
    chosen: list[int] = []
    for t in targets:
        order = np.argsort(np.abs(np.log(labels) - np.log(t)))
        chosen.append(next(int(i) for i in order if int(i) not in chosen))
    return [checkpoints[i] for i in sorted(chosen)]


def choose(repo: TLRepo, n: int) -> list[Checkpoint]:
    """n checkpoints: log-spaced over the run (first and last always) and, where the phase change is known to be
    (repo.window), half of them log-spaced inside it, so the change is sampled densely."""
    if n >= len(repo.checkpoints):
        return list(repo.checkpoints)
    inside: list[Checkpoint] = []
    if repo.window is not None:
        inside = [c for c in repo.checkpoints if repo.window.lo_tokens <= repo.tokens(c) <= repo.window.hi_tokens]
    if len(inside) < 2 or n < 4:
        return pick_log_spaced(repo.checkpoints, n)
    chosen = set(pick_log_spaced(inside, n // 2)) | set(pick_log_spaced(repo.checkpoints, n - n // 2))
    labels = np.log([max(c.label, 1) for c in repo.checkpoints])
    while len(chosen) < n:  # the two choices overlapped: add the checkpoint farthest (in log label) from the rest
        taken = np.log([max(c.label, 1) for c in chosen])
        gaps = [
            np.min(np.abs(taken - x)) if c not in chosen else -1.0
            for c, x in zip(repo.checkpoints, labels, strict=True)
        ]
        chosen.add(repo.checkpoints[int(np.argmax(gaps))])
    return sorted(chosen, key=lambda c: c.label)


def default_count(repo: TLRepo) -> int:
    """How many checkpoints a default import fetches: DEFAULT_CHECKPOINTS, or fewer where the disk cap
    (ICL_HUB_MAX_TOTAL_MB, on what the run keeps) would refuse them."""
    cap = hub.cap_mb(hub.MAX_TOTAL_MB_ENV, hub.DEFAULT_MAX_TOTAL_MB) * 1_000_000
    return max(2, min(DEFAULT_CHECKPOINTS, len(repo.checkpoints), cap // snapshot_bytes(repo.model_config)))


def list_repo(repo_id: str, revision: str | None = None, token: str | None = None) -> TLRepo:
    """The repo's config and checkpoints (sizes included), reading only the file listing and config.json (or,
    for a run that ships no config, the config its authors' loader hard-codes: storage/published.py)."""
    repo_id = hub.parse_repo_id(repo_id)
    revision = hub.check_revision(revision)
    endpoint, cache, offline = hub.hub_endpoint(), hub.hub_cache_dir(), hub.is_offline()
    saved = cache / "tl_listings" / (repo_id.replace("/", "--") + "@" + revision.replace("/", "-") + ".json")
    builtin = builtin_config(repo_id)
    config_path: Path | None = None
    try:
        if offline:
            listing = _saved_listing(saved)
            if listing is None:
                if builtin is not None:
                    raise HubError(
                        f"{repo_id} was never listed on this machine, and the Hub is offline (HF_HUB_OFFLINE)."
                    )
                config_path = _fetch(repo_id, CONFIG_FILE, revision, token)  # raises the cache-miss message
                listing = _cached_files(config_path.parent)
        else:
            listing = hub.list_files(repo_id, revision, token, endpoint)
            saved.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(saved, listing)
        if config_path is None and CONFIG_FILE in listing:
            config_path = _fetch(repo_id, CONFIG_FILE, revision, token)
    except HubError:
        raise
    except Exception as exc:
        raise hub.download_error(exc, repo_id, revision, token, endpoint, offline, cache, CONFIG_FILE) from exc
    if config_path is not None:
        config, source, tokens_per_step = _read_config(config_path, repo_id), CONFIG_FILE, None
        if config.get("model_type") == "gpt_neox":
            return _branch_per_step_repo(repo_id, revision, config, token)
    elif builtin is not None:
        config, source, tokens_per_step = builtin.tl_config, builtin.source, builtin.tokens_per_step
    else:
        raise HubError(
            f"{repo_id} has no config.json, and it is not a run whose config is known here "
            "(the L*W256-3m-rr runs of timaeus are): its model cannot be built."
        )
    model_config = model_config_from_tl(config, f"{repo_id}: {source}")
    unit, checkpoints = parse_checkpoints(listing)
    window = known_window(repo_id)
    return TLRepo(repo_id, revision, config, model_config, unit, tuple(checkpoints), source, tokens_per_step, window)


def _branch_per_step_repo(repo_id: str, revision: str, config: dict, token: str | None) -> TLRepo:
    """A GPT-NeoX repo laid out as EleutherAI's Pythia: one branch per training step, each with its own weights
    file; the branches whose file is byte-identical to a later branch's are left out and named (flagged)."""
    where = f"{repo_id}: {CONFIG_FILE}"
    try:
        model_config = neox.config_from_hf(config, tokenizer=repo_id)
        model_config.validate()
    except KeyError as exc:
        raise CheckpointError(where, f"missing config field {exc.args[0]!r}") from exc
    except (ValueError, ConfigError) as exc:
        raise CheckpointError(where, str(exc)) from exc
    endpoint = hub.hub_endpoint()
    if hub.is_offline():
        raise HubError(f"{repo_id}'s step branches can only be listed online (HF_HUB_OFFLINE is set).")
    try:
        revisions = step_revisions.list_step_revisions(repo_id, PYTHIA_TOKENS_PER_STEP, endpoint, token)
    except Exception as exc:
        raise hub.download_error(exc, repo_id, revision, token, endpoint, False, hub.hub_cache_dir(), "refs") from exc
    usable = [r for r in revisions if r.weights_file is not None]
    if not usable:
        raise HubError(f"{repo_id} has no step branches (step0 ... step143000) with a weights file.")
    checkpoints = tuple(
        Checkpoint(r.weights_file or "", r.step, r.size or 0, revision=r.branch) for r in usable if not r.flagged
    )
    flagged = tuple(f"{r.branch} (its weights file is {r.duplicate_of}'s)" for r in usable if r.flagged)
    tokens_per_step = PYTHIA_TOKENS_PER_STEP
    return TLRepo(
        repo_id, revision, config, model_config, "step", checkpoints, CONFIG_FILE, tokens_per_step,
        known_window(repo_id), flagged,
    )  # fmt: skip


def _fetch(repo_id: str, filename: str, revision: str | None, token: str | None) -> Path:
    """One file of a repo through the HF cache; a failure is one clear HubError."""
    from huggingface_hub import hf_hub_download

    endpoint, cache, offline = hub.hub_endpoint(), hub.hub_cache_dir(), hub.is_offline()
    try:
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, token=token or None, endpoint=endpoint, cache_dir=cache,
                local_files_only=offline,
            )
        )  # fmt: skip
    except Exception as exc:
        raise hub.download_error(exc, repo_id, revision or "main", token, endpoint, offline, cache, filename) from exc


def _read_config(path: Path, repo_id: str) -> dict:
    where = f"{repo_id}: {CONFIG_FILE}"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(where, f"not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(where, "expected a JSON object")
    return config


def _saved_listing(saved: Path) -> dict[str, int] | None:
    """Offline: the listing saved when the repo was last listed online (the same checkpoints, so the same step
    numbers), if there is one."""
    try:
        listing = json.loads(saved.read_text())
        return {str(k): int(v) for k, v in listing.items()}
    except (OSError, ValueError, AttributeError):
        return None


def _cached_files(snapshot_dir: Path) -> dict[str, int]:
    cached = [p for p in snapshot_dir.rglob("*") if p.is_file()]
    return {p.relative_to(snapshot_dir).as_posix(): p.stat().st_size for p in cached}


def run_dir_for(repo: TLRepo) -> Path:
    safe = repo.repo_id.replace("/", "--") + ("" if repo.revision == "main" else "@" + repo.revision.replace("/", "-"))
    return imported_runs_dir() / safe


def describe(repo: TLRepo, chosen: Sequence[Checkpoint], seconds: float | None = None) -> str:
    """What an import will fetch and keep, for the confirmation shown before it starts."""
    where = (
        f"tokens {repo.tokens(chosen[0]):,} to {repo.tokens(chosen[-1]):,}"
        if repo.unit == "tokens" or repo.tokens_per_step
        else f"steps {chosen[0].label:,} to {chosen[-1].label:,}"
    )
    text = (
        f"{len(chosen)} of {len(repo.checkpoints)} checkpoints ({where}): downloads "
        f"{hub.fmt_mb(repo.download_bytes(chosen))} one checkpoint at a time, keeps "
        f"{hub.fmt_mb(repo.kept_bytes(chosen))}"
    )
    if seconds is not None:
        text += f", about {max(1, round(seconds / 60))} min on 2 CPU cores plus the download time"
    if repo.window is not None:
        inside = [c for c in repo.checkpoints if repo.window.lo_tokens <= repo.tokens(c) <= repo.window.hi_tokens]
        taken = sum(c in chosen for c in inside)
        text += f". Where induction heads are known to form ({repo.window.source}): {taken} of the {len(inside)} there"
    if repo.flagged:
        text += f". Skipped, as serving another branch's weights: {', '.join(repo.flagged)}"
    return text


def _check_caps(repo: TLRepo, chosen: Sequence[Checkpoint]) -> None:
    """HubError before any download if one file or what the import keeps is over its cap."""
    max_file = hub.cap_mb(hub.MAX_FILE_MB_ENV, DEFAULT_MAX_CHECKPOINT_MB)
    max_kept = hub.cap_mb(hub.MAX_TOTAL_MB_ENV, hub.DEFAULT_MAX_TOTAL_MB)
    for c in chosen:
        if c.size > max_file * 1e6:
            raise HubError(f"{c.path} is {hub.fmt_mb(c.size)}, over the {max_file} MB limit for one file.")
    if repo.kept_bytes(chosen) > max_kept * 1e6:
        raise HubError(
            f"{len(chosen)} checkpoints would keep {hub.fmt_mb(repo.kept_bytes(chosen))} on disk, over the "
            f"{max_kept} MB limit ({hub.MAX_TOTAL_MB_ENV}): pick at most {default_count(repo)}."
        )


def _staging_for(run_dir: Path) -> Path:
    """Where the import writes: beside the run, renamed into place at the end, so a cut-short import leaves no
    half-run in the picker and a repeated one continues from the checkpoints already converted."""
    staging = run_dir.with_name(run_dir.name + IMPORTED_SUFFIX_PARTIAL)
    if run_dir.is_dir() and not staging.exists():
        # Redoing a finished import (another choice, an evaluation cut short) starts from its converted and
        # evaluated snapshots: hard links, so nothing is copied, and the run stays in the picker until the swap.
        shutil.copytree(run_dir, staging, copy_function=_link_or_copy)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _fetch_tokenizer(repo: TLRepo, staging: Path, token: str | None) -> None:
    tokenizer_dir = staging / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        if not (tokenizer_dir / name).exists():
            if not repo.model_config.tokenizer:
                raise CheckpointError(repo.config_source, "names no tokenizer (tokenizer_name)")
            shutil.copy(_fetch(repo.model_config.tokenizer, name, None, token), tokenizer_dir / name)


def _convert_checkpoint(repo: TLRepo, c: Checkpoint, staging: Path, step: int, tokens: int, token: str | None) -> None:
    """Download one checkpoint, write it as an fp16 snapshot, and drop the download from the HF cache."""
    revision = c.revision or repo.revision
    path = _fetch(repo.repo_id, c.path, revision, token)
    where = f"{repo.repo_id}@{revision}/{c.path}"
    try:
        model = read_published(path, repo.model_config, where)
    finally:
        _drop_from_cache(path)  # what passes through is not kept: the cap is on what stays
    write_snapshot(staging, model, step, tokens, {}, dtype=SNAPSHOT_DTYPE)


def import_checkpoints(
    repo: TLRepo,
    chosen: Sequence[Checkpoint],
    token: str | None = None,
    progress: hub.ProgressFn | None = None,
    tokens_per_step: int | None = None,
    on_snapshot: Callable[[SnapshotInfo], None] | None = None,
) -> Path:
    """Stream the chosen checkpoints into one of our runs and return its folder: for each, download the .pth,
    convert it to fp16 safetensors, drop the .pth from the HF cache, then call on_snapshot (the caller evaluates
    it there). Checkpoints converted (and evaluated) by an earlier attempt are kept, so a cancelled or failed
    import continues where it stopped. tokens_per_step overrides the repo's own for step-labelled checkpoints."""
    _check_caps(repo, chosen)
    run_dir = run_dir_for(repo)
    cfg = repo.model_config
    total = repo.download_bytes(chosen)
    staging = _staging_for(run_dir)
    _fetch_tokenizer(repo, staging, token)
    done_bytes = 0
    kept: set[str] = set()
    for i, c in enumerate(chosen):
        # Token-labelled checkpoints are numbered by their place in the whole repo, not in this choice: a retried
        # import with another choice must not take an earlier attempt's snapshot for a different checkpoint.
        step = c.label if repo.unit == "step" else repo.checkpoints.index(c)
        stem = staging / f"step_{step:06d}"
        kept.add(stem.name)
        tokens = repo.tokens(c, tokens_per_step)
        meta_path = stem.with_suffix(".json")
        if progress is not None:
            message = f"{repo.repo_id}: checkpoint {i + 1}/{len(chosen)} ({c.name})"
            progress(hub.DownloadProgress("downloading", i, len(chosen), done_bytes, total, message))
        if not meta_path.exists():
            _convert_checkpoint(repo, c, staging, step, tokens, token)
        elif read_json(meta_path).get("tokens_seen") != tokens:  # redone with another tokens_per_step
            atomic_write_json(meta_path, {**read_json(meta_path), "tokens_seen": tokens})
        snap = read_snapshot_info(meta_path)
        if on_snapshot is not None and not snap.metrics.recorded:
            on_snapshot(snap)
        done_bytes += c.size
        if progress is not None:
            done = "converted and evaluated" if on_snapshot is not None else "converted"
            message = f"{repo.repo_id}: {i + 1}/{len(chosen)} checkpoints {done}"
            progress(hub.DownloadProgress("downloading", i + 1, len(chosen), done_bytes, total, message))
    for leftover in staging.glob("step_*"):  # converted by an earlier attempt that chose other checkpoints
        if leftover.name.split(".")[0] not in kept:
            leftover.unlink()
    write_manifest(
        staging,
        TrainConfig(run_name=run_dir.name[:64], model=cfg, compute_icl_score=False),
        {
            "status": "imported",
            "source": {"repo_id": repo.repo_id, "revision": repo.revision, "unit": repo.unit,
                       "config": repo.config_source, "tokens_per_step": tokens_per_step or repo.tokens_per_step,
                       "checkpoints": [c.name for c in chosen], "flagged": list(repo.flagged)},
            "imported_at": time.time(),
        },
    )  # fmt: skip
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)  # the run appears whole or not at all
    return run_dir


def _drop_from_cache(path: Path) -> None:
    """Delete a downloaded file from the HF cache: the snapshot's link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)
