"""Issue 26 probe: is the early ICL swing positional? For the shipped runs' early snapshots, the ICL score as
stored, and with every position given position 50's embedding (positions removed: what stays is the context
itself). Also the loss at positions 50 and 500 of the position-only direct path (W_pos[p] @ W_U alone).

Run: .venv/bin/python staging/issue26/probe_early_swing.py [--examples 1024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from icl_core import data  # noqa: E402
from icl_core.analysis.metrics import exact_icl_score  # noqa: E402
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=400_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokens = data.heldout_examples(args.examples, ICL_LATE_TOKEN + 2, seed=99)
    for run in ("attn1", "attn2"):
        print(run)
        for snap in list_snapshots(Path("checkpoints") / run):
            if snap.tokens_seen > args.max_tokens:
                break
            model = load_model(snap).eval()
            with torch.no_grad():
                plain = exact_icl_score(model, tokens)
                w_pos = model.W_pos.clone()
                model.W_pos.copy_(w_pos[ICL_EARLY_TOKEN].expand_as(w_pos))
                flat = exact_icl_score(model, tokens)
                model.W_pos.copy_(w_pos)
                # The direct path's log-partition at each position: how much the position alone shifts every logit.
                direct = torch.log_softmax(w_pos @ model.W_U, dim=-1)
                shift = (direct[ICL_LATE_TOKEN] - direct[ICL_EARLY_TOKEN]).abs().mean()
            print(
                f"  tokens {snap.tokens_seen:>9,}  ICL {plain.value:+.3f} ± {plain.se:.3f}   positions removed "
                f"{flat.value:+.3f} ± {flat.se:.3f}   |direct-path log-prob change 50->500| {shift:.3f}"
            )


if __name__ == "__main__":
    main()
