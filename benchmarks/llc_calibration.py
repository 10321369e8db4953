"""Calibrate the LLC's SGLD settings (icl_core.analysis.llc) as devinterp's guide asks: sweep the step size
epsilon, the inverse temperature n_beta and the localization gamma on snapshots of attn2 before, inside and after
its phase change, and keep the settings whose loss traces level off without diverging.

A setting passes on a snapshot when every chain stays finite and levels off: its excess loss (over the loss at
w0 on the same batch) is the same in both halves of the chain after its first tenth (levels_off).
The rule picks, among settings that pass on all three snapshots, give a positive LLC on the two trained ones and
stay finite with the sweep's next, ~3x larger step size (a margin: the chosen settings then run on hundreds of
snapshots), the one whose chains agree best: the smallest spread between chains relative to the mean, at the
worse of the two trained snapshots. epsilon * gamma >= 2 is skipped: the localization step alone overshoots.

    python benchmarks/llc_calibration.py [--run checkpoints/attn2] [--chains 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icl_core.analysis import llc  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model  # noqa: E402

EPSILONS = (3e-5, 1e-4, 3e-4)
N_BETAS = (300.0, 1000.0, 3000.0)
GAMMAS = (3000.0, 10_000.0)


BLOCK = 5  # SGLD steps per block: neighbouring steps are correlated, block means much less so


def levels_off(excess: np.ndarray) -> bool:
    """The chain's excess loss (over w0's, batch by batch) no longer drifts: after its first tenth, the means of
    its two halves agree within 10% of its mean, or within three standard errors of their difference where the
    noise is larger. The standard errors come from means of BLOCK steps (neighbouring steps are correlated) over
    the whole stretch: every chain visits the same batches, and some batches raise every chain's excess alike."""
    settled = excess[len(excess) // 10 :]
    n = len(settled) // (2 * BLOCK) * 2 * BLOCK
    blocks = settled[len(settled) - n :].reshape(-1, BLOCK).mean(axis=1)
    first, second = blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]
    noise = 3 * blocks.std(ddof=1) * np.sqrt(2 / len(first))
    return abs(float(second.mean() - first.mean())) < max(0.1 * abs(float(excess.mean())), noise)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="checkpoints/attn2")
    parser.add_argument("--chains", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    snaps = list_snapshots(Path(args.run))
    picked = [snaps[0], next(s for s in snaps if s.step >= 2000), snaps[-1]]
    base = dataclasses.replace(llc.SGLDSettings(), n_chains=args.chains)
    windows = llc.llc_windows(snaps[-1].model_config.n_ctx, base.n_windows)
    models = {s.step: load_model(s) for s in picked}
    print(f"{args.run}: snapshots at steps {[s.step for s in picked]}, {args.chains} chains x {base.n_steps} steps")
    print("epsilon  n_beta  gamma | " + " | ".join(f"step {s.step}: LLC ± sd, levels off" for s in picked))
    results: dict[tuple[float, float, float], tuple[bool, bool, float]] = {}  # (passes, finite, worst spread)
    started = time.perf_counter()
    for eps, nb, gamma in itertools.product(EPSILONS, N_BETAS, GAMMAS):
        if eps * gamma >= 2:
            print(f"{eps:7.0e} {nb:7.0f} {gamma:6.0f} | skipped: epsilon x gamma >= 2")
            continue
        settings = dataclasses.replace(base, epsilon=eps, n_beta=nb, gamma=gamma)
        cells, ok, estimates, all_finite = [], True, [], True
        for snap in picked:
            est = llc.estimate_llc(models[snap.step], windows, settings)
            finite = all(len(t) == settings.n_steps for t in est.loss_trace) and np.isfinite(est.mean)
            level = finite and all(levels_off(est.excess_trace(c)) for c in range(settings.n_chains))
            ok = ok and level
            all_finite = all_finite and finite
            estimates.append(est)
            cells.append(f"{est.mean:8.1f} ± {est.std:6.1f} {'yes' if level else 'NO' if finite else 'diverged'}")
        positive = all(e.mean > 0 for e in estimates[1:])
        worst = max(e.std / e.mean for e in estimates[1:]) if positive else float("inf")
        results[(eps, nb, gamma)] = (ok and positive, all_finite, worst)
        print(f"{eps:7.0e} {nb:7.0f} {gamma:6.0f} | " + " | ".join(cells), flush=True)
    print(f"sweep: {time.perf_counter() - started:.0f} s")

    def margin(eps: float, nb: float, gamma: float) -> bool:
        """The next larger step size in the sweep stays finite on all three snapshots (skipped: it would not)."""
        larger = [e for e in EPSILONS if e > eps]
        return bool(larger) and results.get((larger[0], nb, gamma), (False, False, 0.0))[1]

    passing = [(r[2], k) for k, r in results.items() if r[0] and margin(*k)]
    if not passing:
        print("no setting passes")
        return 1
    spread, (eps, nb, gamma) = min(passing)
    print(f"chosen: epsilon {eps:g}, n_beta {nb:g}, gamma {gamma:g} (chains' relative spread {spread:.3f} at the "
          f"worse trained snapshot); {len(passing)} settings passed with a 3x step-size margin")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
