"""What a snapshot records about itself: held-out losses, ICL score, head scores, computed once and stored.

Our runs are evaluated here at training time, on the shipped evaluation set (bytes); runs imported from the
Hub (TransformerLens format, a BPE tokenizer) are evaluated here after the download, with their own
tokenizer on the stdlib's held-out text (data.tokenized_heldout).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from icl_core import data, proseset
from icl_core.analysis import costs, metrics, pca
from icl_core.model.config import ICL_LATE_TOKEN, ModelConfig, TrainConfig
from icl_core.model.family import Model
from icl_core.model.tokenizer import BYTES, Tokenizer, load_tokenizer
from icl_core.model.transformer import Attention, AttnOnlyTransformer
from icl_core.storage.snapshot_metrics import IclKey
from icl_core.storage.snapshots import (
    MANIFEST,
    SnapshotInfo,
    atomic_write_json,
    list_snapshots,
    load_model,
    read_json,
)

PROBE_TEXT_EXAMPLES = 16
# One checkpoint's metrics cost about examples x tokens x the work per token. An imported model's 48k-token
# unembedding makes a token ~200x dearer than in our runs, so evaluate_run sizes its example counts to this many
# floating-point operations for the loss curve and as many for the ICL score (~10 s each at the ~90 GFLOP/s of
# two CPU cores): Neel Nanda's 2-layer model gets 15 and 330 examples, ours their full counts. The ICL score's
# stored standard error and example count say what the smaller count costs.
FLOP_BUDGET = 9e11
MIN_EVAL_EXAMPLES, MIN_ICL_EXAMPLES = 8, 128
DEFAULT_EVAL_EXAMPLES, DEFAULT_ICL_EXAMPLES = 64, 1024  # what evaluate_run asks for before example_counts
# What an evaluation reaches on two CPU cores, and what a checkpoint costs besides (download from a local server,
# conversion, loading, writing): the slowest rate of three shapes measured on one machine (README, "The field's
# published checkpoints"): Neel Nanda's 2-layer run 1.2e11 (benchmarks/published_import.py, 25.1 s a checkpoint),
# pythia-14m 1.0e11 and pythia-70m 1.9e11 (benchmarks/pythia_import.py): larger matrices run faster.
EVAL_FLOPS_PER_S = 1.0e11
SNAPSHOT_OVERHEAD_S = 5.0


@dataclass
class EvalData:
    heldout: torch.Tensor  # (eval_examples, n_ctx): loss curve, PCA vector
    icl: torch.Tensor | None  # (icl_examples, >= 502): the ICL score and its standard error
    icl_prose: torch.Tensor | None  # (2048 in bytes, fewer in BPE, 502): the same on English prose (proseset.py)
    icl_repeated: torch.Tensor | None  # (256, 502): the same on repeated random tokens (data.repeated_icl_examples)
    repeated: torch.Tensor  # repeated random tokens: prefix-matching score
    repeat_len: int  # length of the random sequence that `repeated` repeats
    probe_text: torch.Tensor  # held-out text: previous-token score

    @classmethod
    def for_config(cls, cfg: TrainConfig, tokenizer: Tokenizer = BYTES) -> EvalData:
        """Fixed held-out examples and probes in the model's tokens (data.heldout_examples, data.probe_tokens):
        bytes from the shipped evaluation set, another tokenizer's from the stdlib held-out text."""
        n_ctx = cfg.model.n_ctx
        heldout = data.heldout_examples(cfg.eval_examples, n_ctx, tokenizer=tokenizer)
        # Causal: positions past the late token change nothing, so the ICL examples stop there.
        icl = (
            data.heldout_examples(cfg.icl_examples, ICL_LATE_TOKEN + 2, tokenizer=tokenizer)
            if cfg.compute_icl_score and n_ctx > ICL_LATE_TOKEN + 1
            else None
        )
        prose = data.prose_icl_examples(tokenizer) if icl is not None else None
        icl_repeated = data.repeated_icl_examples(ICL_LATE_TOKEN + 2, tokenizer) if icl is not None else None
        repeated, repeat_len = data.prefix_matching_probe(n_ctx, tokenizer)
        probe_text = heldout[:PROBE_TEXT_EXAMPLES, : min(n_ctx, 128)]
        return cls(heldout, icl, prose, icl_repeated, repeated, repeat_len, probe_text)


