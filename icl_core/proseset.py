"""The second evaluation set: English prose the models never saw (`prose_set.npz`, shipped and hashed like
`eval_set.npz`), so every claim can be checked on text other than the Python code they were trained on.

Sources (prose that is not Python source, so never in the training split, which is `*.py` files only):
the free-software licence texts Debian ships in /usr/share/common-licenses (GPL, LGPL, GFDL, Apache, MPL,
Artistic, BSD, CC0; each permits verbatim copies) and the English text files of CPython's standard library
(IDLE's NEWS, README, HISTORY and TODO, its help page with the HTML tags removed, the PSF licence, the email
package's architecture notes). About 0.4 MB in all.

Overlap with the training text is removed: every byte covered by a 24-byte string that also occurs in the
training split is cut out, and windows are drawn only inside the stretches that remain (at least one window
long), so no window shares 24 consecutive bytes with anything the models trained on (tests/test_proseset.py
checks the shipped file against this machine's training text, and that the check catches a planted overlap).

Rebuild (only when the recipe changes; the stored prose metrics then have to be recomputed):
    python -m icl_core.proseset --write
"""

from __future__ import annotations

import functools
import hashlib
import html.parser
import io
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icl_core import evalset, stdlib_text

PROSE_SET_FILE = Path(__file__).with_name("prose_set.npz")
N_EXAMPLES = 2048  # windows; the ICL score's standard error is then about 0.06 nats (paired differences less)
EXAMPLE_LEN = 511  # bytes after the start token, as the code set (icl_core.evalset)
BUILD_SEED = 4321
OVERLAP_LEN = 24  # bytes: a shared string this long counts as overlap with the training text
LICENSES_DIR = Path("/usr/share/common-licenses")
LICENSES = ("GPL-3", "GPL-2", "LGPL-2.1", "LGPL-3", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "Artistic", "BSD", "CC0-1.0")
STDLIB_TEXTS = (
    "idlelib/NEWS.txt",
    "idlelib/NEWS2x.txt",
    "idlelib/README.txt",
    "idlelib/HISTORY.txt",
    "idlelib/TODO.txt",
    "idlelib/help.html",
    "LICENSE.txt",
    "email/architecture.rst",
)


@dataclass(frozen=True)
class ProseSet:
    examples: np.ndarray  # (N_EXAMPLES, EXAMPLE_LEN) uint8 windows, start token not stored
    info: dict  # sources, bytes kept and removed, the training text's hash, seed
    sha256: str  # of the file


@functools.lru_cache(maxsize=1)
def load(path: Path = PROSE_SET_FILE) -> ProseSet:
    raw = path.read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        return ProseSet(f["examples"], json.loads(str(f["info"])), hashlib.sha256(raw).hexdigest())


def stretches(ps: ProseSet) -> list[bytes]:
    """The prose the windows were cut from, pieced back together from the shipped windows alone (no source file
    is read): they are stored in the order of their starts, so a window that overlaps the one before it by at
    least OVERLAP_LEN bytes continues its stretch. A model with another tokenizer reads these in its own tokens."""
    out: list[bytes] = []
    current = b""
    prev = b""
    for row in ps.examples:
        window = row.tobytes()
        shift = _shift(prev, window)
        if shift is None:
            if current:
                out.append(current)
            current = window
        else:
            current += window[EXAMPLE_LEN - shift :]
        prev = window
    return [*out, current] if current else out


def _shift(prev: bytes, window: bytes) -> int | None:
    """How far `window` starts after `prev` when it continues it (the overlap at least OVERLAP_LEN), else None."""
    head = window[:OVERLAP_LEN]
    at = prev.find(head, 1)
    while 0 < at <= len(prev) - OVERLAP_LEN:
        if prev[at:] == window[: len(prev) - at]:
            return at
        at = prev.find(head, at + 1)
    return None


class _TextOnly(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(raw: bytes) -> bytes:
    parser = _TextOnly()
    parser.feed(raw.decode("utf-8", errors="replace"))
    return "".join(parser.parts).encode()


def source_texts() -> dict[str, bytes]:
    """Each source's bytes, by name (only the --write command and the tests call this)."""

    texts = {f"common-licenses/{name}": (LICENSES_DIR / name).read_bytes() for name in LICENSES}
    root = stdlib_text.stdlib_root()
    for rel in STDLIB_TEXTS:
        raw = (root / rel).read_bytes()
        texts[f"stdlib/{rel}"] = _html_text(raw) if rel.endswith(".html") else raw
    return texts


def ngram_hashes(text: np.ndarray, n: int = OVERLAP_LEN) -> np.ndarray:
    """A 64-bit polynomial hash of every n-byte substring (len(text) - n + 1 of them; collisions ~2^-64)."""
    if len(text) < n:
        return np.zeros(0, dtype=np.uint64)
    t = text.astype(np.uint64)
    h = np.zeros(len(text) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * np.uint64(1_000_003) + t[k : len(text) - n + 1 + k] + np.uint64(1)
    return h


def covered_by(text: np.ndarray, reference_hashes: np.ndarray, n: int = OVERLAP_LEN) -> np.ndarray:
    """Boolean mask of the bytes of `text` inside some n-byte string whose hash is in reference_hashes (sorted)."""
    h = ngram_hashes(text, n)
    hit = np.zeros(len(text), dtype=bool)
    if len(h) == 0 or len(reference_hashes) == 0:
        return hit
    idx = np.minimum(np.searchsorted(reference_hashes, h), len(reference_hashes) - 1)
    starts = np.flatnonzero(reference_hashes[idx] == h)
    # Mark [start, start + n) for every matching start: a difference array, then a running sum.
    marks = np.zeros(len(text) + 1, dtype=np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, starts + n, -1)
    return np.cumsum(marks[:-1]) > 0


def training_hashes() -> np.ndarray:

    return np.unique(ngram_hashes(stdlib_text.corpus("train")))  # sorted


def build() -> tuple[np.ndarray, dict]:
    texts = source_texts()
    joined = np.frombuffer(b"\n\n".join(texts.values()), dtype=np.uint8)
    removed = covered_by(joined, training_hashes())
    # Stretches of kept bytes at least one window long; windows start anywhere a whole window fits in one.
    keep = np.concatenate([[False], ~removed, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(keep))
    stretches = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= EXAMPLE_LEN]
    starts = np.concatenate([np.arange(a, b - EXAMPLE_LEN + 1) for a, b in stretches])
    rng = np.random.default_rng(BUILD_SEED)
    chosen = np.sort(rng.choice(starts, size=N_EXAMPLES, replace=False))
    examples = np.stack([joined[s : s + EXAMPLE_LEN] for s in chosen]).astype(np.uint8)

    info = {
        "python": platform.python_version(),
        "train_corpus_sha256": stdlib_text.corpus_sha256("train"),
        "seed": BUILD_SEED,
        "sources": {name: len(raw) for name, raw in texts.items()},
        "bytes": int(len(joined)),
        "bytes_removed_as_overlap": int(removed.sum()),
        "bytes_in_window_stretches": int(sum(b - a for a, b in stretches)),
        "overlap_len": OVERLAP_LEN,
        "recipe": "random windows inside stretches of the sources with no 24-byte string from the training split",
    }
    return examples, info


def write(path: Path = PROSE_SET_FILE) -> str:
    examples, info = build()
    evalset.save_set(path, info, examples=examples)
    load.cache_clear()
    return load(path).sha256


def main(argv: list[str] | None = None) -> int:
    return evalset.set_command(argv, "the shipped prose evaluation set", PROSE_SET_FILE, write, load)


if __name__ == "__main__":
    sys.exit(main())
