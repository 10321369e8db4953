"""The ablation table: every head ablated alone at one snapshot, with the change in the ICL score (windowed, on
held-out text) and in the second-copy loss of repeated random tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import metrics
from icl_core.analysis.ablation import AblationMode, check_mode, head_output_means
from icl_core.analysis.head_ablation import chunk_counter, head_ablation_losses, n_chunks
from icl_core.analysis.metrics import ICL_WINDOW, windowed_icl_score
from icl_core.heads import INDUCTION_THRESHOLD, Head, all_heads, head_name, induction_heads
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.family import Model


@dataclass(frozen=True)
class AblationRow:
    head: str  # "L1H2"
    layer: int
    index: int  # head index within the layer
    prefix_matching: float
    is_induction: bool
    icl_score: float | None  # ICL score with this head ablated (None: context too short to measure it)
    delta_icl: float | None  # ablated - clean; positive = less in-context learning
    second_half_loss: float  # repeated random tokens, second copy, head ablated
    delta_second_half: float  # ablated - clean; positive = the head helped copy the repeat


@dataclass(frozen=True)
class AblationTable:
    mode: AblationMode
    clean_icl: float | None
    clean_second_half: float
    n_examples: int
    n_repeated: int
    repeat_len: int
    rows: list[AblationRow]  # sorted, strongest effect of removing the head first

    def records(self) -> list[dict[str, object]]:
        return [asdict(r) for r in self.rows]


def probe_prefix_matching(model: Model) -> torch.Tensor:
    # The probe the training loop stores per snapshot (train.EvalData).
    repeated, seq_len = data.prefix_matching_probe(model.cfg.n_ctx, model.require_tokenizer())
    device = next(model.parameters()).device
    return metrics.prefix_matching_scores(model, repeated.to(device), seq_len).cpu()


def induction_flags(prefix_matching: Sequence[Sequence[float]], threshold: float = INDUCTION_THRESHOLD) -> set[Head]:
    """Heads whose prefix-matching score exceeds threshold, in layers >= 1 (any layer of a 1-layer model,
    which can only have induction heads through smeared keys) — as heads.induction_heads."""
    return set(induction_heads([[float(v) for v in row] for row in prefix_matching], threshold))


def _windowed_icl_per_head(
    model: Model,
    n_examples: int,
    icl_window: int,
    mode: AblationMode,
    heads: Sequence[Head],
    means: dict[int, torch.Tensor] | None,
    chunk: int,
    on_chunk: Callable[[], None] | None = None,
) -> tuple[float, dict[Head, float]]:
    """Windowed ICL score (metrics.windowed_icl_score) clean and with each head ablated, on held-out text.

    Only the losses inside the two windows are computed; the in-context loss curve holds NaN elsewhere.
    """
    n_ctx = model.cfg.n_ctx
    examples = data.heldout_examples(n_examples, n_ctx, tokenizer=model.require_tokenizer())
    w = max(0, min(int(icl_window), ICL_EARLY_TOKEN, n_ctx - 2 - ICL_LATE_TOKEN))
    offsets = torch.arange(-w, w + 1)
    where = torch.cat([ICL_EARLY_TOKEN + offsets, ICL_LATE_TOKEN + offsets])
    clean, ablated = head_ablation_losses(
        model, examples, where[None].expand(len(examples), -1), mode, heads, means, chunk, on_chunk
    )

    def score(losses: torch.Tensor) -> float:
        curve = np.full(n_ctx - 1, np.nan)
        curve[where.numpy()] = losses.double().mean(0).numpy()
        value = windowed_icl_score(curve, w)
        if value is None:  # the examples were cut to reach token 500: never, by construction
            raise ValueError(f"a {n_ctx}-token context has no ICL score")
        return value

    return score(clean), {h: score(v) for h, v in ablated.items()}


def ablation_table(
    model: Model,
    mode: AblationMode = AblationMode.ZERO,
    n_examples: int = 128,
    n_repeated: int = 16,
    repeat_len: int = 100,
    induction_threshold: float = INDUCTION_THRESHOLD,
    prefix_matching: Sequence[Sequence[float]] | None = None,
    means: dict[int, torch.Tensor] | None = None,
    sort_by: str = "delta_icl",
    icl_window: int = ICL_WINDOW,
    chunk: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> AblationTable:
    """Ablate every head alone; change in ICL score and in second-half loss on repeated random tokens.

    ICL score: loss(500) - loss(50) on data.heldout_examples(n_examples) (None if the context is <= 500),
    each loss averaged over token indices +-icl_window around 500 and 50 (as the ablation page's live
    estimate). One token index per example is very noisy on a small batch (on the shipped 2-layer run, 64
    examples gave the induction head a *negative* change); icl_window=0 is the paper's exact definition.
    Repeated tokens: data.repeated_random_tokens(n_repeated, repeat_len, 2 repeats); the second-half loss
    leaves out the first token of the copy, which nothing in the context predicts.
    Rows are sorted by `sort_by` ("delta_icl" or "delta_second_half"), largest increase first; with no ICL
    score, by delta_second_half. prefix_matching (layer x head) may come from the snapshot's stored metrics.
    progress(done, total) is called after each batch of examples.
    """
    mode = check_mode(mode)  # a plain string (a stored key, a link) is checked and becomes the enum
    if sort_by not in ("delta_icl", "delta_second_half"):
        raise ValueError(f"sort_by must be 'delta_icl' or 'delta_second_half', got {sort_by!r}")
    cfg = model.cfg
    heads = all_heads(cfg.n_layers, cfg.n_heads)
    if mode == AblationMode.MEAN and means is None:
        means = head_output_means(model, data.mean_reference(cfg.n_ctx, tokenizer=model.require_tokenizer()))
    pm = (
        torch.as_tensor(prefix_matching, dtype=torch.float32)
        if prefix_matching is not None
        else probe_prefix_matching(model)
    )
    flagged = induction_flags(pm.tolist(), induction_threshold)

    has_icl = cfg.n_ctx > ICL_LATE_TOKEN + 1
    tick = chunk_counter(progress, (n_chunks(n_examples, chunk) if has_icl else 0) + n_chunks(n_repeated, chunk))
    icl_clean: float | None = None
    icl_ablated: dict[Head, float] = {}
    if has_icl:
        icl_clean, icl_ablated = _windowed_icl_per_head(model, n_examples, icl_window, mode, heads, means, chunk, tick)

    repeated, half = data.repeated_twice(cfg.n_ctx, n_repeated, repeat_len, model.require_tokenizer())
    pos = torch.arange(half + 1, 2 * half)[None].expand(len(repeated), -1)
    clean_rep, ablated_rep = head_ablation_losses(model, repeated, pos, mode, heads, means, chunk, tick)
    second_clean = float(clean_rep.mean())

    rows = []
    for head in heads:
        second = float(ablated_rep[head].mean())
        icl_score = icl_ablated.get(head)
        rows.append(
            AblationRow(
                head=head_name(head),
                layer=head[0],
                index=head[1],
                prefix_matching=float(pm[head]),
                is_induction=head in flagged,
                icl_score=icl_score,
                delta_icl=None if icl_score is None or icl_clean is None else icl_score - icl_clean,
                second_half_loss=second,
                delta_second_half=second - second_clean,
            )
        )
    key = sort_by if has_icl else "delta_second_half"
    rows.sort(key=lambda r: (-getattr(r, key), r.layer, r.index))
    return AblationTable(mode, icl_clean, second_clean, n_examples if has_icl else 0, n_repeated, half, rows)
