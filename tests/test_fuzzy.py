import copy

import numpy as np
import pytest
import torch

from icl_core.analysis.fuzzy import (
    PERTURBATIONS,
    case_letter_pool,
    flip_case,
    fuzzy_batch,
    fuzzy_probe,
    fuzzy_rows,
    fuzzy_targets,
    nearest_neighbours,
)
from icl_core.model.config import ModelConfig
from icl_core.model.tokenizer import BOS, decode
from icl_core.model.transformer import AttnOnlyTransformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=64)).eval()


def test_case_flips_really_change_the_tokens():
    assert decode(flip_case(torch.tensor(list(b"aZ9_ q")))) == "Az9_ Q"
    batch = fuzzy_batch("case", n_sequences=4, seq_len=12, seed=3)
    assert batch.tokens.shape == (4, 1 + 24) and (batch.tokens[:, 0] == BOS).all()
    assert set(batch.original.flatten().tolist()) <= set(case_letter_pool())
    assert (batch.perturbed != batch.original).all()
    assert all(
        bytes(p.tolist()).decode() == bytes(o.tolist()).decode().swapcase()
        for p, o in zip(batch.perturbed, batch.original, strict=True)
    )
    assert torch.equal(batch.tokens[:, 1:13], batch.perturbed) and torch.equal(batch.tokens[:, 13:], batch.original)
    exact = fuzzy_batch("exact", n_sequences=4, seq_len=12, seed=3)
    assert torch.equal(exact.original, batch.original)  # same X for every kind
    assert torch.equal(exact.perturbed, exact.original)


def test_nearest_neighbours_use_the_embedding(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.W_E[ord("b")] = model.W_E[ord("a")] * 2.0  # same direction: cosine 1
    nn = nearest_neighbours(model)
    assert int(nn[ord("a")]) == ord("b") and int(nn[ord("b")]) == ord("a")
    assert (nn != torch.arange(len(nn))).all()
    assert nearest_neighbours(model, candidates=[5, 6]).tolist()[5] == 6
    batch = fuzzy_batch("neighbour", model, n_sequences=3, seq_len=10)
    assert torch.equal(batch.perturbed, nn[batch.original])
    with pytest.raises(ValueError, match="needs the model"):
        fuzzy_batch("neighbour")
    with pytest.raises(ValueError, match="unknown perturbation"):
        fuzzy_batch("blur")


def test_fuzzy_targets_point_after_the_perturbed_occurrence():
    queries, keys = fuzzy_targets(4)
    # BOS X*0 X*1 X*2 X*3 X0 X1 X2 X3: X0 (pos 5) -> X*1 (pos 2), ..., X3 (pos 8) -> X0 (pos 5)
    assert queries.tolist() == [5, 6, 7, 8] and keys.tolist() == [2, 3, 4, 5]


def test_fuzzy_probe_shapes(model):
    results = fuzzy_probe(model, n_sequences=3, seq_len=10)
    assert set(results) == set(PERTURBATIONS)
    for kind, r in results.items():
        assert r.prefix_matching.shape == (2, 2)
        assert np.all((r.prefix_matching >= 0) & (r.prefix_matching <= 1))
        assert np.isfinite(r.second_half_loss) and np.isfinite(r.copied_loss)
        assert r.changed_fraction == (0.0 if kind == "exact" else 1.0)
    # the exact probe copies the very tokens it must predict
    assert results["exact"].copied_loss == pytest.approx(results["exact"].second_half_loss)
    rows = fuzzy_rows(results)
    assert len(rows) == 3 * 4 and {r["kind"] for r in rows} == set(PERTURBATIONS)


def test_fuzzy_probe_caps_the_length_to_the_context():
    small = AttnOnlyTransformer(ModelConfig(n_layers=1, n_heads=1, d_model=8, d_head=4, n_ctx=11)).eval()
    r = fuzzy_probe(small, kinds=["case"], n_sequences=2, seq_len=25)["case"]
    assert r.prefix_matching.shape == (1, 1)
