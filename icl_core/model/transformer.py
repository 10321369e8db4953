"""Attention-only transformer (no MLPs), nanoGPT-plain, with hook points for analysis.

Residual stream: token embedding + positional embedding (fixed sinusoids, as in the shipped runs, or
learned: ModelConfig.positional), then n_layers attention layers each adding the sum of its heads'
outputs, then an unembedding. Our runs have no LayerNorm and no biases, so the QK and OV circuits of
every head are exact products of weight matrices (Elhage et al. 2021). The same class also runs the
field's TransformerLens-format attention-only models (LayerNorm, biases, shortformer positions:
ModelConfig.normalization / biases / positional), with TransformerLens's forward semantics.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from icl_core.model.config import LN_EPS, ModelConfig
from icl_core.model.hooks import HookedModule, HookPoint, causal_attention
from icl_core.model.tokenizer import BYTES, TokenizedModel, Tokenizer

INIT_STD = 0.02  # GPT-2's initial weight scale, used for the unembedding


class Attention(nn.Module):
    causal_mask: torch.Tensor  # a buffer: declared for the type checker (register_buffer makes it an attribute)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_K = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_V = nn.Parameter(torch.randn(h, d, dh) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(h, dh, d) / math.sqrt(dh * h))
        if cfg.biases:
            self.b_Q = nn.Parameter(torch.zeros(h, dh))
            self.b_K = nn.Parameter(torch.zeros(h, dh))
            self.b_V = nn.Parameter(torch.zeros(h, dh))
            self.b_O = nn.Parameter(torch.zeros(d))
        if cfg.normalization == "LN":
            self.ln1 = LayerNorm(d)
        if cfg.smeared_keys:
            # sigmoid(0) = 0.5: start half-way between the key at j and at j-1.
            self.smear_alpha = nn.Parameter(torch.zeros(h))
        self.hook_q = HookPoint()  # (batch, pos, head, d_head)
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()  # (batch, head, query, key), pre-softmax, masked
        self.hook_pattern = HookPoint()  # (batch, head, query, key)
        self.hook_z = HookPoint()  # (batch, pos, head, d_head)
        self.hook_result = HookPoint()  # (batch, pos, head, d_model): each head's output (before b_O)
        mask = torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool))
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (batch, pos, d_model) -> the layer's output at every position, or only at `queries` (positions).

        pos: the positional embeddings (pos, d_model) that shortformer models add to the query and key inputs.
        With `queries` the keys and values still cover every position, but only the listed queries attend:
        the last layer of a model evaluated at a few positions (the ICL score) skips most of its work.
        """
        qk_in, v_in = self._inputs(x, pos)
        if queries is not None:
            return self._attend_at(qk_in, v_in, queries)
        q = self.hook_q(self._project(qk_in, self.W_Q, "b_Q"))
        k = self.hook_k(self._keys(qk_in))
        v = self.hook_v(self._project(v_in, self.W_V, "b_V"))
        z = self.hook_z(causal_attention(q, k, v, self.causal_mask, self.hook_attn_scores, self.hook_pattern))
        result = self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))
        return self._add_b_O(result.sum(dim=2))

    def _inputs(self, x: torch.Tensor, pos: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(query/key input, value input): LayerNorm'd if the model has it; shortformer positions on q/k only."""
        normed = self.ln1(x) if self.cfg.normalization == "LN" else x
        if self.cfg.positional == "shortformer":
            if pos is None:
                raise ValueError("a shortformer model's attention needs the positional embeddings")
            return normed + pos[: x.shape[1]], normed
        return normed, normed

    def _project(self, x: torch.Tensor, weight: torch.Tensor, bias: str) -> torch.Tensor:
        out = torch.einsum("bpd,hde->bphe", x, weight)
        return out + getattr(self, bias) if self.cfg.biases else out

    def _add_b_O(self, out: torch.Tensor) -> torch.Tensor:
        return out + self.b_O if self.cfg.biases else out

    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        k = self._project(x, self.W_K, "b_K")
        if self.cfg.smeared_keys:
            # k_j <- s*k_j + (1-s)*k_{j-1} per head; the first key is unchanged (Olsson et al. 2022).
            s = torch.sigmoid(self.smear_alpha)[None, None, :, None]
            smeared = s * k[:, 1:] + (1 - s) * k[:, :-1]
            k = torch.cat([k[:, :1], smeared], dim=1)
        return k

    def _attend_at(self, qk_in: torch.Tensor, v_in: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        # No hooks here: this path serves bulk evaluation only, never capture or ablation.
        q = self._project(qk_in[:, queries], self.W_Q, "b_Q").transpose(1, 2)
        k = self._keys(qk_in).transpose(1, 2)
        v = self._project(v_in, self.W_V, "b_V").transpose(1, 2)
        allowed = torch.arange(qk_in.shape[1], device=qk_in.device)[None, :] <= queries[:, None]
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self._add_b_O(torch.einsum("bhqe,hed->bqd", z, self.W_O))


class LayerNorm(nn.Module):
    """TransformerLens's LayerNorm: centre, divide by sqrt(mean square + eps), then scale w and shift b."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w, self.b, eps=LN_EPS)


class AttnOnlyTransformer(TokenizedModel, HookedModule):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.5)
        if cfg.positional == "sinusoidal":
            # Fixed sinusoids: a relative offset is a rotation, so previous-token heads are easy to learn.
            self.register_buffer("W_pos", sinusoidal_positions(cfg.n_ctx, cfg.d_model), persistent=False)
        else:
            self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.5)
        self.blocks = nn.ModuleList(Attention(cfg) for _ in range(cfg.n_layers))
        if cfg.normalization == "LN":
            self.ln_final = LayerNorm(cfg.d_model)
        # A small unembedding (GPT-2's std 0.02, scaled by 1/sqrt(d_model)) makes every logit ~0 at step 0: the
        # initial loss is ln(d_vocab) and the ICL score is ~0, as in Olsson et al. A large one gave step 0 a
        # spurious in-context "improvement" (later positions average more tokens, shrinking the logits).
        self.W_U = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) * (INIT_STD / math.sqrt(cfg.d_model)))
        if cfg.biases:
            self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        # As TransformerLens's model.tokenizer: analyses draw their probes and held-out text in the model's own
        # tokens. A BPE model gets its tokenizer when it is loaded from a run (snapshots.load_model).
        # Hand-built test models with a smaller vocabulary have none.
        byte_level = cfg.tokenizer == BYTES.name and cfg.d_vocab >= BYTES.vocab_size
        self.tokenizer: Tokenizer | None = BYTES if byte_level else None
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.hook_resid = nn.ModuleList(HookPoint() for _ in range(cfg.n_layers + 1))  # before each layer, final
        self.setup_hooks()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, pos) -> logits (batch, pos, vocab)."""
        x, pos = self._embed(tokens)
        x = self.hook_embed(x)
        if self.cfg.positional != "shortformer":
            x = x + self.hook_pos_embed(pos)[None]
        for layer, block in enumerate(self.blocks):
            x = self.hook_resid[layer](x)
            x = x + block(x, pos)
        return self.unembed(self.hook_resid[-1](x))

    def _embed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() == 1:
            tokens = tokens[None]
        n = tokens.shape[1]
        if n > self.cfg.n_ctx:
            raise ValueError(f"sequence of {n} tokens is longer than the context ({self.cfg.n_ctx})")
        return self.W_E[tokens], self.W_pos[:n]

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual stream -> logits (ln_final, W_U, b_U as the model has them)."""
        x = self.ln_final(resid) if self.cfg.normalization == "LN" else resid
        logits = x @ self.W_U
        return logits + self.b_U if self.cfg.biases else logits

    @torch.no_grad()
    def logits_at(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits at the given positions only, (batch, len(positions), vocab): equal to forward()[:, positions].

        Every layer but the last runs in full (later layers read every position); the last runs only
        the listed queries. Hooks are not run.
        """
        x, pos = self._embed(tokens)
        if self.cfg.positional != "shortformer":
            x = x + pos[None]
        for block in self.blocks[:-1]:
            x = x + block(x, pos)
        return self.unembed(x[:, positions] + self.blocks[-1](x, pos, queries=positions))


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
