"""The prose evaluation set: shipped, hashed, and sharing no 24-byte string with the training text."""

from __future__ import annotations

import numpy as np
import pytest

from icl_core import evalset, proseset, stdlib_text


@pytest.fixture(scope="module")
def train_hashes() -> np.ndarray:
    return proseset.training_hashes()


def test_the_overlap_mask_marks_exactly_the_shared_strings() -> None:
    reference = np.frombuffer(b"the quick brown fox jumps over the lazy dog", dtype=np.uint8)
    text = np.frombuffer(b"AAAA" + b"quick brown fox" + b"BBBBBB", dtype=np.uint8)
    mask = proseset.covered_by(text, np.unique(proseset.ngram_hashes(reference, 8)), 8)
    assert mask.tolist() == [False] * 4 + [True] * 15 + [False] * 6


def test_no_prose_window_shares_24_bytes_with_the_training_text(train_hashes: np.ndarray) -> None:
    ps = proseset.load()
    if ps.info["train_corpus_sha256"] != stdlib_text.corpus_sha256("train"):
        pytest.skip("this machine's standard library differs from the one the prose set was checked against")
    assert ps.examples.shape == (proseset.N_EXAMPLES, proseset.EXAMPLE_LEN)
    hits = [i for i, w in enumerate(ps.examples) if proseset.covered_by(w, train_hashes).any()]
    assert hits == [], f"{len(hits)} windows overlap the training text"


def test_the_check_catches_a_planted_overlap(train_hashes: np.ndarray) -> None:
    window = proseset.load().examples[0].copy()
    train = stdlib_text.corpus("train")
    window[100:124] = train[5000:5024]  # 24 bytes of the training text
    mask = proseset.covered_by(window, train_hashes)
    assert mask[100:124].all() and mask.sum() >= 24


def test_the_prose_set_is_prose_and_not_the_code_set() -> None:
    prose, code = proseset.load().examples, evalset.load().examples

    def share(ex: np.ndarray, chars: bytes) -> float:
        return float(np.isin(ex, np.frombuffer(chars, dtype=np.uint8)).mean())

    letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ "
    code_marks = b"()[]{}=_:#'\""
    assert share(prose, letters) > 0.85 > share(code, letters)
    assert share(prose, code_marks) < 0.02 < share(code, code_marks)
