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


def test_the_stretches_pieced_from_the_windows_hold_every_window_once_and_nothing_else(
    train_hashes: np.ndarray,
) -> None:
    """What a BPE model reads as prose (data.prose_token_examples): the windows joined where they overlap."""
    ps = proseset.load()
    pieces = proseset.stretches(ps)
    joined = b"\0".join(pieces)
    assert all(row.tobytes() in joined for row in ps.examples)
    assert len(pieces) < len(ps.examples) // 4, "most windows continue the one before"
    assert sum(map(len, pieces)) < ps.examples.size // 2, "overlaps are joined, not repeated"
    # Joining adds no byte that is not in some window, so nothing the training text holds either.
    text = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    per_piece = [np.frombuffer(p, dtype=np.uint8) for p in pieces]
    assert not any(proseset.covered_by(p, train_hashes).any() for p in per_piece) and len(text) > 100_000


def test_a_bpe_model_reads_the_prose_as_windows_of_its_own_tokens_that_do_not_overlap() -> None:
    import tempfile
    from pathlib import Path

    import torch
    from tl_fixtures import tiny_tokenizer_json

    from icl_core import data
    from icl_core.model.config import ICL_LATE_TOKEN
    from icl_core.model.tokenizer import BPETokenizer

    ps = proseset.load()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_bytes(tiny_tokenizer_json(120))
        tok = BPETokenizer(path, "tiny")
        examples = data.prose_icl_examples(tok)
        assert examples is not None and examples.shape[1] == ICL_LATE_TOKEN + 2
        assert (examples[:, 0] == tok.bos).all() and len(examples) >= data.MIN_PROSE_WINDOWS
        # Each window is the next stretch of tokens: concatenated, they are the stretches' tokens, in order.
        width = ICL_LATE_TOKEN + 1
        per_stretch = [tok.encode(p.decode("utf-8", errors="replace")).tokens[1:] for p in proseset.stretches(ps)]
        assert len(examples) == sum(len(ids) // width for ids in per_stretch), "every whole window, no more"
        longest = max(range(len(per_stretch)), key=lambda i: len(per_stretch[i]))
        offset, n = sum(len(ids) // width for ids in per_stretch[:longest]), len(per_stretch[longest]) // width
        assert n >= 2 and torch.equal(examples[offset : offset + n, 1:].reshape(-1), per_stretch[longest][: n * width])
        assert data.prose_token_examples(tok, 20_000) is None, "too few windows: no prose score"
