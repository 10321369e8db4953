import pytest
import torch

from icl_core.analysis.ablation import head_output_means, run_ablated
from icl_core.analysis.metrics import attention_patterns
from icl_core.model.config import ModelConfig
from icl_core.model.transformer import AttnOnlyTransformer


@pytest.fixture
def model():
    torch.manual_seed(1)
    return AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=24)).eval()


def test_zero_ablating_every_head_leaves_the_direct_path(model):
    tokens = torch.randint(0, 257, (2, 24))
    heads = [(layer, h) for layer in range(2) for h in range(2)]
    logits = run_ablated(model, tokens, heads, "zero")
    direct = (model.W_E[tokens] + model.W_pos[:24]) @ model.W_U
    assert torch.allclose(logits, direct, atol=1e-5)


def test_pattern_preserving_ablation_removes_exactly_the_heads_paths(model):
    """With patterns frozen the model is linear in the residual stream, so removing head (0, i)
    subtracts its direct logit term and its value-path terms through every layer-1 head."""
    tokens = torch.randint(0, 257, (2, 24))
    clean, patterns = attention_patterns(model, tokens)
    x0 = model.W_E[tokens] + model.W_pos[:24]
    b0, b1 = model.blocks
    i = 1
    head_out = torch.einsum("bqk,bkd->bqd", patterns[:, 0, i], x0 @ b0.W_V[i] @ b0.W_O[i])
    via_layer1 = sum(
        torch.einsum("bqk,bkd->bqd", patterns[:, 1, h], head_out @ b1.W_V[h] @ b1.W_O[h]) for h in range(2)
    )
    expected = clean - (head_out + via_layer1) @ model.W_U
    got = run_ablated(model, tokens, [(0, i)], "pattern-preserving")
    assert torch.allclose(got, expected, atol=1e-4)
    # Zero ablation also changes layer-1 attention, so it differs from the pattern-preserving result.
    assert not torch.allclose(run_ablated(model, tokens, [(0, i)], "zero"), expected, atol=1e-4)


def test_mean_ablation_uses_reference_means(model):
    reference = torch.randint(0, 257, (8, 24))
    means = head_output_means(model, reference)
    assert means[0].shape == (24, 2, 16)
    tokens = torch.randint(0, 257, (1, 24))
    mean_ablated = run_ablated(model, tokens, [(1, 0)], "mean", means)
    zero_ablated = run_ablated(model, tokens, [(1, 0)], "zero")
    # layer 1 is the last layer: the two differ exactly by the mean output pushed through the unembedding
    assert torch.allclose(mean_ablated - zero_ablated, (means[1][:, 0] @ model.W_U)[None], atol=1e-4)


def test_unknown_mode_and_missing_means(model):
    tokens = torch.randint(0, 257, (1, 5))
    with pytest.raises(ValueError, match="unknown ablation mode"):
        run_ablated(model, tokens, [(0, 0)], "ghost")
    with pytest.raises(ValueError, match="mean ablation needs"):
        run_ablated(model, tokens, [(0, 0)], "mean")
    assert torch.allclose(run_ablated(model, tokens, [], "zero"), model(tokens))
