"""Training checkpoints published as one branch per step (EleutherAI's Pythia: `step0` ... `step143000`), listed
without downloading any weights, with the branches whose weights are not their own flagged (issue 33).

The Hub's refs route names every branch and its commit (`HfApi.list_repo_refs`); its tree route gives each file's
size and, for a file stored in LFS (as every `.safetensors` and `.bin` is), the sha256 of its content
(`RepoFile.lfs.sha256`). Two branches whose weights file has the same sha256 hold the same weights: some Pythia
step branches serve weights from later in training (EleutherAI/pythia issues #195, #205, #206). Of such a group
the branch with the highest step keeps its label (a faulty branch serves *later* weights); the others are flagged
and skipped by default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STEP_BRANCH = re.compile(r"^step(\d+)$")
# What a branch's weights are read from, preferred first: safetensors where the branch has it, else the pickle
# (read with torch.load(weights_only=True) only).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def pythia_steps() -> list[int]:
    """The 154 steps EleutherAI publish: 0, then 1, 2, 4 ... 512, then every 1,000 to 143,000 (EleutherAI/pythia
    README; TransformerLens's PYTHIA_CHECKPOINTS in loading_from_pretrained.py)."""
    return [0, *(2**i for i in range(10)), *range(1000, 143_001, 1000)]


@dataclass(frozen=True)
class StepRevision:
    branch: str
    step: int
    commit: str
    tokens_seen: int
    weights_file: str | None = None  # WEIGHT_FILES' first present on the branch (None: the branch has none)
    size: int | None = None  # bytes
    sha256: str | None = None  # from the listing (None where the file is not in LFS)
    duplicate_of: str | None = None  # the branch whose weights file is byte-identical and which keeps its label

    @property
    def flagged(self) -> bool:
        return self.duplicate_of is not None


def step_revisions(branches: Iterable[tuple[str, str]], tokens_per_step: int) -> list[StepRevision]:
    """(branch name, commit) pairs -> the step branches, by step; other branches (`main`) are left out."""
    out = []
    for name, commit in branches:
        match = STEP_BRANCH.match(name)
        if match:
            step = int(match.group(1))
            out.append(StepRevision(name, step, commit, step * tokens_per_step))
    return sorted(out, key=lambda r: r.step)


def with_weights(revision: StepRevision, tree: Sequence[Mapping[str, Any]]) -> StepRevision:
    """The revision with its weights file, size and sha256 from its root listing: entries as the tree route
    answers ({"type", "path", "size", "lfs": {"oid", "size", "pointerSize"}}, huggingface_hub's RepoFile)."""
    files = {e["path"]: e for e in tree if e.get("type") == "file"}
    for name in WEIGHT_FILES:
        if name in files:
            lfs = files[name].get("lfs") or {}
            return dataclasses.replace(
                revision, weights_file=name, size=int(files[name].get("size") or 0), sha256=lfs.get("oid")
            )
    return revision


def flag_duplicates(revisions: Sequence[StepRevision]) -> list[StepRevision]:
    """Each revision whose weights file's sha256 equals a later-step revision's, flagged (duplicate_of: the latest
    such branch). A file without a sha256 (not in LFS) is never flagged: nothing says it is a copy."""
    latest: dict[str, StepRevision] = {}
    for r in revisions:
        if r.sha256 and (r.sha256 not in latest or r.step > latest[r.sha256].step):
            latest[r.sha256] = r
    return [
        dataclasses.replace(r, duplicate_of=latest[r.sha256].branch)
        if r.sha256 and latest[r.sha256].branch != r.branch
        else r
        for r in revisions
    ]


def list_step_revisions(
    repo_id: str, tokens_per_step: int, endpoint: str, token: str | None = None
) -> list[StepRevision]:
    """Every step branch of the repo with its weights file and sha256, duplicates flagged: one refs call and one
    (root, non-recursive) tree call per branch; no file is downloaded."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token or None)
    refs = api.list_repo_refs(repo_id)
    revisions = step_revisions(((b.name, b.target_commit) for b in refs.branches), tokens_per_step)
    listed = []
    for r in revisions:
        entries = api.list_repo_tree(repo_id, revision=r.commit)
        tree = [
            {
                "type": "file",
                "path": e.path,
                "size": e.size,
                "lfs": {"oid": e.lfs.sha256} if e.lfs is not None else None,
            }
            for e in entries
            if isinstance(e, RepoFile)
        ]
        listed.append(with_weights(r, tree))
    return flag_duplicates(listed)
