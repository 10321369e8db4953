"""A fake repo laid out as EleutherAI's Pythia repos: 154 step branches plus `main`, weights written by transformers'
own save_pretrained, config.json in the Hub's 4.x form, a BPE tokenizer.json on main, and two step branches serving
`main`'s weights file byte for byte (the fault of EleutherAI/pythia issues #195, #205, #206)."""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from tl_fixtures import tiny_tokenizer_json

from icl_core.storage import step_revisions as sr

PYTHIA_REPO = "EleutherAI/pythia-tiny"  # the window of EleutherAI/pythia-* applies (published.py)
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
    "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 128,
}  # fmt: skip
DUPLICATED = ("step3000", "step99000")  # serve main's (step143000's) weights


def pythia_model(step: int):  # -> GPTNeoXForCausalLM: the weights the fake repo serves for that step
    import transformers

    torch.manual_seed(step)
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**TINY))


def _saved(step: int, tmp: Path) -> dict[str, bytes]:
    """model.safetensors as transformers' own save_pretrained writes it (v5.25 saves the unembedding under its 4.x
    name, embed_out), in fp16 as Pythia's are; config.json in the Hub's 4.x form (TINY: v5 would write its own)."""
    out = tmp / f"step{step}"
    pythia_model(step).half().save_pretrained(out)
    return {"model.safetensors": (out / "model.safetensors").read_bytes(), "config.json": json.dumps(TINY).encode()}


def _pickled(step: int) -> bytes:
    """pytorch_model.bin as transformers 4.x wrote it (torch.save of the state dict, embed_out named so)."""
    model = pythia_model(step).half()
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def pythia_branches() -> dict[str, dict[str, bytes]]:
    """Every branch's files (built once a session: 155 save_pretrained calls)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        final = _saved(143_000, Path(tmp))
        branches = {}
        for step in sr.pythia_steps():
            files = final if f"step{step}" in DUPLICATED else _saved(step, Path(tmp))
            if step == 2:  # an early branch with only the pickle, as many of Pythia's step branches are
                files = {"config.json": files["config.json"], "pytorch_model.bin": _pickled(step)}
            if step == 4:  # and one with both
                files = {**files, "pytorch_model.bin": _pickled(step)}
            branches[f"step{step}"] = {".gitattributes": GITATTRIBUTES, **files}
    # The tokenizer on main (a ByteLevel BPE with <|endoftext|>, as GPT-NeoX's; 120 tokens, under TINY's 128 rows).
    branches["main"] = {".gitattributes": GITATTRIBUTES, **final, "tokenizer.json": tiny_tokenizer_json(120)}
    return branches


@pytest.fixture
def pythia_like(fake_hub: FakeHub) -> str:
    pytest.importorskip("transformers")
    for branch, files in pythia_branches().items():
        fake_hub.add_repo(PYTHIA_REPO, files, branch=branch)
    return PYTHIA_REPO
