"""The training text: the Python standard library's source (present on every machine, written by none of us),
split into train / held-out by a hash of each file's path, so the split is deterministic."""

from __future__ import annotations

import functools
import hashlib
import sysconfig
from pathlib import Path

import numpy as np

_SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
HELD_OUT_FRACTION_PERCENT = 10


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files() -> list[Path]:
    root = stdlib_root()
    files = [p for p in root.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(root).parts[:-1]))]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _is_held_out(rel_path: str) -> bool:
    digest = hashlib.sha256(rel_path.encode()).digest()
    return digest[0] * 100 // 256 < HELD_OUT_FRACTION_PERCENT


@functools.lru_cache(maxsize=2)
def corpus(split: str) -> np.ndarray:
    """All bytes of the split ('train' or 'heldout') as one uint8 array, files separated by blank lines."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    root = stdlib_root()
    chunks = []
    for path in _stdlib_files():
        rel = path.relative_to(root).as_posix()
        if _is_held_out(rel) == (split == "heldout"):
            chunks.append(path.read_bytes() + b"\n\n")
    return np.frombuffer(b"".join(chunks), dtype=np.uint8)


def corpus_sha256(split: str) -> str:
    """Hash of a split's bytes: runs record the training text's, so the app can say when this machine's differs."""
    return hashlib.sha256(corpus(split).tobytes()).hexdigest()
