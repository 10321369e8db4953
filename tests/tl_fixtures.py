"""The field's published runs on the fake Hub, laid out file for file as their authors' code writes them.

Every fact below cites the code it comes from (read with the search tool; summary in ../shared/notes/hub-models.md):

Neel Nanda's attention-only runs (`NeelNanda/Attn_Only_{1..4}L512W_C4_Code`), written by neelnanda-io/solu_project
`solu/training/train_model_ddp.py`:
- `config.json` is `json.dump(cfg)` of the whole training settings: DEFAULT_CFG's keys plus those create_cfg derives
  (version, tokens_per_step, max_steps, warmup_steps, n_params); the published attention-only repos also carry
  `batch_size` (it is among the keys the real config showed our old importer, issue 23).
- `model_init.pth` at the root (the weights before the first step), `checkpoints/tokens_{total_tokens:0>12}.pth`
  where total_tokens grows by tokens_per_step each step (so the first label is one step's tokens, not 0),
  `model_final.pth`, and `optimizer_state_dict.pth` / `scheduler_state_dict.pth` at the root.
- Each `.pth` is `torch.save(model.state_dict())`: a flat dict in TransformerLens's names (TransformerLens loads it
  as it is, transformer_lens/loading_from_pretrained.py get_pretrained_state_dict), with the attention `mask` and
  `IGNORE` buffers and no `unembed.b_U`.
Hoogland et al.'s runs (`timaeus/L{n}W256-3m-rr`), loaded by georgeyw/lang `src/lang/timaeus/tetrahedron.py`:
- no `config.json`: the loader hard-codes MODEL_CFG (2 layers, 256 wide, 8 heads of 32, context 1024, vocabulary
  5000, LN, attention-only, shortformer) and loads `checkpoints/checkpoint_{step:0>7d}.pth` with a strict
  `load_state_dict` into that HookedTransformer: every key of its state dict, `unembed.b_U` included.
- `losses.txt` and `.gitattributes` beside them. Steps: log- and linearly spaced up to 49,999
  (timaeus-research/icl sweeps/language/training-runs/tetrahedron-3m.yaml: checkpoint_steps log_space 100,
  linear_space 2000; num_steps 50,000); the fake holds a few of them.

The weights are random (tiny for Neel's layout, the real shapes for timaeus'), rounded to fp16 values: the import
keeps fp16, so with fp16-exact weights the comparison with TransformerLens tests the format, not the rounding
(whose effect test_tl_hub measures on its own).
"""

from __future__ import annotations

import io
import json

import pytest
import torch
from fake_hub import FakeHub

REPO = "someone/Attn_Only_2L_tiny"  # Neel Nanda's layout and config keys, a tiny model
TOKENIZER_REPO = "test/tiny-bpe"
TOKENS_PER_STEP = 262_144  # 32 sequences per device x 1024 tokens x 8 devices: the first label of the real repos
TOKENS = [0, *(TOKENS_PER_STEP * k for k in (1, 10, 100, 1_000, 10_000))]  # 0: model_init.pth
TIMAEUS_REPO = "timaeus/L2W256-3m-rr"
TIMAEUS_TOKENIZER_REPO = "georgeyw/TinyStories-tokenizer-5k"
TIMAEUS_STEPS = [0, 100, 9_000, 17_000, 49_999]
TIMAEUS_TOKENS_PER_STEP = 102_400