@torch.no_grad()
def evaluate(model: Model, ev: EvalData) -> dict[str, Any]:
    """Everything a snapshot records about itself; computed once here so the app never has to."""
    was_training = model.training
    model.eval()
    losses = metrics.per_token_losses(model, ev.heldout)
    curve = metrics.loss_curve(losses)
    out: dict[str, Any] = {
        "heldout_loss": float(losses.mean()),
        "loss_curve": [round(float(x), 5) for x in curve],
        "pca_losses": [
            round(float(x), 5) for x in pca.select_positions(losses, pca.token_positions(*ev.heldout.shape))
        ],
        "prefix_matching": metrics.prefix_matching_scores(
            model, ev.repeated.to(_device(model)), ev.repeat_len
        ).tolist(),
        "previous_token": metrics.previous_token_scores(model, ev.probe_text.to(_device(model))).tolist(),
    }
    if isinstance(model, AttnOnlyTransformer):  # weight-only: not the head's copying where MLPs sit between
        out["copying"] = metrics.copying_scores(model).tolist()
    sets: tuple[tuple[IclKey, torch.Tensor | None], ...] = (
        ("icl_score", ev.icl),
        ("icl_score_prose", ev.icl_prose),
        ("icl_score_repeated", ev.icl_repeated),
    )
    for key, tokens in sets:
        if tokens is not None:
            out.update(stored_icl(model, key, tokens))
    if model.cfg.smeared_keys:
        out["smear"] = [torch.sigmoid(cast(Attention, b).smear_alpha).tolist() for b in model.blocks]
    model.train(was_training)
    return out


def stored_icl(model: Model, key: IclKey, tokens: torch.Tensor) -> dict[str, float | int]:
    """The ICL score on one evaluation set as a snapshot stores it: the score, its standard error and the example
    count (icl_score, icl_score_se, icl_examples; the other sets' names carry their suffix)."""
    icl = metrics.exact_icl_score(model, tokens.to(_device(model)))
    return {key: icl.value, f"{key}_se": icl.se, key.replace("icl_score", "icl_examples"): icl.n_examples}


def _add_metrics(snap: SnapshotInfo, fields: dict[str, float | int]) -> None:
    """Add fields to a snapshot's stored metrics, its JSON rewritten atomically."""
    meta = read_json(snap.meta_path)
    meta["metrics"].update(fields)
    atomic_write_json(snap.meta_path, meta)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _flops_per_example(model: ModelConfig) -> tuple[float, float]:
    """(one loss-curve example, one ICL example): floating-point operations of their forward passes."""
    # The ICL examples stop after the late token, and only its two positions are unembedded.
    return costs.forward_flops(model, model.n_ctx), costs.forward_flops(model, ICL_LATE_TOKEN + 2, unembedded=2)


