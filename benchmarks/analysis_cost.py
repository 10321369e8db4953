"""What the on-demand analyses cost, measured against icl_core.analysis.costs' estimates.

For the shipped attn1, attn2 and attn3 runs (their stored snapshots) and a wider random model (d_model 256,
8 heads: the ablation table and circuits only, it has no run), times each analysis a visitor can start on a run
that carries no precomputed results: the per-head ablation table, the phase-change attribution, the attribution
over training and the circuits over training (per snapshot), and prints measured / estimated. Also prints the
rate each analysis reaches on attn2 (what costs.*_RATE should hold) and the CPU reference of
bench.cpu_reference_ms, since absolute timings differ between machines.

Run: .venv/bin/python benchmarks/analysis_cost.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import cpu_reference_ms  # noqa: E402

from icl_core.analysis import attribution, costs, head_table, precompute  # noqa: E402
from icl_core.model.config import ModelConfig  # noqa: E402
from icl_core.model.transformer import AttnOnlyTransformer  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_run(run: str) -> list[tuple[str, str, float, float]]:
    """(run, analysis, measured s, estimated s) for each analysis on the shipped run's stored snapshots."""
    snaps = list_snapshots(ROOT / "checkpoints" / run)
    cfg, model = snaps[-1].model_config, load_model(snaps[-1])
    last = [s.step for s in snaps[-4:]]
    return [
        (
            run,
            "ablation table",
            timed(lambda: head_table.ablation_table(model, "zero")),
            costs.ablation_table_seconds(cfg),
        ),
        (
            run,
            "phase attribution",
            timed(lambda: attribution.phase_change_attribution(snaps)),
            costs.phase_attribution_seconds(cfg),
        ),
        (
            run,
            "attribution over training (4 snapshots)",
            timed(lambda: attribution.attribution_over_training(snaps, steps=last)),
            costs.attribution_over_training_seconds(cfg, 4),
        ),
        (
            run,
            "circuits over training (4 snapshots)",
            timed(lambda: precompute.circuits_rows(snaps[-4:])),
            costs.circuits_over_training_seconds(cfg, 4),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU reference: {cpu_reference_ms():.0f} ms; torch threads: {args.threads}")
    rows: list[tuple[str, str, float, float]] = []
    for run in ("attn1", "attn2", "attn3"):
        rows += measure_run(run)
    wide = ModelConfig(n_layers=2, n_heads=8, d_model=256, d_head=32, n_ctx=512)
    model = AttnOnlyTransformer(wide).eval()
    rows.append(
        (
            "wide 2L d256",
            "ablation table",
            timed(lambda: head_table.ablation_table(model, "zero")),
            costs.ablation_table_seconds(wide),
        )
    )
    print(f"{'model':<14} {'analysis':<42} {'measured':>9} {'estimate':>9} {'ratio':>6}")
    for run, what, measured, estimate in rows:
        print(f"{run:<14} {what:<42} {measured:9.2f} {estimate:9.2f} {measured / estimate:6.2f}")
    rates = {
        "ablation table": costs.ABLATION_TABLE_RATE,
        "phase attribution": costs.PHASE_ATTRIBUTION_RATE,
        "attribution over training (4 snapshots)": costs.OVER_TRAINING_RATE,
    }
    for run, what, measured, estimate in rows:
        if run == "attn2" and what in rates:
            print(f"attn2 {what}: fitted rate {rates[what] * estimate / measured:.3g} (stored {rates[what]:.3g})")
    ratios = [m / e for *_, m, e in rows if e > 0.5 and m > 0.05]  # attn1 has no phase change to attribute
    print(
        f"measured/estimate above 0.5 s: median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}-{max(ratios):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
