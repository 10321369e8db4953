"""The shipped evaluation set: what every stored metric is computed on, on every machine."""

import hashlib

import numpy as np
import torch

from icl_core import data, evalset
from icl_core.model.tokenizer import BOS


def test_the_set_is_read_from_the_shipped_file_and_hashed():
    ev = evalset.load()
    assert ev.examples.shape == (evalset.N_EXAMPLES, evalset.EXAMPLE_LEN) and ev.examples.dtype == np.uint8
    assert ev.sha256 == hashlib.sha256(evalset.EVAL_SET_FILE.read_bytes()).hexdigest()
    assert len(ev.probe_pool) == evalset.N_PROBE_TOKENS and len(set(ev.probe_pool.tolist())) == evalset.N_PROBE_TOKENS


def test_heldout_examples_come_from_the_shipped_set_not_the_local_stdlib(monkeypatch):
    ev = evalset.load()
    standard = data.heldout_examples(8, 512)
    assert (standard[:, 0] == BOS).all()
    assert torch.equal(standard[:, 1:], torch.from_numpy(ev.examples[:8].astype(np.int64)))
    shorter = data.heldout_examples(8, 64)
    assert torch.equal(shorter, standard[:, :64]), "a shorter context reads the same rows, cut"
    other = data.heldout_examples(8, 512, seed=77)
    assert not torch.equal(other, standard), "another seed, other rows"

    def no_stdlib(split):
        raise AssertionError("the local stdlib was read")

    data._byte_heldout.cache_clear()
    monkeypatch.setattr(data, "corpus", no_stdlib)
    try:
        assert torch.equal(data.heldout_examples(8, 512), standard)
        assert data.probe_tokens() == ev.probe_pool.tolist()
    finally:
        data._byte_heldout.cache_clear()


def test_contexts_longer_than_the_set_fall_back_to_the_local_stdlib():
    long = data.heldout_examples(2, 1024)
    assert long.shape == (2, 1024) and (long[:, 0] == BOS).all()
