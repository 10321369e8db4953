"""Is the early ICL swing positional? For the shipped 1- and 2-layer runs' early snapshots, on both held-out
sets: the ICL score, and the same with every position given position 50's embedding (positions removed: what
stays is the context itself). Also how much the position-only direct path (W_pos[p] @ W_U alone) moves the
log-probabilities between positions 50 and 500. The README's and the tour's account of the early stage.

Run: .venv/bin/python scripts/probe_early_swing.py [--examples 512] [--runs-dir checkpoints]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from icl_core import data  # noqa: E402
from icl_core.analysis.metrics import exact_icl_score, icl_score_without_positions  # noqa: E402
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=512, help="code examples (the prose set has 2,048)")
    parser.add_argument("--runs-dir", type=Path, default=Path("checkpoints"))
    parser.add_argument("--max-tokens", type=int, default=400_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {
        "code": data.heldout_examples(args.examples, ICL_LATE_TOKEN + 2, seed=99),
        "prose": data.prose_examples(ICL_LATE_TOKEN + 2)[: args.examples],
    }
    for run, (name, tokens) in ((r, s) for r in ("attn1", "attn2") for s in sets.items()):
        print(f"{run}, {name}")
        for snap in list_snapshots(args.runs_dir / run):
            if snap.tokens_seen > args.max_tokens:
                break
            model = load_model(snap).eval()
            with torch.no_grad():
                plain = exact_icl_score(model, tokens)
                flat = icl_score_without_positions(model, tokens)
                # The direct path's log-partition at each position: how much the position alone shifts every logit.
                direct = torch.log_softmax(model.W_pos @ model.W_U, dim=-1)
                shift = (direct[ICL_LATE_TOKEN] - direct[ICL_EARLY_TOKEN]).abs().mean()
            print(
                f"  tokens {snap.tokens_seen:>9,}  ICL {plain.value:+.3f} ± {plain.se:.3f}   positions removed "
                f"{flat.value:+.3f} ± {flat.se:.3f}   |direct-path log-prob change 50->500| {shift:.3f}"
            )


if __name__ == "__main__":
    main()
