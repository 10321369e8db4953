"""GPT-NeoX blocks (icl_core.model.neox) against transformers' GPTNeoXForCausalLM, the test-only reference: the same
logits to 1e-4 in fp32 and the same attention patterns, on configs with Pythia's keys and small shapes."""

from __future__ import annotations

import pytest
import torch

from icl_core.model import neox

transformers = pytest.importorskip("transformers")

# Pythia's config.json keys as transformers 4.x wrote them (EleutherAI/pythia-70m on the Hub: top-level rotary_pct
# and rotary_emb_base; see ../shared/notes/hub-models.md §4), with small shapes. transformers 5 reads these keys
# (configuration_gpt_neox.py, convert_rope_params_to_dict pops rotary_pct and rotary_emb_base).
PYTHIA_STYLE = {
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 128,
    "model_type": "gpt_neox",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 96,
}


def _reference(config: dict, seed: int = 0):  # -> GPTNeoXForCausalLM
    torch.manual_seed(seed)
    hf_config = transformers.GPTNeoXConfig(**config)
    hf_config._attn_implementation = "eager"  # output_attentions needs the eager path
    model = transformers.GPTNeoXForCausalLM(hf_config).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0) and biases at 0: randomise them so a mix-up shows
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
            else:  # std 0.02 leaves logits near 0, where a wrong layout hides under 1e-4: make them O(1)
                p.mul_(8)
    return model


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"rotary_pct": 1.0},
        {"use_parallel_residual": False},
        {"rotary_pct": 1.0, "use_parallel_residual": False},
    ],
    ids=["pythia", "full-rotary", "sequential", "full-rotary-sequential"],
)
def test_logits_and_patterns_equal_transformers(changes: dict) -> None:
    config = {**PYTHIA_STYLE, **changes}
    reference = _reference(config)
    ours = neox.from_hf(reference.state_dict(), config)
    tokens = torch.randint(0, config["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = reference(tokens, output_attentions=True)
        logits, cache = ours.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))
    assert torch.allclose(logits, theirs.logits, atol=1e-4), (logits - theirs.logits).abs().max()
    positions = torch.tensor([3, 39])
    assert torch.allclose(ours.logits_at(tokens, positions), theirs.logits[:, positions], atol=1e-4)
    assert len(theirs.attentions) == config["num_hidden_layers"]
    for layer, pattern in enumerate(theirs.attentions):
        assert torch.allclose(cache[f"blocks.{layer}.hook_pattern"], pattern, atol=1e-5)


def test_the_rotary_settings_are_read_from_either_transformers_version() -> None:
    four = neox.config_from_hf(PYTHIA_STYLE, "tok")
    assert four.rotary_dim == 4 and four.rotary_base == 10_000  # 25% of 16 dims per head
    # transformers 5 re-saves them under rope_parameters (configuration_gpt_neox.py)
    saved = transformers.GPTNeoXConfig(**PYTHIA_STYLE).to_dict()
    assert "rotary_pct" not in saved and saved["rope_parameters"]["partial_rotary_factor"] == 0.25
    assert neox.config_from_hf(saved, "tok") == four
    with pytest.raises(ValueError, match="GPT-NeoX"):
        neox.config_from_hf({**PYTHIA_STYLE, "model_type": "gpt2"}, "tok")


def test_a_state_dict_with_a_wrong_shape_or_a_missing_tensor_is_refused() -> None:
    reference = _reference(PYTHIA_STYLE)
    state = dict(reference.state_dict())
    del state["gpt_neox.layers.1.mlp.dense_4h_to_h.bias"]
    with pytest.raises(KeyError, match="dense_4h_to_h"):
        neox.from_hf(state, PYTHIA_STYLE)
    # As the Hub's files name the unembedding (transformers 4.x: embed_out), one column short.
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in reference.state_dict().items()}
    assert torch.equal(neox.from_hf(state, PYTHIA_STYLE).W_U, reference.state_dict()["lm_head.weight"].T)
    state["embed_out.weight"] = state["embed_out.weight"][:, :-1]
    with pytest.raises(RuntimeError, match="size mismatch"):
        neox.from_hf(state, PYTHIA_STYLE)


def test_every_head_writes_its_own_result_and_the_mlp_its_output() -> None:
    model = neox.from_hf(_reference(PYTHIA_STYLE).state_dict(), PYTHIA_STYLE)
    tokens = torch.randint(0, 96, (1, 20), generator=torch.Generator().manual_seed(2))
    _, cache = model.run_with_cache(tokens)
    block = model.blocks[0]
    result = cache["blocks.0.hook_result"]
    assert result.shape == (1, 20, 4, 64)
    assert torch.allclose(result.sum(dim=2) + block.b_O, cache["blocks.0.hook_attn_out"], atol=1e-5)
    assert cache["blocks.0.hook_mlp_out"].shape == (1, 20, 64)