def neel_config(**model: object) -> dict:
    """config.json as train_model_ddp.py writes it: DEFAULT_CFG, the fields create_cfg derives, `model` over them."""
    cfg = {
        "n_layers": 2, "d_model": 512, "d_mlp": 2048, "d_head": 64, "n_heads": 8, "lr_hidden": 2e-3,
        "lr_vector": 1.5e-3, "batch_size_per_device": 32, "batches_per_step": 1, "seed": 12345,
        "save_checkpoints": True, "debug": False, "debug_batch": False, "normalization": "LN",
        "max_tokens": 30 * 10**9, "version": 18, "use_bfloat16_matmul": True, "n_ctx": 1024, "d_vocab": 48262,
        "tokenizer_name": "NeelNanda/gpt-neox-tokenizer-digits", "betas": [0.9, 0.99], "weight_decay": 0.05,
        "dataset_name": "c4+code", "grad_norm_clip": 1.0, "n_devices": 8, "act_fn": "solu_ln",
        "shortformer_pos": False, "attn_only": True, "ln_eps": 1e-5, "lr_schedule": "cosine_warmup",
        "warmup_tokens": 3 * 10**8, "train_loss_ewma_beta": 0.99, "truncate_tokens": 25 * 10**8, "log_interval": 50,
        "initializer_scale_global": 1.0, "initializer_scale_hidden": 0.02, "initializer_scale_embed": 0.1,
        "initializer_scale_unembed": 0.02, "neuron_scale": 0.5, "neuron_temp": 2.0, "use_acc": False,
        "weight_init_scheme": "mup", "fixed_init": "", "store_init": False, "control": 1.0, "batch_size": 256,
    }  # fmt: skip
    cfg.update(model)
    cfg["tokens_per_step"] = cfg["batch_size_per_device"] * cfg["n_ctx"] * cfg["batches_per_step"] * cfg["n_devices"]
    cfg["max_steps"] = cfg["max_tokens"] // cfg["tokens_per_step"]
    cfg["warmup_steps"] = cfg["warmup_tokens"] // cfg["tokens_per_step"]
    cfg["n_params"] = 3 * cfg["n_layers"] * cfg["d_model"] ** 2  # attention-only, as create_cfg counts them
    return cfg


def tiny_neel_config(positional: str = "standard", normalization: str | None = "LN") -> dict:
    return neel_config(
        n_layers=2, d_model=32, d_mlp=128, d_head=8, n_heads=4, d_vocab=120, tokenizer_name=TOKENIZER_REPO,
        normalization=normalization, shortformer_pos=positional == "shortformer",
    )  # fmt: skip


def reference_model(config: dict, seed: int = 0, repo: str = "NeelNanda/Attn_Only_2L512W_C4_Code"):
    """A HookedTransformer built as TransformerLens builds a Neel Nanda model: its own convert_neel_model_config
    reads the config.json (its download replaced by `config`), the weights random and fp16-exact."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading

    real_download = loading.utils.download_file_from_hf
    loading.utils.download_file_from_hf = lambda *args, **kwargs: config
    try:
        cfg_dict = loading.convert_neel_model_config(repo)
    finally:
        loading.utils.download_file_from_hf = real_download
    cfg_dict["tokenizer_name"] = None  # HookedTransformer would fetch the tokenizer from the Hub: none here
    return randomized(HookedTransformer(HookedTransformerConfig(**cfg_dict, seed=seed)), seed)


def timaeus_reference_model(seed: int = 0):
    """tetrahedron.py's MODEL_CFG, as its loader builds it (without tokenizer_name: no tokenizer fetch here)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=256, d_head=32, n_heads=8, n_ctx=1024, d_vocab=5000,
        normalization_type="LN", attn_only=True, seed=1,
        positional_embedding_type="shortformer",
    )  # fmt: skip
    return randomized(HookedTransformer(cfg), seed)


def randomized(model, seed: int):
    """Weights, biases and LayerNorms all away from their init (so each one matters), rounded to fp16 values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if "b_" in name or "ln" in name else model.cfg.d_model**-0.5
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if name.endswith(".w") else 0.0))
            p.copy_(p.half().float())
    return model.eval()


def tiny_tokenizer_json(vocab_size: int = 120, texts: list[str] | None = None) -> bytes:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as GPT-NeoX's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<unk>"])
    texts = texts or ["def induction(head): return head.copy()"] * 50 + ["the cat sat on the mat"] * 50
    tok.train_from_iterator(texts, trainer)
    return tok.to_str().encode()


def pth(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def neel_files(models: dict[int, torch.nn.Module], config: dict) -> dict[str, bytes]:
    """A Neel Nanda repo's files: models by tokens seen (0 is model_init.pth)."""
    saved = {n: {k: v for k, v in m.state_dict().items() if k != "unembed.b_U"} for n, m in models.items()}
    files = {
        "config.json": json.dumps(config, indent=2).encode(),
        "model_final.pth": pth(saved[max(saved)]),
        "optimizer_state_dict.pth": pth({"state": {}, "param_groups": []}),  # never to be fetched
        "scheduler_state_dict.pth": pth({"last_epoch": 0}),  # never to be fetched
    }
    for n, state in saved.items():
        files["model_init.pth" if n == 0 else f"checkpoints/tokens_{n:012d}.pth"] = pth(state)
    return files


