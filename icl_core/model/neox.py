"""GPT-NeoX blocks (Pythia's architecture), with the same hook points as the attention-only model, so that the
analyses read a model with MLPs the same way (issue 33; not yet wired into runs and pages).

A block: LayerNorm, attention with rotary position embeddings on the first `rotary_dim` dims of each head's
queries and keys (GPT-NeoX's rotate-half layout), a GELU MLP of `d_mlp`, and the two added to the residual
stream either in parallel (both read the same residual: Pythia's `use_parallel_residual`) or one after the
other. The embedding and the unembedding are separate matrices (`embed_out`). The forward pass follows
transformers' `GPTNeoXForCausalLM` (modeling_gpt_neox.py, v5.25), which the tests compare it with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from icl_core.model.config import LN_EPS, ModelConfig
from icl_core.model.hooks import HookedModule, HookPoint, causal_attention
from icl_core.model.tokenizer import TokenizedModel, Tokenizer

PYTHIA_ROTARY_PCT = 0.25  # transformers' default for a config that names none (configuration_gpt_neox.py)
PYTHIA_ROTARY_BASE = 10_000.0


def config_from_hf(config: Mapping[str, Any], tokenizer: str) -> ModelConfig:
    """Our ModelConfig (family gpt-neox) from a `config.json` as the Hub serves it. Pythia's were written by
    transformers 4.x, with top-level `rotary_pct` and `rotary_emb_base`; transformers 5 re-saves them under
    `rope_parameters` (`partial_rotary_factor`, `rope_theta`): both are read. `tokenizer` names the repo whose
    tokenizer.json the model reads. KeyError names a missing key; ValueError what this app does not run."""
    if config.get("model_type", "gpt_neox") != "gpt_neox":
        raise ValueError(f"not a GPT-NeoX config (model_type {config.get('model_type')!r})")
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"only the exact GELU of Pythia is supported, not hidden_act {act!r}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    pct = float(rope.get("partial_rotary_factor", config.get("rotary_pct", PYTHIA_ROTARY_PCT)))
    base = float(rope.get("rope_theta", config.get("rotary_emb_base", PYTHIA_ROTARY_BASE)))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope.get('rope_type')!r} is not supported (Pythia's is the default)")
    if float(config.get("layer_norm_eps", LN_EPS)) != LN_EPS:
        raise ValueError(f"layer_norm_eps {config.get('layer_norm_eps')} is not supported (Pythia's is {LN_EPS})")
    if config.get("attention_bias", True) is not True:
        raise ValueError("attention_bias false is not supported (Pythia's attention has biases)")
    d_model, n_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    return ModelConfig(
        family="gpt-neox",
        n_layers=int(config["num_hidden_layers"]),
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_ctx=int(config["max_position_embeddings"]),
        d_vocab=int(config["vocab_size"]),
        positional="rotary",
        normalization="LN",
        biases=True,
        tokenizer=tokenizer,
        d_mlp=int(config["intermediate_size"]),
        rotary_dim=int(d_model // n_heads * pct),
        rotary_base=base,
        parallel_residual=bool(config.get("use_parallel_residual", True)),
    )


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_cos_sin(cfg: ModelConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, rotary_dim) cosines and sines: frequency base^(-2i/rotary_dim), each repeated for the two halves."""
    inv_freq = 1.0 / (cfg.rotary_base ** (torch.arange(0, cfg.rotary_dim, 2, dtype=torch.float) / cfg.rotary_dim))
    freqs = torch.arange(n, dtype=torch.float)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (batch, pos, head, d_head): rotate the first rotary_dim dims of every head, pass the rest."""
    r = cos.shape[-1]
    rot, rest = x[..., :r], x[..., r:]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)


class NeoXMLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(cfg.d_model, cfg.d_mlp) / math.sqrt(cfg.d_model))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.randn(cfg.d_mlp, cfg.d_model) / math.sqrt(cfg.d_mlp))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class NeoXBlock(nn.Module):
    """One layer. Its attention weights and hook points sit on the block itself, named as on the attention-only
    model's layers (W_Q (head, d_model, d_head), ..., hook_pattern, hook_result), so blocks.{l}.W_Q and
    blocks.{l}.hook_pattern mean the same thing in both families."""

    causal_mask: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.W_Q = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_K = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_V = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(h, dh, d) / math.sqrt(d))
        self.b_Q = nn.Parameter(torch.zeros(h, dh))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.mlp = NeoXMLP(cfg)
        self.hook_q = HookPoint()  # (batch, pos, head, d_head), after the rotary embedding
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, head, query, key), pre-softmax, masked
        self.hook_pattern = HookPoint()  # (batch, head, query, key)
        self.hook_z = HookPoint()  # (batch, pos, head, d_head)
        self.hook_result = HookPoint()  # (batch, pos, head, d_model): each head's output (before b_O)
        self.hook_attn_out = HookPoint()  # (batch, pos, d_model): the heads' sum plus b_O
        self.hook_mlp_out = HookPoint()  # (batch, pos, d_model)
        self.register_buffer("causal_mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), False)

    def attend(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: the LayerNorm'd residual (batch, pos, d_model) -> the attention's output."""
        q = self.hook_q(apply_rotary(torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q, cos, sin))
        k = self.hook_k(apply_rotary(torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K, cos, sin))
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        z = self.hook_z(causal_attention(q, k, v, self.causal_mask, self.hook_attn_scores, self.hook_pattern))
        result = self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))
        return self.hook_attn_out(result.sum(dim=2) + self.b_O)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        attn_out = self.attend(self.ln1(x), cos, sin)
        if self.cfg.parallel_residual:
            return x + attn_out + self.hook_mlp_out(self.mlp(self.ln2(x)))
        mid = x + attn_out
        return mid + self.hook_mlp_out(self.mlp(self.ln2(mid)))


