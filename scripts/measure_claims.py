"""Every figure the README's claims tables and tests/test_shipped.py read, on both evaluation sets: re-measure them
after retraining the shipped runs (~25 min on one core; the prose PCA is most of it).

Run: PYTHONPATH=. .venv/bin/python scripts/measure_claims.py [RUNS_DIR]   (default checkpoints/)
Needs prose scores in every snapshot (python -m icl_core.analysis.evaluation RUN_DIR).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import claims, metrics
from icl_core.analysis.ablation import run_ablated
from icl_core.analysis.pca import (
    PCA_MIN_STEP,
    joint_pca,
    pca_table,
    select_positions,
    sharpest_turn,
    token_positions,
)
from icl_core.analysis.phase import best_induction_head, early_stage_end, phase_window
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.transformer import per_token_loss
from icl_core.storage.snapshots import list_snapshots, load_model

KEYS = claims.ICL_KEYS
N_PAIRED = 2048  # examples for the paired figures (the prose set has 2,048)


def _step(snaps: list, step: int):
    return next(s for s in snaps if s.step == step)


def run_report(name: str, snaps: list) -> None:
    print(
        f"{name}: {len(snaps)} snapshots, {snaps[-1].tokens_seen / 1e6:.1f}M tokens; early stage ends at "
        f"{early_stage_end(snaps)} tokens; best induction head {best_induction_head(snaps[-1])}"
    )
    for key in KEYS:
        f = claims.run_figures(snaps, key)
        if f["final_icl"] is None:
            print(f"  {key}: not stored")
            continue
        late_se = [x.metrics.scalar(f"{key}_se") for x in snaps if x.step >= 100]
        early_se = max(x.metrics.scalar(f"{key}_se") for x in snaps if x.step < 100)
        print(
            f"  {key}: step-0 loss {f['step0_loss']:.3f}; s.e. from step 100: {min(late_se):.3f}-{max(late_se):.3f}, "
            f"<= 0.03 at {sum(v <= 0.03 for v in late_se) / len(late_se):.0%}; max before {early_se:.3f}"
        )
        early = [s.metrics.scalar(key) for s in snaps if s.tokens_seen < (early_stage_end(snaps) or 0)]
        print(
            f"  {key}: step0 {f['step0_icl']:+.3f}; final {f['final_icl']:+.3f} ± {f['final_icl_se']:.3f}; "
            f"neighbour jitter (last third) {f['jitter']:.3f} rms vs s.e. {f['tail_se']:.3f}; "
            f"early stage {max(early):+.3f} then {min(early):+.3f}"
        )
        if f["window"] is not None:
            print(f"    fall inside the window (from the 1M-token level): {f['fall_inside_window']:.0%}")
    if f["window"] is not None:
        s, c, e = f["window_tokens"]
        print(
            f"  window steps {f['window'].start_step}-{f['window'].end_step} = {s / 1e6:.2f}M-{e / 1e6:.2f}M "
            f"tokens (steepest {c / 1e6:.2f}M), {f['window_decades']:.2f} decades ({f['window'].signal})"
        )
    print(f"  induction change over the linear last third: {f['induction_change_in_tail']}")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints")
    torch.set_num_threads(1)
    names = ("attn1", "attn1-smeared", "attn2", "attn2-smeared", "attn3")
    runs = {name: list_snapshots(root / name) for name in names if (root / name / "run.json").exists()}
    for name, snaps in runs.items():
        run_report(name, snaps)
    heads_report(runs)
    prose_pca_turns(runs)
    for key in KEYS:
        tokens = claims.eval_tokens(key, N_PAIRED)
        for name in runs:
            if name != "attn1":
                gap = claims.paired_icl_change(runs["attn1"][-1], runs[name][-1], tokens)
                print(f"{key} final {name} minus attn1, paired: {gap.value:+.3f} ± {gap.se:.3f}")
    if "attn2" not in runs or phase_window(runs["attn2"]) is None:
        return
    window = phase_window(runs["attn2"])
    for key in KEYS:
        tokens = claims.eval_tokens(key, N_PAIRED)
        for name, snaps in runs.items():
            start = claims.nearest(snaps, _step(runs["attn2"], window.start_step).tokens_seen)
            end = claims.nearest(snaps, _step(runs["attn2"], window.end_step).tokens_seen)
            change = claims.paired_icl_change(start, end, tokens)
            print(
                f"{key} paired change across attn2's window, {name}: {change.value:+.3f} ± {change.se:.3f} "
                f"({abs(change.value) / change.se:.1f} s.e.)"
            )
        for name in ("attn2", "attn3"):
            if name in runs:
                changes = claims.ablation_icl_changes(load_model(runs[name][-1]).eval(), tokens)
                top = sorted(changes.items(), key=lambda kv: -kv[1].value)[:4]
                print(
                    f"{key} zero-ablation ICL change, {name}: "
                    + ", ".join(f"L{h[0]}H{h[1]} {c.value:+.3f} ± {c.se:.3f}" for h, c in top)
                )


@torch.no_grad()
def prose_pca_turns(runs: dict, n_examples: int = 512) -> None:
    """The per-token-loss PCA on the prose set (computed here from the weights; snapshots store only the code
    set's vectors): the same construction, positions and fit as pca_table."""
    examples = data.prose_examples(512)[:n_examples]
    positions = token_positions(*examples.shape)
    vectors, tokens = {}, {}
    for name, snaps in runs.items():
        kept = [s for s in snaps if s.step >= PCA_MIN_STEP]
        vectors[name] = [
            (s.step, select_positions(metrics.per_token_losses(load_model(s).eval(), examples), positions).numpy())
            for s in kept
        ]
        tokens[name] = [s.tokens_seen for s in kept]
    result = joint_pca(vectors)
    print(f"prose PCA explained {result.explained_variance_ratio}")
    for name in runs:
        turn = sharpest_turn(result.coords[name], tokens[name])
        print(f"  {name} prose sharpest turn at {tokens[name][turn] / 1e6:.2f}M tokens")


@torch.no_grad()
def heads_report(runs: dict) -> None:
    """Head scores on fresh probes (seed 99, as tests/test_shipped.py), the PCA turns, the repeated-token ablation."""
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)
    text = data.heldout_examples(16, 512, seed=99)[:, :128]
    for name, snaps in runs.items():
        model = load_model(snaps[-1]).eval()
        pm = metrics.prefix_matching_scores(model, repeated)
        prev = metrics.previous_token_scores(model, text)
        line = f"{name} final: prefix-matching per layer max {[round(float(x), 2) for x in pm.max(1).values]}"
        line += f" at {[int(x) for x in pm.argmax(1)]}; previous-token L0 max {float(prev[0].max()):.2f}"
        if model.cfg.smeared_keys:
            line += f"; sigma(alpha) {[round(float(a), 2) for a in torch.sigmoid(model.blocks[0].smear_alpha)]}"
        print(line)
    table = pca_table(runs)
    print(f"PCA explained {table.explained}")
    for name in runs:
        rows = [r for r in table.rows if r["run"] == name]
        xy = np.array([[r["pc1"], r["pc2"]] for r in rows])
        tokens = [r["tokens"] for r in rows]
        print(f"  {name} sharpest turn at {tokens[sharpest_turn(xy, tokens)] / 1e6:.2f}M tokens")
    if "attn2" not in runs:
        return
    model = load_model(runs["attn2"][-1]).eval()
    examples = data.heldout_examples(1024, ICL_LATE_TOKEN + 2, seed=99)
    for heads in ([], *[[(layer, h)] for layer in range(2) for h in range(4)]):
        rep = per_token_loss(run_ablated(model, repeated, heads), repeated)[:, 25:].mean().item()
        losses = torch.cat(
            [
                per_token_loss(run_ablated(model, examples[i : i + 128], heads), examples[i : i + 128])
                for i in range(0, len(examples), 128)
            ]
        )
        icl = metrics.mean_with_se((losses[:, ICL_LATE_TOKEN] - losses[:, ICL_EARLY_TOKEN]).double())
        print(f"  attn2 ablate {heads}: repeated second-half loss {rep:.2f}, ICL {icl.value:+.3f} ± {icl.se:.3f}")


if __name__ == "__main__":
    main()
