import math

import numpy as np
import pytest
import torch

from icl_core.analysis.circuits import (
    composition_matrices,
    composition_scores,
    copying_table,
    empirical_copying_scores,
    full_ov_circuit,
    full_qk_circuit,
    k_composition_qk_circuit,
    positional_qk_circuit,
    random_composition_baseline,
    readable_tokens,
)
from icl_core.analysis.metrics import copying_scores
from icl_core.model.config import ModelConfig
from icl_core.model.transformer import AttnOnlyTransformer


def _zeroed(cfg: ModelConfig) -> AttnOnlyTransformer:
    model = AttnOnlyTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _block(rows: range, cols: range, shape: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(shape)
    m[list(rows), list(cols)] = 1.0
    return m


def test_k_composition_of_a_hand_built_induction_pair():
    """L0H0 moves subspace A into B; L1H0's key reads B (query reads C, value reads D): pure K-composition."""
    d, dh = 64, 4
    model = _zeroed(ModelConfig(n_layers=2, n_heads=2, d_model=d, d_head=dh, n_ctx=8, d_vocab=16))
    a, b, c, dd, e = (range(i * dh, (i + 1) * dh) for i in range(5))
    head_dims = range(dh)
    l0, l1 = model.blocks
    with torch.no_grad():
        l0.W_V[0] = _block(a, head_dims, (d, dh))
        l0.W_O[0] = _block(head_dims, b, (dh, d))
        l1.W_Q[0] = _block(c, head_dims, (d, dh))
        l1.W_K[0] = _block(b, head_dims, (d, dh))
        l1.W_V[0] = _block(dd, head_dims, (d, dh))
        l1.W_O[0] = _block(head_dims, e, (dh, d))
    comp = composition_matrices(model, n_samples=50)
    assert comp.rows == [(0, 0), (0, 1)] and comp.cols == [(1, 0), (1, 1)]
    assert comp.row_labels == ["L0H0", "L0H1"]
    assert 0.05 < comp.baseline < 0.3
    # ||I_4|| / (||I_4|| ||I_4||) = 0.5 before the baseline
    assert comp.raw["K"][0, 0] == pytest.approx(0.5, abs=1e-6)
    assert comp.scores["K"][0, 0] > 0.3
    assert comp.scores["Q"][0, 0] < 0 and comp.scores["V"][0, 0] < 0
    assert comp.scores["Q"][0, 0] == pytest.approx(-comp.baseline)
    kinds = {r["kind"] for r in comp.records()}
    assert kinds == {"K", "Q", "V"} and len(comp.records()) == 3 * 4


def _random(d_model: int, d_head: int, seed: int) -> AttnOnlyTransformer:
    torch.manual_seed(seed)
    return AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=2, d_model=d_model, d_head=d_head, n_ctx=32))


def test_k_composition_of_a_handbuilt_induction_circuit():
    d, dh = 16, 4
    model = _random(d, dh, seed=3)
    with torch.no_grad():
        b0, b1 = model.blocks
        # head 0.0 writes into dims 8..11; head 1.0's key reads exactly those dims, its query and value others
        b0.W_O[0] = torch.zeros(dh, d)
        b0.W_O[0][:, 8:12] = torch.eye(dh)
        b1.W_K[0] = torch.zeros(d, dh)
        b1.W_K[0][8:12] = torch.eye(dh)
        b1.W_Q[0] = torch.zeros(d, dh)
        b1.W_Q[0][0:4] = torch.eye(dh)
        b1.W_V[0] = torch.zeros(d, dh)
        b1.W_V[0][0:4] = torch.eye(dh)
    k, q, v = (composition_scores(model, kind) for kind in "KQV")
    # perfectly aligned rank-4 maps score 1/sqrt(rank) = 0.5 at most (Frobenius norms)
    assert k[0, 0] > 0.45
    assert q[0, 0] < 0.05 and v[0, 0] < 0.05
    baseline = random_composition_baseline(d, dh)
    random_model = _random(d, dh, seed=4)
    random_k = composition_scores(random_model, "K")
    assert abs(float(random_k.mean()) - baseline) < 0.1, "random weights score near the random baseline"
    assert k[0, 0] - baseline > 0.25


def test_random_weights_compose_like_chance():
    torch.manual_seed(0)
    model = AttnOnlyTransformer(ModelConfig(n_layers=3, n_heads=4, d_model=64, d_head=16, n_ctx=8)).eval()
    comp = composition_matrices(model, n_samples=50)
    assert comp.scores["K"].shape == (8, 8)
    # Layer-1 heads cannot be composed into by layer-1 heads: those cells are NaN.
    assert np.isnan(comp.scores["K"][4:, :4]).all()
    for kind in ("K", "Q", "V"):
        finite = comp.scores[kind][np.isfinite(comp.scores[kind])]
        assert abs(finite.mean()) < 0.01
        assert np.abs(finite).max() < 0.05


