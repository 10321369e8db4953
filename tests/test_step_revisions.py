"""Branch-per-step checkpoints (icl_core.storage.step_revisions) listed from a fake repo laid out as EleutherAI's
Pythia repos (tests/pythia_fixtures.py)."""

from __future__ import annotations

import hashlib

import pytest
from fake_hub import FakeHub

from icl_core.storage import step_revisions as sr
from icl_core.storage.published import PYTHIA_TOKENS_PER_STEP

transformers = pytest.importorskip("transformers")


def test_the_published_steps_are_pythias_154() -> None:
    steps = sr.pythia_steps()
    assert len(steps) == 154 and steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143_000 and all(b - a == 1000 for a, b in zip(steps[11:], steps[12:], strict=False))


def test_every_step_branch_is_listed_with_its_tokens_and_weights_without_a_download(
    fake_hub: FakeHub, pythia_like: str
) -> None:
    revisions = sr.list_step_revisions(pythia_like, PYTHIA_TOKENS_PER_STEP, fake_hub.url)
    assert [r.step for r in revisions] == sr.pythia_steps()  # main is not a step branch
    assert all(r.tokens_seen == r.step * 2_097_152 for r in revisions)
    by_branch = {r.branch: r for r in revisions}
    assert by_branch["step2"].weights_file == "pytorch_model.bin"
    assert by_branch["step4"].weights_file == "model.safetensors"  # preferred where the branch has both
    safetensors = fake_hub.files(pythia_like, "step1000")["model.safetensors"]
    assert by_branch["step1000"].sha256 == hashlib.sha256(safetensors).hexdigest()
    assert by_branch["step1000"].size == len(safetensors)
    assert not any("/resolve/" in path for _, path in fake_hub.requests)  # nothing fetched


def test_branches_serving_anothers_weights_are_flagged(fake_hub: FakeHub, pythia_like: str) -> None:
    revisions = sr.list_step_revisions(pythia_like, PYTHIA_TOKENS_PER_STEP, fake_hub.url)
    flagged = {r.branch: r.duplicate_of for r in revisions if r.flagged}
    assert flagged == {"step3000": "step143000", "step99000": "step143000"}


def test_a_file_outside_lfs_is_never_called_a_duplicate() -> None:
    a = sr.StepRevision("step1", 1, "c1", 1, "model.safetensors", 10, None)
    b = sr.StepRevision("step2", 2, "c2", 2, "model.safetensors", 10, None)
    assert not any(r.flagged for r in sr.flag_duplicates([a, b]))
