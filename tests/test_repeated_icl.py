"""The ICL score on repeated random tokens (data.repeated_icl_examples): the evaluation set no training data can
hold (issue 33's contamination-free measure), stored per snapshot and shown beside the two text sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icl_core import data
from icl_core.analysis.evaluation import stored_icl
from icl_core.analysis.robustness import mean3
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN, ModelConfig
from icl_core.model.transformer import AttnOnlyTransformer
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model


def test_token_500_repeats_the_token_251_before_it_and_token_50_repeats_nothing() -> None:
    tokens = data.repeated_icl_examples(ICL_LATE_TOKEN + 2)
    assert tokens.shape == (data.REPEATED_ICL_EXAMPLES, ICL_LATE_TOKEN + 2)
    assert torch.equal(tokens[:, ICL_LATE_TOKEN], tokens[:, ICL_LATE_TOKEN - 251])
    assert torch.equal(tokens[:, ICL_LATE_TOKEN - 1], tokens[:, ICL_LATE_TOKEN - 252]), "the same prefix, too"
    assert set(tokens[:, 1:].unique().tolist()) <= set(data.probe_tokens())


def test_a_model_that_ignores_its_context_scores_zero() -> None:
    model = AttnOnlyTransformer(ModelConfig(n_layers=1, n_ctx=512))
    with torch.no_grad():
        model.W_U.zero_()  # every position predicts the uniform distribution
    scores = stored_icl(model, "icl_score_repeated", data.repeated_icl_examples(ICL_LATE_TOKEN + 2))
    assert scores["icl_score_repeated"] == pytest.approx(0.0, abs=1e-6)
    assert scores["icl_examples_repeated"] == data.REPEATED_ICL_EXAMPLES


@pytest.fixture(scope="module")
def stored():
    return {r: list_snapshots(SHIPPED_DIR / r) for r in ("attn1", "attn2", "attn3", "attn2-smeared", "attn1-smeared")}


def test_every_shipped_snapshot_stores_it_and_a_recomputation_matches(stored) -> None:
    for run, snaps in stored.items():
        assert all(s.metrics.icl_score_repeated is not None for s in snaps), run
    snap = stored["attn2"][-1]
    model = load_model(snap)
    again = stored_icl(
        model, "icl_score_repeated", data.repeated_icl_examples(ICL_LATE_TOKEN + 2, model.require_tokenizer())
    )
    assert again["icl_score_repeated"] == pytest.approx(snap.metrics.icl_score_repeated, abs=1e-4)


def test_the_induction_runs_copy_repeated_tokens_the_one_layer_run_does_not(stored) -> None:
    """Measured on a token set none of the runs was trained on: step 0 scores ~0; the 2- and 3-layer runs and the
    smeared 2-layer run end far below zero (3-snapshot means, many s.e.); the 1-layer run does not."""
    for snaps in stored.values():
        assert abs(snaps[0].metrics.icl_score_repeated or 1) < 0.02
    for run in ("attn2", "attn3", "attn2-smeared"):
        end = mean3(stored[run], stored[run][-2].step, "icl_score_repeated")
        assert end.value < -2.0 and end.value / end.se < -8, (run, end)
    end = mean3(stored["attn1"], stored["attn1"][-2].step, "icl_score_repeated")
    assert end.value > -0.5, end


def test_smeared_keys_make_copying_repeated_tokens_start_earlier(stored) -> None:
    def first_below(run: str, level: float = -1.0) -> int:
        return next(s.tokens_seen for s in stored[run] if (s.metrics.icl_score_repeated or 0) < level)

    assert first_below("attn2-smeared") < first_below("attn2") / 2
    assert ICL_EARLY_TOKEN < 251 < ICL_LATE_TOKEN  # the score's two tokens sit in different copies
    assert np.isfinite(first_below("attn3"))


def test_copying_repeated_tokens_sets_in_inside_each_multi_layer_runs_window(stored) -> None:
    """The README's figure: the score first falls below -1 inside the run's window (the app's probe)."""
    from icl_core.analysis.phase import phase_window

    for run in ("attn2", "attn3", "attn2-smeared"):
        snaps = stored[run]
        window = phase_window(snaps)
        assert window is not None
        first = next(s.step for s in snaps if (s.metrics.icl_score_repeated or 0) < -1.0)
        assert window.start_step <= first <= window.end_step, (run, first, window)
