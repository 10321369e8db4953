"""transformers' GPT-NeoX checkpoints (EleutherAI's Pythia) as our gpt-neox models.

A Pythia revision holds `model.safetensors` or `pytorch_model.bin` (../shared/notes/hub-models.md §4): the first is
read with safetensors, the second with torch.load(weights_only=True) only (tl_format.load_pth: tensors and
containers, no code runs). Either way every tensor's name and shape is checked against the config first, as the
TransformerLens `.pth` files are, so a mismatched file is one clear CheckpointError, not a half-loaded model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from icl_core.errors import CheckpointError
from icl_core.model.config import ModelConfig
from icl_core.model.neox import NeoXTransformer, state_dict_from_hf
from icl_core.model.tl_format import check_layout, load_pth

# Buffers older checkpoints carry (the causal mask, masked_bias, the rotary frequencies): recomputed, never read,
# as transformers' own loader ignores them (modeling_gpt_neox.py's _keys_to_ignore_on_load_unexpected).
_BUFFERS = re.compile(
    r"^gpt_neox\.(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq)$"
)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """transformers 4.x's GPTNeoXForCausalLM parameter names and shapes (the unembedding named embed_out)."""
    d, m = cfg.d_model, cfg.d_mlp
    out: dict[str, tuple[int, ...]] = {
        "gpt_neox.embed_in.weight": (cfg.d_vocab, d),
        "gpt_neox.final_layer_norm.weight": (d,),
        "gpt_neox.final_layer_norm.bias": (d,),
        "embed_out.weight": (cfg.d_vocab, d),
    }
    for i in range(cfg.n_layers):
        p = f"gpt_neox.layers.{i}."
        for ln in ("input_layernorm", "post_attention_layernorm"):
            out |= {f"{p}{ln}.weight": (d,), f"{p}{ln}.bias": (d,)}
        out |= {f"{p}attention.query_key_value.weight": (3 * d, d), f"{p}attention.query_key_value.bias": (3 * d,)}
        out |= {f"{p}attention.dense.weight": (d, d), f"{p}attention.dense.bias": (d,)}
        out |= {f"{p}mlp.dense_h_to_4h.weight": (m, d), f"{p}mlp.dense_h_to_4h.bias": (m,)}
        out |= {f"{p}mlp.dense_4h_to_h.weight": (d, m), f"{p}mlp.dense_4h_to_h.bias": (d,)}
    return out


def read_weights(path: Path, where: str) -> dict[str, torch.Tensor]:
    """A revision's weights file as a flat dict of tensors (safetensors, or a pickle read with weights_only)."""
    if path.name.endswith(".safetensors"):
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(where, f"not a readable safetensors file ({exc})") from exc
    return load_pth(path, where)


def checked(state: dict[str, torch.Tensor], cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """The state dict with the buffers dropped and lm_head (transformers 5's name) called embed_out, every name
    and shape checked against the config."""
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in state.items() if not _BUFFERS.match(k)}
    check_layout(state, expected_shapes(cfg), where)
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(where, f"{name} contains NaN or infinite values")
    return state


def model_from_file(path: Path, cfg: ModelConfig, where: str) -> NeoXTransformer:
    """One revision's weights file as our model (fp32)."""
    model = NeoXTransformer(cfg)
    model.load_state_dict(state_dict_from_hf(checked(read_weights(path, where), cfg, where), cfg), strict=True)
    return model.eval()
