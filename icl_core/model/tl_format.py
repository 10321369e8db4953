"""TransformerLens-format attention-only checkpoints (the field's published training runs) as our models.

Neel Nanda's `NeelNanda/Attn_Only_*L512W_C4_Code` and Hoogland et al.'s `timaeus/L*W256-3m-rr` store flat
TransformerLens state dicts in `.pth` files beside a `config.json` (formats: ../shared/notes/hub-models.md).
Here: their config read into a ModelConfig, a `.pth` read without unpickling anything but tensors, and the
state dict checked name by name and shape by shape, then renamed to AttnOnlyTransformer's names.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from icl_core.errors import CheckpointError
from icl_core.model.config import ModelConfig, model_config_from_dict

# config.json keys TransformerLens reads for these models, and keys that change nothing for attention-only ones.
_CONFIG_KEYS = {
    "d_model", "n_layers", "d_head", "n_heads", "n_ctx", "d_vocab", "tokenizer_name", "attn_only",
    "normalization", "normalization_type", "shortformer_pos", "positional_embedding_type", "final_rms",
    "d_mlp", "act_fn", "model_name", "original_architecture", "n_params", "d_vocab_out", "init_range",
    "seed", "use_attn_result", "use_split_qkv_input", "use_local_attn", "device", "dtype",
    "default_prepend_bos", "eps", "attn_types", "window_size", "parallel_attn_mlp", "positional",
}  # fmt: skip
# Buffers TransformerLens keeps in its state dicts: recomputed here, never read.
_IGNORED = re.compile(r"^blocks\.\d+\.attn\.(mask|IGNORE)$")
_RENAME = [
    (re.compile(r"^embed\.W_E$"), "W_E"),
    (re.compile(r"^pos_embed\.W_pos$"), "W_pos"),
    (re.compile(r"^blocks\.(\d+)\.ln1\.([wb])$"), r"blocks.\1.ln1.\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.(W_[QKVO]|b_[QKVO])$"), r"blocks.\1.\2"),
    (re.compile(r"^ln_final\.([wb])$"), r"ln_final.\1"),
    (re.compile(r"^unembed\.W_U$"), "W_U"),
    (re.compile(r"^unembed\.b_U$"), "b_U"),
]


def model_config_from_tl(config: Mapping[str, Any], where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a TransformerLens attention-only model's config.json; refuses what we cannot run."""
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        raise CheckpointError(where, f"unknown config field(s) {', '.join(unknown)}: not a format this app reads")
    if not config.get("attn_only", False):
        raise CheckpointError(where, "not an attention-only model (attn_only is not true): it has MLPs")
    if config.get("final_rms"):
        raise CheckpointError(where, "final_rms models (RMSNorm) are not supported")
    norm = config.get("normalization_type", config.get("normalization"))
    if norm not in (None, "LN"):
        raise CheckpointError(where, f"normalization {norm!r} is not supported (LN or none)")
    shortformer = bool(config.get("shortformer_pos")) or config.get("positional_embedding_type") == "shortformer"
    try:
        return model_config_from_dict(
            {
                "n_layers": config["n_layers"],
                "n_heads": config["n_heads"],
                "d_model": config["d_model"],
                "d_head": config["d_head"],
                "n_ctx": config["n_ctx"],
                "d_vocab": config["d_vocab"],
                "positional": "shortformer" if shortformer else "learned",
                "normalization": "LN" if norm == "LN" else "none",
                "biases": True,
                "tokenizer": config.get("tokenizer_name") or "",
            },
            where,
        )
    except KeyError as exc:
        raise CheckpointError(where, f"missing config field {exc.args[0]!r}") from exc


def load_pth(path: Path, where: str | None = None) -> dict[str, torch.Tensor]:
    """A `.pth` state dict read with weights_only=True (tensors and containers only: no code runs), checked flat.

    where: the name errors give the file (its repo path; the cache's blob name means nothing to a person).
    """
    where = where or str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(where, f"not a plain tensor checkpoint; refused without running it ({exc})") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(where, f"expected a flat dict of tensors, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(where, f"expected a flat dict of tensors; {bad[0]!r} is {type(obj[bad[0]]).__name__}")
    return dict(obj)


def load_checkpoint(path: Path, where: str | None = None) -> dict[str, torch.Tensor]:
    """A published checkpoint as a flat dict of tensors: `.safetensors` (no pickle at all) or `.pth` (load_pth);
    the suffix is read from `where` (the repo path) when given, since a cache file's name may differ."""
    where = where or str(path)
    if str(where).endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(where, f"not a readable safetensors file ({exc})") from exc
    return load_pth(path, where)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """TransformerLens state-dict names and shapes of an attention-only model (b_U optional)."""
    h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
    out: dict[str, tuple[int, ...]] = {"embed.W_E": (cfg.d_vocab, d), "pos_embed.W_pos": (cfg.n_ctx, d)}
    for i in range(cfg.n_layers):
        if cfg.normalization == "LN":
            out |= {f"blocks.{i}.ln1.w": (d,), f"blocks.{i}.ln1.b": (d,)}
        out |= {f"blocks.{i}.attn.W_{x}": (h, d, dh) for x in "QKV"}
        out |= {f"blocks.{i}.attn.b_{x}": (h, dh) for x in "QKV"}
        out |= {f"blocks.{i}.attn.W_O": (h, dh, d), f"blocks.{i}.attn.b_O": (d,)}
    if cfg.normalization == "LN":
        out |= {"ln_final.w": (d,), "ln_final.b": (d,)}
    out["unembed.W_U"] = (d, cfg.d_vocab)
    return out


def convert_state_dict(
    state: Mapping[str, torch.Tensor], cfg: ModelConfig, where: Path | str
) -> dict[str, torch.Tensor]:
    """TransformerLens names -> AttnOnlyTransformer names, every tensor's name and shape checked first."""
    state = {
        k.removeprefix("_orig_mod."): v for k, v in state.items() if not _IGNORED.match(k.removeprefix("_orig_mod."))
    }
    expected = expected_shapes(cfg)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - {"unembed.b_U"})
    if missing or unexpected:
        raise CheckpointError(
            where,
            f"weights do not match the config: missing {missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'}",
        )
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(where, f"{name} has shape {tuple(state[name].shape)}, the config needs {shape}")
    if "unembed.b_U" in state and tuple(state["unembed.b_U"].shape) != (cfg.d_vocab,):
        raise CheckpointError(
            where, f"unembed.b_U has shape {tuple(state['unembed.b_U'].shape)}, needs ({cfg.d_vocab},)"
        )
    out = {}
    for name, tensor in state.items():
        for pattern, repl in _RENAME:
            if pattern.match(name):
                out[pattern.sub(repl, name)] = tensor.detach().float().contiguous()
                break
    out.setdefault("b_U", torch.zeros(cfg.d_vocab))  # Neel Nanda's checkpoints have none: zeros, as TL does
    return out
