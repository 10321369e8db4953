"""Branch-per-step checkpoints (icl_core.storage.step_revisions) listed from a fake repo laid out as EleutherAI's
Pythia repos: 154 step branches plus `main`, weights written by transformers' own save_pretrained, two step branches
serving `main`'s weights file byte for byte (the fault of EleutherAI/pythia issues #195, #205, #206)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub

from icl_core.storage import step_revisions as sr

transformers = pytest.importorskip("transformers")

# Four LFS lines of the Hub's default .gitattributes for a new model repo (the template repos commit unchanged,
# `*.bin` ... `*.safetensors filter=lfs diff=lfs merge=lfs -text`); EleutherAI/pythia-14m's own file was not read
# here. Weights files would go to LFS without it too (binary: huggingface_hub's preupload sample has NUL bytes),
# and LFS storage is what gives the tree listing their sha256.
GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
"""
# Pythia's config.json keys (transformers 4.x), tiny shapes: see tests/test_neox.py.
TINY = {
    "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
    "hidden_size": 16, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 64, "model_type": "gpt_neox", "num_attention_heads": 2, "num_hidden_layers": 1,
    "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 32,
}  # fmt: skip
DUPLICATED = ("step3000", "step99000")  # serve main's (step143000's) weights


def _model(step: int):  # -> GPTNeoXForCausalLM
    torch.manual_seed(step)
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**TINY))


def _saved(step: int, tmp: Path) -> dict[str, bytes]:
    out = tmp / f"step{step}"
    _model(step).save_pretrained(out)  # transformers' own files: config.json, model.safetensors (4.x names)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def _pickled(step: int) -> bytes:
    """pytorch_model.bin as transformers 4.x wrote it (torch.save of the state dict, embed_out named so)."""
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in _model(step).state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture
def pythia_like(fake_hub: FakeHub, tmp_path: Path) -> str:
    repo_id = "EleutherAI/pythia-tiny"
    final = _saved(143_000, tmp_path)
    for step in sr.pythia_steps():
        files = final if f"step{step}" in DUPLICATED else _saved(step, tmp_path)
        if step == 2:  # an early branch with only the pickle, as many of Pythia's step branches are
            files = {"config.json": files["config.json"], "pytorch_model.bin": _pickled(step)}
        if step == 4:  # and one with both
            files = {**files, "pytorch_model.bin": _pickled(step)}
        fake_hub.add_repo(repo_id, {".gitattributes": GITATTRIBUTES, **files}, branch=f"step{step}")
    fake_hub.add_repo(repo_id, {".gitattributes": GITATTRIBUTES, **final}, branch="main")
    return repo_id


def test_the_published_steps_are_pythias_154() -> None:
    steps = sr.pythia_steps()
    assert len(steps) == 154 and steps[:12] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]
    assert steps[-1] == 143_000 and all(b - a == 1000 for a, b in zip(steps[11:], steps[12:], strict=False))


def test_every_step_branch_is_listed_with_its_tokens_and_weights_without_a_download(
    fake_hub: FakeHub, pythia_like: str
) -> None:
    revisions = sr.list_step_revisions(pythia_like, sr.PYTHIA_TOKENS_PER_STEP, fake_hub.url)
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
    revisions = sr.list_step_revisions(pythia_like, sr.PYTHIA_TOKENS_PER_STEP, fake_hub.url)
    flagged = {r.branch: r.duplicate_of for r in revisions if r.flagged}
    assert flagged == {"step3000": "step143000", "step99000": "step143000"}


def test_a_file_outside_lfs_is_never_called_a_duplicate() -> None:
    a = sr.StepRevision("step1", 1, "c1", 1, "model.safetensors", 10, None)
    b = sr.StepRevision("step2", 2, "c2", 2, "model.safetensors", 10, None)
    assert not any(r.flagged for r in sr.flag_duplicates([a, b]))
