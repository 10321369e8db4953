"""The fixed evaluation set shipped with the repository (`eval_set.npz`).

Every held-out number the app stores or shows (ICL score, loss curve, PCA vector, probes) is computed
on these tokens, not on whatever standard library the running interpreter has: a Space or a laptop
with another Python evaluates on the same text as the stored metrics. Training text still comes from
the local stdlib (stdlib_text.corpus); runs record its hash so the app can say when it differs.

Rebuild (only when the set's recipe changes; every stored metric then has to be recomputed):
    python -m icl_core.evalset --write
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icl_core import stdlib_text

EVAL_SET_FILE = Path(__file__).with_name("eval_set.npz")
N_EXAMPLES = 8192  # enough that the ICL score's standard error is about 0.03 nats (per-example sd ~2.7)
EXAMPLE_LEN = 511  # bytes after the start token: a full 512-token context
BUILD_SEED = 1234
N_PROBE_TOKENS = 60  # the random-token pool: the middle of the byte frequency ranking
PROBE_SKIP_TOP = 5  # ... skipping the most common bytes (Olsson et al. exclude the most common tokens)


@dataclass(frozen=True)
class EvalSet:
    examples: np.ndarray  # (N_EXAMPLES, EXAMPLE_LEN) uint8: held-out windows, start token not stored
    probe_pool: np.ndarray  # (N_PROBE_TOKENS,) int64: tokens the random-repeat probes draw from
    info: dict  # how it was built: Python version, stdlib corpus hash, seed
    sha256: str  # of the file: recorded in every run, compared by the app


@functools.lru_cache(maxsize=1)
def load(path: Path = EVAL_SET_FILE) -> EvalSet:
    raw = path.read_bytes()  # read once: hashed, then parsed from memory
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        return EvalSet(
            examples=f["examples"],
            probe_pool=f["probe_pool"].astype(np.int64),
            info=json.loads(str(f["info"])),
            sha256=hashlib.sha256(raw).hexdigest(),
        )


def build() -> tuple[np.ndarray, np.ndarray, dict]:
    """The set drawn from this interpreter's stdlib held-out split (only the --write command calls this)."""
    import torch

    heldout = stdlib_text.corpus("heldout")
    gen = torch.Generator().manual_seed(BUILD_SEED)
    starts = torch.randint(0, len(heldout) - EXAMPLE_LEN, (N_EXAMPLES,), generator=gen).numpy()
    examples = np.stack([heldout[s : s + EXAMPLE_LEN] for s in starts]).astype(np.uint8)
    counts = np.bincount(stdlib_text.corpus("train"), minlength=256)
    ranked = [int(t) for t in np.argsort(-counts, kind="stable") if counts[t] > 0]
    pool = np.asarray(ranked[PROBE_SKIP_TOP : PROBE_SKIP_TOP + N_PROBE_TOKENS], dtype=np.int16)
    info = {
        "python": platform.python_version(),
        "heldout_corpus_sha256": stdlib_text.corpus_sha256("heldout"),
        "seed": BUILD_SEED,
        "recipe": "windows of the stdlib held-out split; probe pool = train byte ranks 5..64",
    }
    return examples, pool, info


def save_set(path: Path, info: dict, **arrays: np.ndarray) -> None:
    """A shipped evaluation set's file, written atomically: its arrays and how it was built (JSON)."""
    tmp = path.with_suffix(".tmp.npz")
    contents: dict[str, Any] = {**arrays, "info": np.array(json.dumps(info))}
    np.savez_compressed(tmp, **contents)
    tmp.replace(path)


def set_command(
    argv: list[str] | None, what: str, path: Path, write: Callable[[], object], show: Callable[[], Any]
) -> int:
    """The command line of a shipped set: show it (hash, shape, how it was built), or rebuild it with --write."""
    parser = argparse.ArgumentParser(description=f"Show or rebuild {what}.")
    parser.add_argument("--write", action="store_true", help=f"rebuild {path.name} on this machine")
    if parser.parse_args(argv).write:
        write()
    ev = show()
    print(json.dumps({"sha256": ev.sha256, "examples": list(ev.examples.shape), **ev.info}, indent=1))
    return 0


def write(path: Path = EVAL_SET_FILE) -> str:
    examples, pool, info = build()
    save_set(path, info, examples=examples, probe_pool=pool)
    load.cache_clear()
    return load(path).sha256


def main(argv: list[str] | None = None) -> int:
    return set_command(argv, "the shipped evaluation set", EVAL_SET_FILE, write, load)


if __name__ == "__main__":
    sys.exit(main())
