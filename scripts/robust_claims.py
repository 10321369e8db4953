"""The README's claims re-measured so that no verdict hangs on one probe draw or one snapshot (issue 36):

- each run's phase-change window over the app's probe and 5 other draws (icl_core.analysis.robustness);
- every "across the window", "final" and "plateau" figure with each end the mean of three neighbouring
  snapshots, paired example by example on 2,048 examples of each held-out set (code, prose);
- the loss bump inside each window against the neighbour jitter.

    python scripts/robust_claims.py            (about 15 min on two cores; prints markdown for the README)
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icl_core.analysis import claims, metrics, robustness  # noqa: E402
from icl_core.analysis.phase import phase_window  # noqa: E402
from icl_core.analysis.summary import fmt_tokens  # noqa: E402
from icl_core.storage.runs import SHIPPED_DIR  # noqa: E402
from icl_core.storage.snapshots import SnapshotInfo, list_snapshots, load_model  # noqa: E402

RUNS = ("attn1", "attn2", "attn3", "attn2-smeared", "attn1-smeared")
SETS = {"code": "icl_score", "prose": "icl_score_prose"}
N_EXAMPLES = 2048
PLATEAU_FROM_TOKENS = 24_600_000  # where the README's plateau figures start


@functools.cache
def snaps_of(run: str) -> tuple[SnapshotInfo, ...]:
    return tuple(list_snapshots(SHIPPED_DIR / run))


@functools.cache
def tokens_of(key: str) -> torch.Tensor:
    return claims.eval_tokens(key, N_EXAMPLES)


@functools.cache
def per_example(run: str, step: int, key: str) -> torch.Tensor:
    snap = next(s for s in snaps_of(run) if s.step == step)
    return metrics.per_example_icl(load_model(snap).eval(), tokens_of(key))


def three(run: str, step: int, key: str) -> torch.Tensor:
    return torch.stack([per_example(run, s.step, key) for s in robustness.neighbours(snaps_of(run), step)]).mean(0)


def single(run: str, step: int, key: str) -> torch.Tensor:
    return per_example(run, step, key)


def fmt(score: metrics.ICLScore) -> str:
    return f"{score.value:+.3f} ± {score.se:.3f} ({abs(score.value) / score.se:.1f} s.e.)"


def both(label: str, a: tuple[str, int], b: tuple[str, int]) -> None:
    """b − a on both sets, single snapshots and 3-snapshot means."""
    cells = []
    for name, key in SETS.items():
        one = metrics.mean_with_se(single(*b, key) - single(*a, key))
        avg = metrics.mean_with_se(three(*b, key) - three(*a, key))
        cells.append(f"{name}: {fmt(one)} · 3-snapshot {fmt(avg)}")
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    torch.set_num_threads(2)
    print("## Windows over probe draws (the app's probe + 5 others)")
    windows = {}
    for run in RUNS:
        snaps = snaps_of(run)
        scores = robustness.prefix_matching_over_draws(snaps)
        found = robustness.windows_over_draws(snaps, scores)
        spread = robustness.window_spread(snaps, found)
        windows[run] = phase_window(snaps)
        if spread.start is None or spread.end is None or spread.decades is None:
            print(f"- {run}: no window in any of {spread.n_draws} draws")
            continue
        print(
            f"- {run}: {spread.n_found}/{spread.n_draws} draws find one; start {fmt_tokens(spread.start[0])}–"
            f"{fmt_tokens(spread.start[1])}, end {fmt_tokens(spread.end[0])}–{fmt_tokens(spread.end[1])}, width "
            f"{spread.decades[0]:.2f}–{spread.decades[1]:.2f} decades", flush=True
        )  # fmt: skip
    w2 = windows["attn2"]
    assert w2 is not None
    print("\n## Across attn2's window (paired, 2,048 examples; each end single / mean of 3 neighbours)")
    for run in RUNS:
        both(f"{run} across attn2's window", (run, w2.start_step), (run, w2.end_step))
    print("\n## Final ICL: gap to attn1 (paired)")
    for run in RUNS[1:]:
        last = snaps_of(run)[-1].step
        both(f"{run} final − attn1 final", ("attn1", snaps_of("attn1")[-1].step), (run, last))
    print("\n## Final ICL (3-snapshot mean of the stored scores)")
    for run in RUNS:
        snaps = snaps_of(run)
        cells = [f"{name} {robustness.mean3(snaps, snaps[-1].step, key).value:+.3f} ± "
                 f"{robustness.mean3(snaps, snaps[-1].step, key).se:.3f}" for name, key in SETS.items()]  # fmt: skip
        print(f"- {run}: " + "; ".join(cells))
    print("\n## Over the plateau (from 24.6M tokens to the end)")
    for run in ("attn2", "attn3", "attn2-smeared"):
        snaps = snaps_of(run)
        start = claims.nearest(list(snaps), PLATEAU_FROM_TOKENS).step
        both(f"{run} plateau", (run, start), (run, snaps[-1].step))
    print("\n## Loss bump inside the window (held-out loss above a quadratic fit in log tokens, ±0.5 decades)")
    for run in RUNS:
        window = windows[run]
        bump = robustness.loss_bump(list(snaps_of(run)), window) if window else None
        if bump is None:
            print(f"- {run}: no window" if window is None else f"- {run}: too few snapshots around the window")
            continue
        tokens = next(s.tokens_seen for s in snaps_of(run) if s.step == bump.at_step)
        print(f"- {run}: {bump.height:+.3f} nats at {fmt_tokens(tokens)} tokens vs jitter {bump.jitter:.3f}: "
              f"{'shows' if bump.shows else 'does not show'} (> 3x jitter)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