def example_counts(model: ModelConfig, eval_examples: int, icl_examples: int) -> tuple[int, int]:
    """(loss-curve examples, ICL examples): at most those asked for, fewer where FLOP_BUDGET says so."""
    per_loss_example, per_icl_example = _flops_per_example(model)
    return (
        max(MIN_EVAL_EXAMPLES, min(eval_examples, int(FLOP_BUDGET // per_loss_example))),
        max(MIN_ICL_EXAMPLES, min(icl_examples, int(FLOP_BUDGET // per_icl_example))),
    )


def estimated_seconds(model: ModelConfig, n_snapshots: int) -> float:
    """Rough time to import n checkpoints (BPE models) on two CPU cores, the download over the internet not
    included: their evaluation's FLOPs at EVAL_FLOPS_PER_S, plus a fixed cost per checkpoint."""
    n_eval, n_icl = example_counts(model, DEFAULT_EVAL_EXAMPLES, DEFAULT_ICL_EXAMPLES)
    per_loss_example, per_icl_example = _flops_per_example(model)
    # The ICL examples of held-out text, of prose in the model's tokens and of repeated random tokens
    # (EvalData.for_config): none below 502 tokens.
    n_icl_sets = n_icl + data.TYPICAL_BPE_PROSE_WINDOWS + data.REPEATED_ICL_EXAMPLES
    n_icl_all = n_icl_sets if model.n_ctx > ICL_LATE_TOKEN + 1 else 0
    flops = n_eval * per_loss_example + n_icl_all * per_icl_example
    return n_snapshots * (flops / EVAL_FLOPS_PER_S + SNAPSHOT_OVERHEAD_S)


def evaluate_snapshot(
    snap: SnapshotInfo, eval_examples: int = DEFAULT_EVAL_EXAMPLES, icl_examples: int = DEFAULT_ICL_EXAMPLES
) -> None:
    """Store a snapshot's metrics in its JSON (atomically), with the tokenizer its run folder holds.

    eval_examples and icl_examples are upper bounds: example_counts lowers them for large models. The evaluation
    data of the last run evaluated is kept, so a run's snapshots evaluated one by one (an import does that, one
    checkpoint at a time) tokenize the held-out text once.
    """
    tokenizer = load_tokenizer(snap.model_config.tokenizer, snap.run_dir)  # cached by file and mtime
    counts = example_counts(snap.model_config, eval_examples, icl_examples)
    ev = _eval_data(snap.model_config, tokenizer, *counts)
    out = evaluate(load_model(snap), ev)
    meta = read_json(snap.meta_path)
    meta["metrics"] = out
    atomic_write_json(snap.meta_path, meta)


@functools.lru_cache(maxsize=1)
def _eval_data(model: ModelConfig, tokenizer: Tokenizer, eval_examples: int, icl_examples: int) -> EvalData:
    cfg = TrainConfig(
        run_name="evaluation",
        model=model,
        eval_examples=eval_examples,
        icl_examples=icl_examples,
        compute_icl_score=model.n_ctx > ICL_LATE_TOKEN + 1,
    )
    return EvalData.for_config(cfg, tokenizer)


def evaluate_run(
    run_dir: Path,
    eval_examples: int = DEFAULT_EVAL_EXAMPLES,
    icl_examples: int = DEFAULT_ICL_EXAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Store the metrics of every snapshot of a run that has none yet (an imported run); returns how many.

    Each snapshot's JSON is rewritten as soon as its metrics are known, so an interrupted evaluation keeps what
    it finished and continues from there.
    """
    todo = [s for s in list_snapshots(run_dir) if not s.metrics.recorded]
    for i, snap in enumerate(todo):
        evaluate_snapshot(snap, eval_examples, icl_examples)
        if progress is not None:
            progress(i + 1, len(todo))
    return len(todo)


def add_prose_scores(run_dir: Path, say: Callable[[str], None] = print) -> int:
    """Store the prose ICL score (icl_core/proseset.py) in every snapshot of a byte-level run that lacks it, each
    JSON rewritten atomically as soon as its score is known (so an interrupted pass continues); returns how many.

    Runs trained before the prose set existed get it this way; training stores it itself since.
    """
    prose = data.prose_examples(ICL_LATE_TOKEN + 2)
    if prose is None:  # the shipped prose set's windows are longer than this: a rebuilt, shorter set
        raise ValueError(f"the prose set's windows are shorter than the {ICL_LATE_TOKEN + 2} tokens a score needs")
    manifest = read_json(run_dir / MANIFEST)
    # Scores from another prose set (a rebuilt file) are recomputed, not mixed with this one's.
    stale = manifest.get("prose_set_sha256") not in (None, proseset.load().sha256)
    todo = [
        s
        for s in list_snapshots(run_dir)
        if (stale or s.metrics.icl_score_prose is None)
        and s.model_config.tokenizer == BYTES.name
        and s.model_config.n_ctx > ICL_LATE_TOKEN + 1
    ]
    for i, snap in enumerate(todo):
        fields = stored_icl(load_model(snap).eval(), "icl_score_prose", prose)
        _add_metrics(snap, fields)
        value, se = fields["icl_score_prose"], fields["icl_score_prose_se"]
        say(f"{run_dir.name} step {snap.step}: prose ICL {value:+.3f} ± {se:.3f} ({i + 1}/{len(todo)})")
    if todo:
        atomic_write_json(
            run_dir / MANIFEST, {**read_json(run_dir / MANIFEST), "prose_set_sha256": proseset.load().sha256}
        )
    return len(todo)


def add_repeated_scores(run_dir: Path, say: Callable[[str], None] = print) -> int:
    """Store the ICL score on repeated random tokens in every snapshot of a run that lacks it (runs evaluated before
    it existed), each JSON rewritten atomically as soon as its score is known; returns how many."""
    todo = [
        s
        for s in list_snapshots(run_dir)
        if s.metrics.icl_score_repeated is None and s.model_config.n_ctx > ICL_LATE_TOKEN + 1
    ]
    for i, snap in enumerate(todo):
        model = load_model(snap)
        tokens = data.repeated_icl_examples(ICL_LATE_TOKEN + 2, model.require_tokenizer())
        scores = stored_icl(model, "icl_score_repeated", tokens)
        _add_metrics(snap, scores)
        say(
            f"{run_dir.name} step {snap.step}: ICL on repeated tokens {scores['icl_score_repeated']:+.3f} "
            f"({i + 1}/{len(todo)})"
        )
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Add the prose and repeated-token ICL scores to every snapshot.")
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (e.g. checkpoints/attn2)")
    args = parser.parse_args(argv)
    for run in args.runs:
        add_prose_scores(run)
        add_repeated_scores(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
