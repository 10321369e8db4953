"""Which class runs a model config, and which reader a published file of it: one place for every family."""

from __future__ import annotations

from pathlib import Path

from icl_core.model import hf_format
from icl_core.model.config import ModelConfig
from icl_core.model.neox import NeoXTransformer
from icl_core.model.tl_format import convert_state_dict, load_pth
from icl_core.model.transformer import AttnOnlyTransformer

# Every family has the same hook point names (blocks.{l}.hook_pattern, blocks.{l}.hook_result, hook_resid.{l}),
# the attention weights on blocks.{l} (W_Q, W_K, W_V, W_O as (head, ...)), forward, logits_at, unembed and a
# tokenizer; only the attention-only family has W_pos and exact weight-only circuits.
Model = AttnOnlyTransformer | NeoXTransformer


def build_model(cfg: ModelConfig) -> Model:
    """A freshly initialised model of the config's family."""
    return NeoXTransformer(cfg) if cfg.family == "gpt-neox" else AttnOnlyTransformer(cfg)


def read_published(path: Path, cfg: ModelConfig, where: str) -> Model:
    """A published checkpoint file as our model, every tensor's name and shape checked first: transformers'
    GPT-NeoX files (hf_format) or a TransformerLens `.pth` (tl_format). `where` names the file in errors."""
    if cfg.has_mlps:
        return hf_format.model_from_file(path, cfg, where)
    model = AttnOnlyTransformer(cfg)
    model.load_state_dict(convert_state_dict(load_pth(path, where), cfg, where))
    return model
