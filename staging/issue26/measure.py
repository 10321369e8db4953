"""Every figure issue 26's tests and README read, on both evaluation sets, for the finished staging runs.

Run: PYTHONPATH=. .venv/bin/python staging/issue26/measure.py [RUNS_DIR]
(default staging/issue26/runs; checkpoints/ once shipped)
Needs prose scores in every snapshot (python -m icl_core.analysis.evaluation RUN_DIR).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from icl_core.analysis import claims
from icl_core.analysis.phase import best_induction_head, early_stage_end, phase_window
from icl_core.storage.snapshots import list_snapshots, load_model

KEYS = claims.ICL_KEYS
N_PAIRED = 2048  # examples for the paired figures (the prose set has 2,048)


def run_report(name: str, snaps: list) -> None:
    window = phase_window(snaps)
    print(
        f"{name}: {len(snaps)} snapshots, {snaps[-1].tokens_seen / 1e6:.1f}M tokens; early stage ends at "
        f"{early_stage_end(snaps)} tokens; best induction head {best_induction_head(snaps[-1])}"
    )
    for key in KEYS:
        t, v, se = claims.icl_series(snaps, key)
        if not len(v):
            print(f"  {key}: not stored")
            continue
        jitter, mean_se = claims.neighbour_jitter(snaps, key)
        print(
            f"  {key}: step0 {v[0]:+.3f} ± {se[0]:.3f}; final {v[-1]:+.3f} ± {se[-1]:.3f}; "
            f"neighbour jitter (last third) {jitter:.3f} rms vs s.e. {mean_se:.3f}"
        )
        if window is not None:
            share = claims.fall_inside_window(snaps, window, key)
            print(f"    fall inside the window (from the 1M-token level): {share:.0%}")
    if window is not None:
        s, e = (claims._at(snaps, x).tokens_seen for x in (window.start_step, window.end_step))
        print(
            f"  window steps {window.start_step}-{window.end_step} = {s / 1e6:.2f}M-{e / 1e6:.2f}M tokens, "
            f"{claims.window_decades(snaps, window):.2f} decades ({window.signal})"
        )
    print(f"  induction change over the linear last third: {claims.induction_change_in_tail(snaps)}")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("staging/issue26/runs")
    torch.set_num_threads(1)
    # In staging only the finished runs of the five to ship (a .done marker); every run in checkpoints/.
    shipping = ("attn1", "attn1-smeared", "attn2", "attn2-smeared", "attn3")
    runs = {
        p.name: list_snapshots(p)
        for p in sorted(root.iterdir())
        if (p / "run.json").exists() and ((p / ".done").exists() and p.name in shipping or root.name == "checkpoints")
    }
    for name, snaps in runs.items():
        run_report(name, snaps)
    if "attn2" not in runs or phase_window(runs["attn2"]) is None:
        return
    window = phase_window(runs["attn2"])
    for key in KEYS:
        tokens = claims.eval_tokens(key, N_PAIRED)
        for name, snaps in runs.items():
            start = claims.nearest(snaps, claims._at(runs["attn2"], window.start_step).tokens_seen)
            end = claims.nearest(snaps, claims._at(runs["attn2"], window.end_step).tokens_seen)
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


if __name__ == "__main__":
    main()
