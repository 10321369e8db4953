"""The LLC at every snapshot of a run, and each head's refined LLC, stored beside the run
(<run>/analysis/llc.json, rllc.json) like the other slow analyses, and resumable: the file is rewritten
atomically after every snapshot, so a stopped or crashed computation loses at most the snapshot it was on.

Usage (nice: it shares the machine):
    nice python -m icl_core.analysis.llc_over_training checkpoints/attn2 [--heads] [--max-minutes M]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from icl_core.analysis import llc, precompute
from icl_core.heads import Head, head_name
from icl_core.storage.snapshots import SnapshotInfo, load_model, scan_snapshots

LLC_FILE, RLLC_FILE, PROSE_LLC_FILE = "llc", "rllc", "llc_prose"
LLCData = Literal["train", "prose"]  # the training corpus (the app's estimate) or the held-out prose (a check)
RLLC_TRACE_BLOCK = 10  # a refined LLC keeps its traces as means of blocks of this many steps (20 heads' worth)

Progress = Callable[[int, int], None]


def coarse_to_fine(n: int) -> list[int]:
    """0..n-1 ordered every 8th first, then every 4th, every 2nd, then the rest (the last one among the first):
    a computation stopped part-way (the refined LLC takes hours) still spans the whole of training."""
    order: dict[int, None] = {}  # insertion-ordered, without repeats
    for stride in (8, 4, 2, 1):
        for i in [*range(0, n, stride), *([n - 1] if stride == 8 and n else [])]:
            order.setdefault(i)
    return list(order)


def _load_partial(run_dir: Path, name: str, snaps: Sequence[SnapshotInfo], settings: llc.SGLDSettings) -> dict:
    """The estimates stored so far for these snapshots with these settings ({} when there are none)."""
    data = precompute.load(run_dir, name, snaps)
    if not isinstance(data, dict) or data.get("settings") != settings.to_dict():
        return {}
    estimates = data.get("estimates")
    return estimates if isinstance(estimates, dict) else {}


def _file_name(heads: bool, data_set: LLCData) -> str:
    """Where an estimate of this kind is stored; the refined LLC is estimated on the training corpus only."""
    if heads and data_set != "train":
        raise ValueError("the refined LLC is estimated on the training corpus only")
    return RLLC_FILE if heads else LLC_FILE if data_set == "train" else PROSE_LLC_FILE


def estimates_path(run_dir: Path, heads: bool = False, data_set: LLCData = "train") -> Path:
    return precompute.analysis_path(run_dir, _file_name(heads, data_set))


def stored_llc(run_dir: Path, snaps: Sequence[SnapshotInfo], data_set: LLCData = "train") -> dict[int, llc.LLCEstimate]:
    """Every stored LLC estimate of these snapshots, by step (a run part-way through has some of them)."""
    data = precompute.load(run_dir, _file_name(False, data_set), snaps)
    if not isinstance(data, dict) or not isinstance(data.get("estimates"), dict):
        return {}
    return {int(step): llc.LLCEstimate.from_dict(d) for step, d in data["estimates"].items()}


def stored_rllc(run_dir: Path, snaps: Sequence[SnapshotInfo]) -> dict[int, dict[str, llc.LLCEstimate]]:
    """Every stored refined LLC: step -> head name -> estimate (traces as block means)."""
    data = precompute.load(run_dir, RLLC_FILE, snaps)
    if not isinstance(data, dict) or not isinstance(data.get("estimates"), dict):
        return {}
    return {
        int(step): {head: llc.LLCEstimate.from_dict(d) for head, d in per_head.items()}
        for step, per_head in data["estimates"].items()
    }


def _rounded(d: dict[str, Any], block: int = 1) -> dict[str, Any]:
    """An estimate's dict with its traces rounded (and averaged over blocks of steps): a file a repo can carry."""
    out = dict(d)

    def squeeze(trace: list[float]) -> list[float]:
        arr = np.asarray(trace)
        if block > 1:
            arr = arr[: len(arr) // block * block].reshape(-1, block).mean(axis=1)
        return [round(float(x), 5) for x in arr]

    out["loss_trace"] = [squeeze(t) for t in d["loss_trace"]]
    out["init_trace"] = squeeze(d["init_trace"])
    return out


def llc_over_training(
    run_dir: Path,
    settings: llc.SGLDSettings = llc.DEFAULT_SETTINGS,
    heads: bool = False,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    data_set: LLCData = "train",
    stride: int = 1,
) -> bool:
    """Estimate what is missing (the LLC, or with `heads` every head's refined LLC) at every `stride`-th snapshot
    (and the last), saving after each estimate; True when each of them has its estimate. Stops cleanly
    (resumably) as soon as `should_stop()` says so between two estimates. `data_set` "prose" estimates on the
    held-out prose instead of the training corpus (a check: the estimate depends on the data)."""
    stop = should_stop or (lambda: False)
    snaps = scan_snapshots(run_dir).snapshots  # the usable ones, as the pages see the run (a damaged one left out)
    name = _file_name(heads, data_set)
    estimates = _load_partial(run_dir, name, snaps, settings)
    cfg = snaps[-1].model_config
    if data_set == "prose":
        windows = llc.prose_windows(cfg.n_ctx, settings.n_windows)
    else:
        tokenizer = load_model(snaps[-1]).require_tokenizer()
        windows = llc.llc_windows(cfg.n_ctx, settings.n_windows, tokenizer=tokenizer)
    all_heads: list[Head] = [(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    chosen = sorted({*range(0, len(snaps), stride), len(snaps) - 1})
    for done_count, i in enumerate(coarse_to_fine(len(chosen)), start=1):
        snap = snaps[chosen[i]]
        if stop():
            return False
        key = str(snap.step)
        model = None
        if heads:
            done = estimates.setdefault(key, {})
            for head in all_heads:
                if head_name(head) in done:
                    continue
                model = model or load_model(snap)
                est = llc.estimate_llc(model, windows, settings, llc.head_mask(model, head))
                done[head_name(head)] = _rounded(est.to_dict(), RLLC_TRACE_BLOCK)
                precompute.save(run_dir, name, snaps, {"settings": settings.to_dict(), "estimates": estimates})
                if stop():
                    return False
        elif key not in estimates:
            est = llc.estimate_llc(load_model(snap), windows, settings)
            estimates[key] = _rounded(est.to_dict(), 1 if data_set == "train" else RLLC_TRACE_BLOCK)
            precompute.save(run_dir, name, snaps, {"settings": settings.to_dict(), "estimates": estimates})
        if progress is not None:
            progress(done_count, len(chosen))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--heads", action="store_true", help="each head's refined LLC instead of the LLC")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (resumably) after this long")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prose", action="store_true", help="estimate on the held-out prose (a check), not the corpus")
    parser.add_argument("--stride", type=int, default=1, help="every this many-th snapshot (and the last)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    deadline = None if args.max_minutes is None else time.monotonic() + 60 * args.max_minutes
    complete = True
    for run_dir in args.runs:
        started = time.perf_counter()

        def report(done: int, total: int, run_dir: Path = run_dir, started: float = started) -> None:
            print(f"{run_dir}: {done}/{total} snapshots ({time.perf_counter() - started:.0f} s)", flush=True)

        finished = llc_over_training(
            run_dir,
            heads=args.heads,
            progress=report,
            data_set="prose" if args.prose else "train",
            stride=args.stride,
            should_stop=lambda: deadline is not None and time.monotonic() > deadline,
        )
        complete = complete and finished
        print(f"{run_dir}: {'complete' if finished else 'stopped, resumable'}", flush=True)
    return 0 if complete else 3


if __name__ == "__main__":
    sys.exit(main())
