"""The weights a head's circuits are read from, with LayerNorm folded in (TransformerLens's `fold_ln` and
`center_writing_weights`), so the QK/OV circuits, composition and copying scores of a TransformerLens-format
model mean what they mean for our LayerNorm-free runs.

LayerNorm is ln(x) = (x - mean x) / s(x) * w + b. Its centring is linear: x C with C = I - 11ᵀ/d; its scale w
is linear too and moves into every matrix that reads the normalised stream (W_Q, W_K, W_V of each block, W_U
after ln_final). Only the division by s(x), one number per position, is left out: circuits are defined up to it
(Elhage et al. 2021 do the same). Writing weights (W_E, W_pos, W_O) are centred, since every reader centres
first. For models without LayerNorm the weights are returned as they are, uncopied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from icl_core.model.transformer import Attention, AttnOnlyTransformer


@dataclass(frozen=True)
class CircuitWeights:
    W_E: torch.Tensor  # (vocab, d_model)
    W_pos: torch.Tensor  # (n_ctx, d_model): as the query/key inputs see positions (shortformer: not normalised)
    W_Q: list[torch.Tensor]  # per layer (head, d_model, d_head)
    W_K: list[torch.Tensor]
    W_V: list[torch.Tensor]
    W_O: list[torch.Tensor]  # per layer (head, d_head, d_model)
    W_U: torch.Tensor  # (d_model, vocab)
    pos_W_Q: list[torch.Tensor]  # the W_Q / W_K that positions meet: the folded ones, or the raw ones for
    pos_W_K: list[torch.Tensor]  # shortformer models, which add positions after LayerNorm


def _centre_rows(w: torch.Tensor, dim: int) -> torch.Tensor:
    return w - w.mean(dim=dim, keepdim=True)


@torch.no_grad()
def circuit_weights(model: AttnOnlyTransformer) -> CircuitWeights:
    """The model's circuit weights, LayerNorm folded in where it has one (see the module docstring)."""
    blocks = [cast(Attention, b) for b in model.blocks]
    raw_q = [b.W_Q.detach() for b in blocks]
    raw_k = [b.W_K.detach() for b in blocks]
    if model.cfg.normalization != "LN":
        return CircuitWeights(
            model.W_E.detach(), model.W_pos.detach(), raw_q, raw_k, [b.W_V.detach() for b in blocks],
            [b.W_O.detach() for b in blocks], model.W_U.detach(), raw_q, raw_k,
        )  # fmt: skip

    def read(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # (head, d_model, d_head): C diag(w) W
        return _centre_rows(w * scale[None, :, None], dim=1)

    q = [read(b.W_Q.detach(), b.ln1.w.detach()) for b in blocks]
    k = [read(b.W_K.detach(), b.ln1.w.detach()) for b in blocks]
    v = [read(b.W_V.detach(), b.ln1.w.detach()) for b in blocks]
    o = [_centre_rows(b.W_O.detach(), dim=-1) for b in blocks]
    w_u = _centre_rows(model.W_U.detach() * model.ln_final.w.detach()[:, None], dim=0)
    shortformer = model.cfg.positional == "shortformer"
    w_pos = model.W_pos.detach() if shortformer else _centre_rows(model.W_pos.detach(), dim=-1)
    return CircuitWeights(
        _centre_rows(model.W_E.detach(), dim=-1), w_pos, q, k, v, o, w_u,
        raw_q if shortformer else q, raw_k if shortformer else k,
    )  # fmt: skip
