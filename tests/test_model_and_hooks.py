import math

import pytest
import torch

from icl_core.analysis.metrics import attention_patterns
from icl_core.model.config import ModelConfig
from icl_core.model.transformer import AttnOnlyTransformer, pattern_name


def tiny(**kw) -> AttnOnlyTransformer:
    torch.manual_seed(0)
    return AttnOnlyTransformer(ModelConfig(n_layers=2, n_heads=3, d_model=24, d_head=8, n_ctx=40, **kw)).eval()


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_fast_path_equals_explicit_attention(positional):
    model = tiny(positional=positional, smeared_keys=True)
    tokens = torch.randint(0, 257, (2, 40))
    fast = model(tokens)  # no hooks on the pattern: fused attention kernel
    explicit, patterns = attention_patterns(model, tokens)
    assert torch.allclose(fast, explicit, atol=1e-5)
    assert patterns.shape == (2, 2, 3, 40, 40)
    assert torch.allclose(patterns.sum(-1), torch.ones(2, 2, 3, 40), atol=1e-5)
    assert patterns.triu(diagonal=1).abs().max() == 0, "attention must be causal"


def test_hooks_can_overwrite_and_are_removed_afterwards():
    model = tiny()
    tokens = torch.randint(0, 257, (1, 10))
    clean = model(tokens)

    def uniform(pattern, hook):
        causal = torch.tril(torch.ones_like(pattern))
        return causal / causal.sum(-1, keepdim=True)

    edited, cache = model.run_with_cache(tokens, fwd_hooks=[(pattern_name(0), uniform)])
    assert not torch.allclose(edited, clean)
    assert torch.allclose(cache[pattern_name(0)][0, 0, 3, :4], torch.full((4,), 0.25))
    assert torch.allclose(model(tokens), clean), "hooks must not outlive the call"
    with pytest.raises(KeyError, match="no hook point named"):
        model.run_with_hooks(tokens, [("blocks.9.hook_pattern", uniform)])


def test_smeared_keys_mix_each_key_with_the_previous_one():
    model = tiny(smeared_keys=True)
    with torch.no_grad():
        model.blocks[0].smear_alpha.copy_(torch.tensor([0.0, 2.0, -1.0]))
    tokens = torch.randint(0, 257, (1, 12))
    _, cache = model.run_with_cache(tokens, names=lambda n: n in {"blocks.0.hook_k", "blocks.0.hook_resid"})
    # recompute the unsmeared keys from the residual stream feeding layer 0
    x = model.hook_embed(model.W_E[tokens]) + model.W_pos[:12][None]
    raw = torch.einsum("bpd,hde->bphe", x, model.blocks[0].W_K)
    s = torch.sigmoid(model.blocks[0].smear_alpha)[None, None, :, None]
    k = cache["blocks.0.hook_k"]
    assert torch.allclose(k[:, 0], raw[:, 0], atol=1e-5), "the first key is unchanged"
    assert torch.allclose(k[:, 1:], s * raw[:, 1:] + (1 - s) * raw[:, :-1], atol=1e-5)


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="longer than the context"):
        tiny()(torch.zeros(1, 41, dtype=torch.long))


@pytest.mark.parametrize(("n_layers", "smeared"), [(1, False), (2, False), (3, True), (1, True)])
def test_logits_at_a_few_positions_equal_the_full_forward(n_layers, smeared):
    torch.manual_seed(n_layers)
    model = AttnOnlyTransformer(ModelConfig(n_layers=n_layers, smeared_keys=smeared, positional="sinusoidal"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # trained-like weights: a wrong mask or offset shows
    tokens = torch.randint(0, 257, (3, 501))
    positions = torch.tensor([0, 50, 500])
    full = model(tokens)[:, positions]
    torch.testing.assert_close(model.logits_at(tokens, positions), full, rtol=1e-4, atol=1e-4 * full.abs().max().item())


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_an_untrained_model_predicts_uniformly(n_layers):
    """The small unembedding puts step 0 at ln(vocab) loss, so the ICL score starts at ~0 (Olsson et al.)."""
    from icl_core import data
    from icl_core.analysis import metrics

    torch.manual_seed(0)
    model = AttnOnlyTransformer(ModelConfig(n_layers=n_layers, positional="sinusoidal"))
    losses = metrics.per_token_losses(model, data.heldout_examples(64, 512))
    assert abs(float(losses.mean()) - math.log(257)) < 0.05
    icl = metrics.exact_icl_score(model, data.heldout_examples(256, 512))
    assert abs(icl.value) < 0.03
