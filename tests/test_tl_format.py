"""TransformerLens-format checkpoints, checked against TransformerLens itself (a test-only dependency)."""

from __future__ import annotations

import pytest
import torch
from tl_fixtures import reference_model, tiny_neel_config

from icl_core.analysis.metrics import attention_patterns
from icl_core.errors import CheckpointError
from icl_core.model.tl_format import convert_state_dict, load_pth, model_config_from_tl
from icl_core.model.transformer import AttnOnlyTransformer

transformer_lens = pytest.importorskip("transformer_lens")


def tl_config(positional: str, normalization: str | None = "LN") -> dict:
    """A tiny model's config.json as Neel Nanda's training code writes it: all ~50 keys (tl_fixtures)."""
    return tiny_neel_config(positional, normalization)


def hooked_transformer(config: dict, seed: int = 0):
    """TransformerLens's own reading of that config.json (convert_neel_model_config), random weights."""
    return reference_model(config, seed)


@pytest.mark.parametrize(
    ("positional", "normalization"), [("standard", "LN"), ("shortformer", "LN"), ("standard", None)]
)
def test_logits_and_patterns_match_transformer_lens(tmp_path, positional, normalization):
    config = tl_config(positional, normalization)
    reference = hooked_transformer(config)
    path = tmp_path / "tokens_000000001000.pth"
    torch.save(reference.state_dict(), path)  # exactly what the published checkpoints hold

    cfg = model_config_from_tl(config)
    model = AttnOnlyTransformer(cfg)
    model.load_state_dict(convert_state_dict(load_pth(path), cfg, path))
    model.eval()

    tokens = torch.randint(0, config["d_vocab"], (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits, cache = reference.run_with_cache(tokens)
        logits, patterns = attention_patterns(model, tokens)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for layer in range(config["n_layers"]):
        torch.testing.assert_close(patterns[:, layer], cache["pattern", layer], atol=1e-5, rtol=1e-5)
    # the fast evaluation path agrees too
    positions = torch.tensor([5, 39])
    torch.testing.assert_close(model.logits_at(tokens, positions), ref_logits[:, positions], atol=1e-5, rtol=1e-5)


def test_an_orig_mod_prefix_and_a_missing_b_U_are_accepted(tmp_path):
    config = tl_config("standard")
    reference = hooked_transformer(config)
    state = {f"_orig_mod.{k}": v for k, v in reference.state_dict().items() if k != "unembed.b_U"}
    cfg = model_config_from_tl(config)
    converted = convert_state_dict(state, cfg, "checkpoint_0000100.pth")
    assert torch.equal(converted["b_U"], torch.zeros(config["d_vocab"]))
    AttnOnlyTransformer(cfg).load_state_dict(converted)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bad_checkpoints_are_refused_with_the_file_named(tmp_path):
    config = tl_config("standard")
    cfg = model_config_from_tl(config)
    state = hooked_transformer(config).state_dict()

    pickled = tmp_path / "evil.pth"
    torch.save({"embed.W_E": Evil()}, pickled)
    with pytest.raises(CheckpointError, match="evil.pth.*refused"):
        load_pth(pickled)
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"embed.W_E": torch.zeros(2)}}, nested)
    with pytest.raises(CheckpointError, match="flat dict of tensors"):
        load_pth(nested)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_pth(garbage)
    wrong = dict(state, **{"blocks.0.attn.W_Q": torch.zeros(4, 32, 9)})
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.W_Q has shape \(4, 32, 9\)"):
        convert_state_dict(wrong, cfg, "tokens_000000000001.pth")
    missing = {k: v for k, v in state.items() if k != "ln_final.w"}
    with pytest.raises(CheckpointError, match="missing.*ln_final.w"):
        convert_state_dict(missing, cfg, "x.pth")


def test_a_training_scripts_whole_settings_dict_is_read_for_its_model_fields_only():
    """The real config.json carries ~50 keys of training settings (tl_fixtures.neel_config); as TransformerLens
    does, the model's fields are read and the rest ignored, whatever they are."""
    config = tl_config("shortformer")
    assert len(config) >= 45 and {"lr_hidden", "tokens_per_step", "betas", "control"} <= set(config)
    cfg = model_config_from_tl({**config, "a_key_from_a_later_version": [1, 2]})
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.n_ctx, cfg.d_vocab) == (2, 4, 32, 8, 1024, 120)
    assert cfg.positional == "shortformer" and cfg.normalization == "LN" and cfg.tokenizer == config["tokenizer_name"]
    no_norm = model_config_from_tl({k: v for k, v in tl_config("standard", None).items()})
    assert no_norm.normalization == "none" and no_norm.positional == "learned"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_only": False}, "attention-only"),
        ({"normalization": "RMS"}, "not supported"),
        ({"final_rms": True}, "final_rms"),
        ({"shortformer_pos": None, "positional_embedding_type": "rotary"}, "rotary"),
        ({"parallel_attn_mlp": True}, "parallel_attn_mlp"),
        ({"d_vocab_out": 7}, "d_vocab_out"),
    ],
)
def test_configs_we_cannot_run_are_refused(change, message):
    config = {**tl_config("standard"), **change}
    if change.get("shortformer_pos", 0) is None:
        del config["shortformer_pos"]
    with pytest.raises(CheckpointError, match=message):
        model_config_from_tl(config)


@pytest.mark.parametrize("positional", ["standard", "shortformer"])
def test_circuit_weights_fold_layer_norm_as_transformer_lens_does(tmp_path, positional):
    """Circuits of a LayerNorm model are read from TransformerLens's folded, centred weights (fold_ln,
    center_writing_weights): the composition scores equal its all_composition_scores."""
    from icl_core.analysis.circuits import composition_scores
    from icl_core.model.fold import circuit_weights

    # TransformerLens's fold_ln reaches for an MLP's LayerNorm whenever act_fn is solu_ln (the published configs'
    # value), attention-only or not, and fails: a relu act_fn (unused without MLPs) lets it fold.
    config = {**tl_config(positional), "act_fn": "relu"}
    reference = hooked_transformer(config)
    path = tmp_path / "tokens_000000001000.pth"
    torch.save(reference.state_dict(), path)
    cfg = model_config_from_tl(config)
    model = AttnOnlyTransformer(cfg)
    model.load_state_dict(convert_state_dict(load_pth(path), cfg, path))

    reference.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    w = circuit_weights(model)
    for layer in range(config["n_layers"]):
        block = reference.blocks[layer].attn
        for ours, theirs in [(w.W_Q, block.W_Q), (w.W_K, block.W_K), (w.W_V, block.W_V), (w.W_O, block.W_O)]:
            torch.testing.assert_close(ours[layer], theirs.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.W_E, reference.W_E.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.W_U, reference.W_U.detach(), atol=1e-5, rtol=1e-5)
    for kind in ("K", "Q", "V"):
        theirs = reference.all_composition_scores(kind)[0, :, 1, :]
        torch.testing.assert_close(composition_scores(model, kind), theirs.detach(), atol=1e-4, rtol=1e-4)
    # The fold is not a no-op on these weights: raw products would give other scores.
    assert not torch.allclose(w.W_Q[0], model.blocks[0].W_Q.detach(), atol=1e-3)