class NeoXTransformer(TokenizedModel, HookedModule):
    """Pythia-style language model. Hook points as AttnOnlyTransformer's (blocks.{l}.hook_pattern,
    blocks.{l}.hook_result, hook_resid.{l}, ...), plus blocks.{l}.hook_attn_out and blocks.{l}.hook_mlp_out."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(NeoXBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=LN_EPS)
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) * 0.02)
        self.hook_embed = HookPoint()
        self.hook_resid = nn.ModuleList(HookPoint() for _ in range(cfg.n_layers + 1))  # before each block, final
        self.tokenizer: Tokenizer | None = None  # a BPE tokenizer, set when loaded from a run (snapshots.load_model)
        self.setup_hooks()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, pos) -> logits (batch, pos, vocab)."""
        return self.unembed(self._residual(tokens))

    def _residual(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 1:
            tokens = tokens[None]
        n = tokens.shape[1]
        if n > self.cfg.n_ctx:
            raise ValueError(f"sequence of {n} tokens is longer than the context ({self.cfg.n_ctx})")
        cos, sin = rotary_cos_sin(self.cfg, n)
        x = self.hook_embed(self.W_E[tokens])
        for layer, block in enumerate(self.blocks):
            x = block(self.hook_resid[layer](x), cos, sin)
        return self.hook_resid[-1](x)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual stream -> logits."""
        return self.ln_final(resid) @ self.W_U

    @torch.no_grad()
    def logits_at(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits at the given positions only, (batch, len(positions), vocab): equal to forward()[:, positions],
        without unembedding (50k logits a position) the positions nobody reads."""
        return self.unembed(self._residual(tokens)[:, positions])


def _split_qkv(weight: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """transformers' fused query_key_value rows are laid out (head, [q, k, v], d_head): view(..., heads, 3*dh)
    then chunk(3) in GPTNeoXAttention.forward. Returns W_Q, W_K, W_V as (head, d_model, d_head), or the biases as
    (head, d_head) when `weight` is 1-D."""
    if weight.dim() == 1:
        q, k, v = weight.view(n_heads, 3, -1).unbind(1)
        return q, k, v
    d_model = weight.shape[1]
    per_head = weight.view(n_heads, 3, -1, d_model)  # (head, qkv, d_head, d_model)
    q, k, v = (per_head[:, i].transpose(1, 2) for i in range(3))
    return q, k, v


def state_dict_from_hf(hf: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our parameter names from transformers' GPTNeoXForCausalLM names (gpt_neox.layers.{l}.attention....,
    embed_out.weight or lm_head.weight), in fp32. Only the parameters are read: the buffers older checkpoints
    carry (attention.bias, masked_bias, rotary inv_freq) are ignored, as transformers' loader ignores them; a
    missing parameter is a KeyError that names it."""
    h, dh = cfg.n_heads, cfg.d_head
    # The Hub's files (written by transformers 4.x) name the unembedding embed_out; transformers 5 renames it
    # lm_head on loading (conversion_mapping.py: WeightRenaming "^embed_out." -> "lm_head.") and saves it so.
    unembed = hf["lm_head.weight"] if "lm_head.weight" in hf else hf["embed_out.weight"]
    out: dict[str, torch.Tensor] = {
        "W_E": hf["gpt_neox.embed_in.weight"],
        "W_U": unembed.T,
        "ln_final.weight": hf["gpt_neox.final_layer_norm.weight"],
        "ln_final.bias": hf["gpt_neox.final_layer_norm.bias"],
    }
    for layer in range(cfg.n_layers):
        src, dst = f"gpt_neox.layers.{layer}.", f"blocks.{layer}."
        for ours, theirs in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
            out[f"{dst}{ours}.weight"] = hf[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.bias"] = hf[f"{src}{theirs}.bias"]
        wq, wk, wv = _split_qkv(hf[f"{src}attention.query_key_value.weight"], h)
        out |= {f"{dst}W_Q": wq, f"{dst}W_K": wk, f"{dst}W_V": wv}
        dense = hf[f"{src}attention.dense.weight"]  # (d_model, d_model): out x in, in = (head, d_head)
        out[f"{dst}W_O"] = dense.T.reshape(h, dh, cfg.d_model)
        if cfg.biases:
            bq, bk, bv = _split_qkv(hf[f"{src}attention.query_key_value.bias"], h)
            out |= {f"{dst}b_Q": bq, f"{dst}b_K": bk, f"{dst}b_V": bv}
            out[f"{dst}b_O"] = hf[f"{src}attention.dense.bias"]
        else:
            out |= {f"{dst}{b}": torch.zeros(h, dh) for b in ("b_Q", "b_K", "b_V")}
            out[f"{dst}b_O"] = torch.zeros(cfg.d_model)
        out[f"{dst}mlp.W_in"] = hf[f"{src}mlp.dense_h_to_4h.weight"].T
        out[f"{dst}mlp.b_in"] = hf[f"{src}mlp.dense_h_to_4h.bias"]
        out[f"{dst}mlp.W_out"] = hf[f"{src}mlp.dense_4h_to_h.weight"].T
        out[f"{dst}mlp.b_out"] = hf[f"{src}mlp.dense_4h_to_h.bias"]
    return {k: v.float().contiguous() for k, v in out.items()}


def from_hf(hf: Mapping[str, torch.Tensor], config: Mapping[str, Any], tokenizer: str = "") -> NeoXTransformer:
    """A model from transformers' state dict and config.json (shapes checked by load_state_dict, strictly)."""
    cfg = config_from_hf(config, tokenizer or "unnamed")
    model = NeoXTransformer(cfg)
    model.load_state_dict(state_dict_from_hf(hf, cfg), strict=True)
    return model.eval()
