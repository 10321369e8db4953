"""Attention-only transformer (no MLPs), nanoGPT-plain, with hook points for analysis.

Residual stream: token embedding + positional embedding (fixed sinusoids, as in the shipped runs, or
learned: ModelConfig.positional), then n_layers attention layers each adding the sum of its heads'
outputs, then an unembedding. No LayerNorm and no biases, so the
QK and OV circuits of every head are exact products of weight matrices (Elhage et al. 2021).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from icl_core.model.config import ModelConfig
from icl_core.model.hooks import HookedModule, HookPoint


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_K = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_V = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(h, dh, d) / math.sqrt(dh * h))
        if cfg.smeared_keys:
            # sigmoid(0) = 0.5: start half-way between the key at j and at j-1.
            self.smear_alpha = nn.Parameter(torch.zeros(h))
        self.hook_q = HookPoint()  # (batch, pos, head, d_head)
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, head, query, key), pre-softmax, masked
        self.hook_pattern = HookPoint()  # (batch, head, query, key)
        self.hook_z = HookPoint()  # (batch, pos, head, d_head)
        self.hook_result = HookPoint()  # (batch, pos, head, d_model): each head's output
        mask = torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x, self.W_Q))
        k = torch.einsum("bpd,hde->bphe", x, self.W_K)
        if self.cfg.smeared_keys:
            # k_j <- s*k_j + (1-s)*k_{j-1} per head; the first key is unchanged (Olsson et al. 2022).
            s = torch.sigmoid(self.smear_alpha)[None, None, :, None]
            smeared = s * k[:, 1:] + (1 - s) * k[:, :-1]
            k = torch.cat([k[:, :1], smeared], dim=1)
        k = self.hook_k(k)
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V))
        if self.hook_attn_scores.fns or self.hook_pattern.fns:
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.cfg.d_head)
            scores = scores.masked_fill(~self.causal_mask[:n, :n], float("-inf"))
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        else:
            # Nobody reads or edits the pattern: the fused kernel is ~5x faster on CPU for training.
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            ).transpose(1, 2)
        z = self.hook_z(z)
        result = self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))
        return result.sum(dim=2)


class AttnOnlyTransformer(HookedModule):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.5)
        if cfg.positional == "learned":
            self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.5)
        else:
            # Fixed sinusoids: a relative offset is a rotation, so previous-token heads are easy to learn.
            self.register_buffer("W_pos", sinusoidal_positions(cfg.n_ctx, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(Attention(cfg) for _ in range(cfg.n_layers))
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) / math.sqrt(cfg.d_model))
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.hook_resid = nn.ModuleList(HookPoint() for _ in range(cfg.n_layers + 1))  # before each layer, final
        self.setup_hooks()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, pos) -> logits (batch, pos, vocab)."""
        if tokens.dim() == 1:
            tokens = tokens[None]
        n = tokens.shape[1]
        if n > self.cfg.n_ctx:
            raise ValueError(f"sequence of {n} tokens is longer than the context ({self.cfg.n_ctx})")
        x = self.hook_embed(self.W_E[tokens]) + self.hook_pos_embed(self.W_pos[:n])[None]
        for layer, block in enumerate(self.blocks):
            x = self.hook_resid[layer](x)
            x = x + block(x)
        x = self.hook_resid[-1](x)
        return x @ self.W_U


def sinusoidal_positions(n_ctx: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(n_ctx, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    out = torch.zeros(n_ctx, d_model)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return out


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.hook_pattern"


def result_name(layer: int) -> str:
    return f"blocks.{layer}.hook_result"


def per_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Loss of predicting token i+1 at position i: shape (batch, pos - 1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
