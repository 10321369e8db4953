"""Could a model's held-out text be in its training data? The loss on our held-out Python against the loss on Python
written after the model's training data was collected (issue 33: Pythia trained on the Pile, which holds GitHub
code, so the standard library's held-out files may be in it).

The later text is CPython 3.11's new modules, on every machine with Python ≥ 3.11: `tomllib` (tomli, first
published in 2021) and asyncio's `taskgroups` and `timeouts` (2022), after the Pile's 2020 collection (Gao et al.
2020). A model that memorised our held-out set scores it much better than code it cannot have seen. The two sets are
different code, so a gap is a reason for doubt, not a proof; the repeated-random-token ICL score
(data.repeated_icl_examples) is the measure no training set can hold.

Run: python -m icl_core.analysis.contamination RUN_DIR [RUN_DIR ...]   (the last snapshot of each run)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from icl_core import data
from icl_core.analysis import metrics
from icl_core.model.family import Model
from icl_core.stdlib_text import stdlib_root

# New in CPython 3.11 (its "What's New"), written after 2020.
POST_PILE_FILES = ("tomllib/_parser.py", "tomllib/_re.py", "asyncio/taskgroups.py", "asyncio/timeouts.py")
WINDOW_TOKENS = 256
N_WINDOWS = 512  # 64 left the gap's sign to the draw: 0.1-0.2 nats apart between draws on attn2
SEED = 2020


@dataclass(frozen=True)
class Contamination:
    heldout: metrics.ICLScore  # mean per-window loss on our held-out set (value, se, n windows)
    later: metrics.ICLScore  # the same on the post-2020 files
    gap: float  # held-out minus later: far below 0 is a reason to doubt the held-out scores
    gap_se: float


def later_text() -> str | None:
    """The post-2020 files' text, or None where this Python has none of them (before 3.11)."""
    found = [stdlib_root() / f for f in POST_PILE_FILES if (stdlib_root() / f).is_file()]
    return "\n\n".join(p.read_text(encoding="utf-8") for p in found) or None


def _window_means(model: Model, windows: torch.Tensor) -> metrics.ICLScore:
    """Mean next-token loss of each window, averaged over the windows with its standard error."""
    return metrics.mean_with_se(metrics.per_token_losses(model, windows).mean(dim=1))


@torch.no_grad()
def contamination_check(model: Model, n_windows: int = N_WINDOWS, seed: int = SEED) -> Contamination | None:
    """The two sets' losses on n_windows fixed windows of WINDOW_TOKENS tokens each, in the model's own tokens (the
    held-out ones as every evaluation draws them: data.heldout_examples), or None where this Python lacks the
    post-2020 files."""
    text = later_text()
    if text is None:
        return None
    tokenizer = model.require_tokenizer()
    length = min(WINDOW_TOKENS, model.cfg.n_ctx)
    later_ids = tokenizer.encode(text).tokens[1:].numpy().astype(np.int64)
    if len(later_ids) <= length:
        raise ValueError(f"the post-2020 text is {len(later_ids)} tokens, shorter than one window of {length}")
    gen = torch.Generator().manual_seed(seed)
    heldout = _window_means(model, data.heldout_examples(n_windows, length, seed, tokenizer))
    later = _window_means(model, data.sample_batch(later_ids, n_windows, length, gen, bos=tokenizer.bos))
    return Contamination(heldout, later, heldout.value - later.value, float(np.hypot(heldout.se, later.se)))


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    from icl_core.storage.snapshots import list_snapshots, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for run in args.runs:
        snap = list_snapshots(run)[-1]
        c = contamination_check(load_model(snap))
        if c is None:
            print(f"{run.name}: this Python has none of {', '.join(POST_PILE_FILES)}")
            continue
        print(
            f"{run.name} step {snap.step}: held-out {c.heldout.value:.3f} ± {c.heldout.se:.3f}, post-2020 "
            f"{c.later.value:.3f} ± {c.later.se:.3f} nats a token ({c.heldout.n_examples} windows each); "
            f"gap {c.gap:+.3f} ± {c.gap_se:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
