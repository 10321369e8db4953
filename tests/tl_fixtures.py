"""A TransformerLens-format repo on the fake Hub, laid out as Neel Nanda's: tiny HookedTransformers (the
reference implementation, a test-only dependency) saved as the published checkpoints are, and a small BPE
tokenizer in a tokenizer repo. conftest re-exports the `tl_repo` fixture."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fake_hub import FakeHub

REPO = "someone/Attn_Only_2L_tiny"
TOKENIZER_REPO = "test/tiny-bpe"
TOKENS = [0, 2_000, 20_000, 200_000, 2_000_000, 20_000_000]


def tiny_tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as GPT-NeoX's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<|endoftext|>", "<unk>"])
    tok.train_from_iterator(["def induction(head): return head.copy()"] * 50 + ["the cat sat on the mat"] * 50, trainer)
    return tok.to_str().encode()


def pth(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture
def tl_repo(fake_hub: FakeHub) -> dict[int, torch.nn.Module]:
    """A repo laid out as Neel Nanda's: config.json, checkpoints/tokens_{N:012d}.pth, optimizer states beside them."""
    # Imported here: conftest loads this module for every test session, transformer-lens only tests that use it.
    from test_tl_format import hooked_transformer, tl_config

    config = tl_config("standard")
    models = {n: hooked_transformer(config, seed=i) for i, n in enumerate(TOKENS)}
    files = {"config.json": json.dumps(config).encode(), "model_final.pth": pth(models[TOKENS[-1]].state_dict())}
    for n, model in models.items():
        files[f"checkpoints/tokens_{n:012d}.pth"] = pth(model.state_dict())
        files[f"checkpoints/optimizer_{n:012d}.pth"] = pth({"state": {}})  # never to be fetched
    fake_hub.add_repo(REPO, files)
    fake_hub.add_repo(TOKENIZER_REPO, {"tokenizer.json": tiny_tokenizer_json()})
    return models