def test_one_layer_model_has_no_composition():
    with pytest.raises(ValueError, match="two layers"):
        composition_matrices(AttnOnlyTransformer(ModelConfig(n_layers=1, n_ctx=8)))


def _copying_model(sign: float) -> AttnOnlyTransformer:
    """Orthonormal embedding, unembedding its transpose, OV = sign * identity."""
    v = 8
    model = _zeroed(ModelConfig(n_layers=1, n_heads=2, d_model=v, d_head=v, n_ctx=8, d_vocab=v))
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(v, v, generator=torch.Generator().manual_seed(0)))
        model.W_E.copy_(q)
        model.W_U.copy_(q.T)
        model.blocks[0].W_V[0] = torch.eye(v)
        model.blocks[0].W_O[0] = sign * torch.eye(v)
        model.blocks[0].W_V[1] = torch.eye(v)  # head 1 writes nothing (W_O = 0)
    return model


def test_copying_scores_identity_and_negated_heads():
    copier, anti = _copying_model(1.0), _copying_model(-1.0)
    assert empirical_copying_scores(copier)[0, 0] == pytest.approx(1.0)
    assert copying_scores(copier)[0, 0] == pytest.approx(1.0)
    assert empirical_copying_scores(anti)[0, 0] == pytest.approx(-1.0)
    assert copying_scores(anti)[0, 0] == pytest.approx(-1.0)
    # a head that raises nothing copies nothing
    assert empirical_copying_scores(copier)[0, 1] == pytest.approx(-1.0)
    rows = copying_table(copier)
    assert [r["head"] for r in rows] == ["L0H0", "L0H1"]
    assert rows[0]["empirical"] > 0.9 and rows[0]["eigenvalue"] > 0.9 and rows[0]["own_top1"] == 1.0
    assert copying_table(anti)[0]["own_top1"] == 0.0


def test_empirical_copying_score_of_a_partial_copier():
    """Raise the token itself by 1 and one other token by 1: half the increase is the token's own -> 0."""
    v = 8
    model = _copying_model(1.0)
    with torch.no_grad():
        shift = torch.roll(torch.eye(v), 1, dims=1)
        # OV circuit W_E W_OV W_U = I + P (P a cyclic shift): copy plus a fixed wrong guess, equally strong.
        model.blocks[0].W_O[0] = torch.eye(v) + model.W_E.T @ shift @ model.W_E
    assert empirical_copying_scores(model)[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_full_circuits_on_readable_tokens():
    toks = readable_tokens(12)
    assert len(toks) == 12 and all(32 <= t < 127 for t in toks)
    assert toks[0] == 32  # space is the most frequent byte of Python source
    torch.manual_seed(0)
    model = AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=16)).eval()
    qk = full_qk_circuit(model, 1, 0, toks)
    assert qk.matrix.shape == (12, 12) and qk.row_labels[0] == "␣"
    block = model.blocks[1]
    e = model.W_E[toks[3]].detach(), model.W_E[toks[5]].detach()
    with torch.no_grad():
        expected = float((e[0] @ block.W_Q[0]) @ (e[1] @ block.W_K[0]) / math.sqrt(4))
    assert qk.matrix[3, 5] == pytest.approx(expected, rel=1e-4)
    ov = full_ov_circuit(model, 1, 0, toks)
    assert ov.matrix.shape == (12, 12)
    raw = full_ov_circuit(model, 1, 0, toks, center=False)
    logits = (model.W_E[toks[2]] @ block.W_V[0] @ block.W_O[0] @ model.W_U).detach()
    assert raw.matrix[2, 7] == pytest.approx(float(logits[toks[7]]), rel=1e-4)
    assert ov.matrix[2, 7] == pytest.approx(float(logits[toks[7]] - logits.mean()), rel=1e-4, abs=1e-6)
    kc = k_composition_qk_circuit(model, 1, 0, (0, 1), toks)
    assert kc.matrix.shape == (12, 12)
    with pytest.raises(ValueError, match="earlier layer"):
        k_composition_qk_circuit(model, 0, 0, (0, 1), toks)
    pos = positional_qk_circuit(model, 0, 1, n_positions=10)
    assert pos.matrix.shape == (10, 10) and np.isnan(pos.matrix[0, 1]) and np.isfinite(pos.matrix[1, 0])
    assert len(qk.records()) == 144
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        full_qk_circuit(model, 0, 0, [300])