@pytest.fixture
def tl_repo(fake_hub: FakeHub) -> dict[int, torch.nn.Module]:
    """A tiny model in Neel Nanda's layout; returns the reference HookedTransformer of each checkpoint by tokens."""
    config = tiny_neel_config()
    models = {n: reference_model(config, seed=i) for i, n in enumerate(TOKENS)}
    fake_hub.add_repo(REPO, neel_files(models, config))
    fake_hub.add_repo(TOKENIZER_REPO, {"tokenizer.json": tiny_tokenizer_json()})
    return models


@pytest.fixture(scope="session")
def timaeus_tokenizer_json() -> bytes:
    """A 5,000-token BPE tokenizer standing in for georgeyw/TinyStories-tokenizer-5k (its vocabulary size; the
    real one's merges and start token are not known here: README, 'What is not verified')."""
    from icl_core import stdlib_text

    text = bytes(stdlib_text.corpus("train")[:400_000]).decode("utf-8", errors="replace")
    return tiny_tokenizer_json(5000, [text[i : i + 2000] for i in range(0, len(text), 2000)])


@pytest.fixture
def timaeus_repo(fake_hub: FakeHub, timaeus_tokenizer_json: bytes) -> dict[int, torch.nn.Module]:
    """Hoogland et al.'s layout: no config.json, checkpoints by step; returns the reference model of each step."""
    models = {step: timaeus_reference_model(seed=i) for i, step in enumerate(TIMAEUS_STEPS)}
    files = {f"checkpoints/checkpoint_{step:07d}.pth": pth(m.state_dict()) for step, m in models.items()}
    files["losses.txt"] = "\n".join(f"{step} {5.0 - i * 0.5}" for i, step in enumerate(TIMAEUS_STEPS)).encode()
    files[".gitattributes"] = b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    fake_hub.add_repo(TIMAEUS_REPO, files)
    fake_hub.add_repo(TIMAEUS_TOKENIZER_REPO, {"tokenizer.json": timaeus_tokenizer_json})
    return models


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character map, which a ByteLevel pre-tokenizer applies before the vocabulary lookup."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in visible:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer_json() -> bytes:
    """A tokenizer.json whose ids are the bytes themselves and whose start token is 256: our byte-level runs'
    tokens, in the format TransformerLens-format repos name by tokenizer_name."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: b for b, c in _bytes_to_unicode().items()} | {"<|endoftext|>": 256}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok.to_str().encode()


def as_neel_checkpoint(snap) -> dict[str, torch.Tensor]:
    """One of our shipped snapshots (no LayerNorm, no biases, sinusoidal positions) as Neel Nanda's training code
    would have saved the same model: a HookedTransformer's state dict (normalization None, zero biases, the
    positions as a learned table) without unembed.b_U."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from icl_core.storage.snapshots import load_model

    ours = load_model(snap)
    c = ours.cfg
    tl = HookedTransformer(
        HookedTransformerConfig(
            n_layers=c.n_layers, d_model=c.d_model, d_head=c.d_head, n_heads=c.n_heads, n_ctx=c.n_ctx,
            d_vocab=c.d_vocab, attn_only=True, normalization_type=None, act_fn="relu",
        )
    )  # fmt: skip
    state = {k: torch.zeros_like(v) for k, v in tl.state_dict().items()}
    state |= {k: v for k, v in tl.state_dict().items() if k.endswith((".mask", ".IGNORE"))}
    state["embed.W_E"], state["pos_embed.W_pos"], state["unembed.W_U"] = ours.W_E, ours.W_pos, ours.W_U
    for i, block in enumerate(ours.blocks):
        for x in "QKVO":
            state[f"blocks.{i}.attn.W_{x}"] = getattr(block, f"W_{x}")
    del state["unembed.b_U"]
    return {k: v.detach().clone().float() for k, v in state.items()}
