import numpy as np
import pytest
import torch

from icl_core.analysis import metrics
from icl_core.analysis.pca import joint_pca, sharpest_turn, turn_strengths
from icl_core.analysis.phase import detect_phase_change
from icl_core.model.config import ModelConfig
from icl_core.model.transformer import AttnOnlyTransformer


def build(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=32, seed=0):
    torch.manual_seed(seed)
    return AttnOnlyTransformer(
        ModelConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_head=d_head, n_ctx=n_ctx)
    )


def test_icl_score_is_late_minus_early():
    curve = torch.zeros(511)
    curve[50], curve[500] = 3.0, 2.5
    assert metrics.icl_score(curve) == pytest.approx(-0.5)


def test_induction_targets_mark_the_token_after_earlier_occurrences():
    tokens = torch.tensor([[9, 1, 2, 3, 1, 2, 1]])
    t = metrics.induction_targets(tokens)[0]
    # query 4 (token 1): earlier 1 at position 1 -> target 2
    assert t[4].nonzero().flatten().tolist() == [2]
    # query 6 (token 1): earlier 1s at 1 and 4 -> targets 2 and 5
    assert t[6].nonzero().flatten().tolist() == [2, 5]
    assert t[3].sum() == 0  # token 3 never occurred before


def test_prefix_matching_and_previous_token_scores_on_handmade_patterns():
    seq = torch.tensor([[256, 5, 6, 7, 5, 6, 7]])
    n = seq.shape[1]
    induction = torch.zeros(1, 1, 2, n, n)
    previous = torch.zeros(1, 1, 2, n, n)
    for q in range(n):
        previous[0, 0, 0, q, max(q - 1, 0)] = 1.0
        targets = metrics.induction_targets(seq)[0, q].nonzero().flatten()
        if len(targets):
            induction[0, 0, 1, q, targets] = 1.0 / len(targets)
        else:
            induction[0, 0, 1, q, 0] = 1.0
    patterns = previous + induction
    pm = metrics.prefix_matching_scores_from_patterns(patterns, seq, first_query=4)
    assert pm[0, 1] == pytest.approx(1.0) and pm[0, 0] == pytest.approx(0.0)
    prev = metrics.previous_token_scores_from_patterns(patterns)
    assert prev[0, 0] == pytest.approx(1.0) and prev[0, 1] < 0.5


def test_copying_score_is_one_for_a_copying_head_and_negative_for_an_anti_copying_one():
    model = build(n_layers=1, n_heads=2, d_model=8, d_head=8)
    with torch.no_grad():
        model.W_E.copy_(torch.randn(257, 8))
        model.W_U.copy_(torch.linalg.pinv(model.W_E))  # W_E W_U projects onto the embedding space
        model.blocks[0].W_V[0] = torch.eye(8)
        model.blocks[0].W_O[0] = torch.eye(8)
        model.blocks[0].W_V[1] = torch.eye(8)
        model.blocks[0].W_O[1] = -torch.eye(8)
    scores = metrics.copying_scores(model)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert scores[0, 1] == pytest.approx(-1.0, abs=1e-4)


def test_phase_change_detection_on_synthetic_curves():
    steps = [0] + [int(x) for x in np.unique(np.round(np.geomspace(1, 3000, 35)))]
    x = np.log(np.asarray(steps) + 1)
    sharp = 0.02 - 0.45 / (1 + np.exp(-(x - np.log(400)) * 6))
    window = detect_phase_change(steps, sharp.tolist())
    assert window is not None
    assert window.start_step < 400 < window.end_step
    assert 0.4 < window.drop < 0.5
    flat = -0.05 + 0.01 * np.sin(np.arange(len(steps)))
    assert detect_phase_change(steps, flat.tolist()) is None


def test_joint_pca_is_deterministic_and_finds_the_turn():
    rng = np.random.default_rng(0)
    direction_a, direction_b = rng.normal(size=50), rng.normal(size=50)
    run = [(i, i * direction_a) for i in range(10)] + [
        (10 + i, 9 * direction_a + (i + 1) * direction_b) for i in range(10)
    ]
    other = [(i, 0.5 * i * direction_a) for i in range(12)]
    result = joint_pca({"two": run, "one": other})
    again = joint_pca({"one": other, "two": run})
    assert np.allclose(result.coords["two"], again.coords["two"])
    assert result.coords["two"].shape == (20, 2) and np.isfinite(result.coords["two"]).all()
    tokens = [int(1000 * 1.25**i) for i in range(20)]  # log-spaced snapshots, 0.1 decades apart
    strengths = turn_strengths(result.coords["two"], tokens)
    assert int(np.nanargmax(strengths)) == 9  # the trajectory bends at the 10th point
    assert sharpest_turn(result.coords["two"], tokens) == 9
    assert np.isnan(strengths[:2]).all() and np.isnan(strengths[-2:]).all(), "no full span at the ends"


def test_the_turn_statistic_does_not_depend_on_how_densely_snapshots_were_taken():
    def path(log_tokens):  # straight, then a right-angle bend at 10^5 tokens, then straight again
        u = np.asarray(log_tokens) - 5.0
        return np.stack([np.minimum(u, 0), np.maximum(u, 0)], axis=1)

    sparse = np.linspace(3, 7, 21)
    dense = np.sort(np.concatenate([sparse, np.linspace(4.2, 4.9, 30)]))  # many snapshots just before the bend
    for logs in (sparse, dense):
        tokens = (10**logs).round().astype(int)
        turn = sharpest_turn(path(logs), tokens)
        assert abs(logs[turn] - 5.0) < 0.11, logs[turn]
    with pytest.raises(ValueError, match="different lengths"):
        joint_pca({"a": [(0, np.zeros(3))], "b": [(0, np.zeros(4))]})


def test_exact_icl_score_is_the_mean_paired_difference_with_its_standard_error():
    from icl_core import data

    torch.manual_seed(3)
    model = AttnOnlyTransformer(ModelConfig(n_layers=2, positional="sinusoidal"))
    with torch.no_grad():
        model.W_U.mul_(50)  # a non-trivial model: losses that differ between positions and examples
    tokens = data.heldout_examples(96, 512)
    losses = metrics.per_token_losses(model, tokens)
    diff = (losses[:, 500] - losses[:, 50]).double()
    got = metrics.exact_icl_score(model, tokens, batch_size=40)  # batches that do not divide the set
    assert got.n_examples == 96
    assert got.value == pytest.approx(metrics.icl_score(metrics.loss_curve(losses)), abs=1e-4)
    assert got.se == pytest.approx(float(diff.std() / 96**0.5), rel=1e-3)
    assert got.se > 0.01, "a real spread, so the check above can fail"
