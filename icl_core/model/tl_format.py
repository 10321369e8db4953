"""TransformerLens-format attention-only checkpoints (the field's published training runs) as our models.

Neel Nanda's `NeelNanda/Attn_Only_*L512W_C4_Code` and Hoogland et al.'s `timaeus/L*W256-3m-rr` store flat
TransformerLens state dicts in `.pth` files (formats: ../shared/notes/hub-models.md; which config each has:
storage/published.py). Here: a TransformerLens config read into a ModelConfig, a `.pth` read without unpickling
anything but tensors, and the state dict checked name by name and shape by shape, then renamed to
AttnOnlyTransformer's names.
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

# TransformerLens options that change the forward pass in ways AttnOnlyTransformer does not implement: a config
# that sets one is refused by name rather than run wrongly. Every other key (a training script's settings: lr,
# batch sizes, seeds, ...) is ignored, as TransformerLens's convert_neel_model_config ignores it.
_UNSUPPORTED_FLAGS = ("final_rms", "parallel_attn_mlp", "use_local_attn", "gated_mlp", "attn_scores_soft_cap")
_POSITIONALS = {"standard": "learned", "shortformer": "shortformer"}
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
    """Our ModelConfig for a TransformerLens-format attention-only model's config, read as TransformerLens's
    `convert_neel_model_config` (transformer_lens/loading_from_pretrained.py) reads it: the model's fields only,
    every other key ignored. Refuses, with the reason, what we cannot run (MLPs, RMSNorm, rotary, ...)."""
    if config.get("attn_only") is not True:
        raise CheckpointError(where, "not an attention-only model (attn_only is not true): it has MLPs")
    for flag in _UNSUPPORTED_FLAGS:
        if config.get(flag):
            raise CheckpointError(where, f"{flag} is set: a TransformerLens option this app does not implement")
    norm = config["normalization"] if "normalization" in config else config.get("normalization_type")
    if norm not in (None, "LN"):
        raise CheckpointError(where, f"normalization {norm!r} is not supported (LN or none)")
    if "shortformer_pos" in config:
        positional = "shortformer" if config["shortformer_pos"] else "standard"
    else:
        positional = config.get("positional_embedding_type", "standard")
    if positional not in _POSITIONALS:
        raise CheckpointError(where, f"positional embedding {positional!r} is not supported (standard or shortformer)")
    d_vocab_out = config.get("d_vocab_out", -1)
    if d_vocab_out not in (-1, None, config.get("d_vocab")):
        raise CheckpointError(where, f"d_vocab_out {d_vocab_out} differs from d_vocab: not supported")
    try:
        return model_config_from_dict(
            {
                "n_layers": config["n_layers"],
                "n_heads": config["n_heads"],
                "d_model": config["d_model"],
                "d_head": config["d_head"],
                "n_ctx": config["n_ctx"],
                "d_vocab": config["d_vocab"],
                "positional": _POSITIONALS[positional],
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


def check_layout(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    where: Path | str,
    optional: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """CheckpointError unless every expected name is there with its shape and nothing else is, but the optional
    names (whose shapes are checked where present)."""
    optional = optional or {}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - set(optional))
    if missing or unexpected:
        raise CheckpointError(
            where,
            f"weights do not match the config: missing {missing[:5] or 'none'}, unexpected {unexpected[:5] or 'none'}",
        )
    for name, shape in {**expected, **{k: v for k, v in optional.items() if k in state}}.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(where, f"{name} has shape {tuple(state[name].shape)}, the config needs {shape}")


def convert_state_dict(
    state: Mapping[str, torch.Tensor], cfg: ModelConfig, where: Path | str
) -> dict[str, torch.Tensor]:
    """TransformerLens names -> AttnOnlyTransformer names, every tensor's name and shape checked first."""
    state = {
        k.removeprefix("_orig_mod."): v for k, v in state.items() if not _IGNORED.match(k.removeprefix("_orig_mod."))
    }
    check_layout(state, expected_shapes(cfg), where, optional={"unembed.b_U": (cfg.d_vocab,)})
    out = {}
    for name, tensor in state.items():
        for pattern, repl in _RENAME:
            if pattern.match(name):
                out[pattern.sub(repl, name)] = tensor.detach().float().contiguous()
                break
    out.setdefault("b_U", torch.zeros(cfg.d_vocab))  # Neel Nanda's checkpoints have none: zeros, as TL does
    return out
