"""What the LLC costs (icl_core.analysis.llc with the app's settings), beside the estimate the app states before
it starts one (icl_core.analysis.costs.llc_seconds), on two cores: one snapshot of each shipped run, then the
whole of a 2-layer run extrapolated from it (issue 36's target: all 68 snapshots of a 2-layer run < 20 min).

    python benchmarks/llc_cost.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cpu_reference_ms  # noqa: E402

from icl_core.analysis import costs, llc  # noqa: E402
from icl_core.storage.runs import SHIPPED_DIR  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model  # noqa: E402


def main() -> int:
    torch.set_num_threads(2)
    reference = cpu_reference_ms()
    print(f"CPU reference (bench.cpu_reference_ms): {reference:.0f} ms")
    s = llc.DEFAULT_SETTINGS
    print(f"settings: {s.n_chains} chains x {s.n_steps} steps, batch {s.batch_size}")
    for name in ("attn1", "attn2", "attn3"):
        snaps = list_snapshots(SHIPPED_DIR / name)
        model = load_model(snaps[-1])
        windows = llc.llc_windows(snaps[-1].model_config.n_ctx, s.n_windows)
        started = time.perf_counter()
        llc.estimate_llc(model, windows, s)
        seconds = time.perf_counter() - started
        stated = costs.llc_seconds(snaps[-1].model_config, 1, s.n_chains, s.n_steps, s.batch_size)
        whole = seconds * len(snaps)
        print(
            f"{name}: one snapshot {seconds:.1f} s (stated {stated:.1f} s, ratio {seconds / stated:.2f}); "
            f"all {len(snaps)} snapshots ≈ {whole / 60:.1f} min; per reference {seconds * 1000 / reference:.0f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
