"""Scientific claims, checked on the shipped checkpoints (trained by `configs/*.json`, see checkpoints/README.md).

Thresholds are the ones asked of these runs (issue 10) unless a comment says otherwise; each assert states the
value measured on the shipped runs. Where a run misses a threshold, the test checks what does hold and says
so (README: "What the shipped runs show"). The figures come from icl_core.analysis.claims, the same
functions the README table was written from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icl_core import data, evalset
from icl_core.analysis import claims, metrics
from icl_core.analysis.ablation import run_ablated
from icl_core.analysis.claims import run_figures
from icl_core.analysis.pca import TURN_SPAN_DECADES, pca_table, sharpest_turn, token_positions
from icl_core.analysis.phase import best_induction_head
from icl_core.model.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.model.transformer import per_token_loss
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model, read_manifest

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
RUNS = ("attn1", "attn2", "attn3", "attn1-smeared", "attn2-smeared")
MULTI_LAYER = ("attn2", "attn3")


@pytest.fixture(scope="module")
def snaps():
    return {name: list_snapshots(SHIPPED_DIR / name) for name in RUNS}


@pytest.fixture(scope="module")
def final(snaps):
    return {name: load_model(s[-1]) for name, s in snaps.items()}


@pytest.fixture(scope="module")
def figures(snaps):
    return {name: run_figures(s) for name, s in snaps.items()}


def _differences(recipe: dict, trained: dict) -> list[str]:
    """Keys of a config file whose value the run did not train with (nested, for the model config)."""
    return [
        key
        for key, value in recipe.items()
        if (_differences(value, trained.get(key, {})) if isinstance(value, dict) else trained.get(key) != value)
    ]


def test_shipped_runs_are_complete_dense_and_small(snaps):
    total = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert total <= 60e6, f"checkpoints/ is {total / 1e6:.1f} MB"
    for name, s in snaps.items():
        manifest = read_manifest(SHIPPED_DIR / name)
        assert manifest["status"] == "finished" and manifest["command"] and manifest["wall_clock_s"] > 0
        assert manifest["eval_set_sha256"] == evalset.load().sha256, "stored metrics are on the shipped set"
        steps = [x.step for x in s]
        assert len(steps) >= 64 and steps[0] == 0 and steps[-1] == manifest["config"]["total_steps"]
        assert not list((SHIPPED_DIR / name).glob("resume.*")), "resume states are not shipped"
        recipe = json.loads((CONFIGS_DIR / f"{name}.json").read_text())
        assert not _differences(recipe, manifest["config"]), f"configs/{name}.json is the recipe it was trained with"


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_every_run_starts_at_uniform_loss_with_an_icl_score_of_zero(snaps, key):
    for name, s in snaps.items():
        f = run_figures(s, key)
        assert abs(f["step0_loss"] - f["ln_vocab"]) <= 0.1, (name, f["step0_loss"])  # measured STEP0LOSS
        assert abs(f["step0_icl"]) <= 0.03, (name, key, f["step0_icl"])  # measured STEP0ICL


def test_icl_scores_carry_their_standard_error(snaps, figures):
    for name, s in snaps.items():
        assert all(x.metrics.icl_examples == evalset.N_EXAMPLES for x in s), name
        assert figures[name]["final_icl_se"] <= 0.035, (name, figures[name]["final_icl_se"])  # measured FINALSE


def test_multi_layer_runs_form_induction_and_previous_token_heads_the_one_layer_run_does_not(final):
    # Fresh probe sequences (seed 99), not the ones stored at training time.
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)
    text = data.heldout_examples(16, 512, seed=99)[:, :128]
    for name in MULTI_LAYER:
        pm = metrics.prefix_matching_scores(final[name], repeated)
        prev = metrics.previous_token_scores(final[name], text)
        assert pm[1:].max() > 0.3, (name, pm)
        assert prev[0].max() > 0.3, (name, prev)
        assert pm[0].max() < 0.1, (name, pm)  # no induction without a previous-token head before it
    assert metrics.prefix_matching_scores(final["attn1"], repeated).max() < 0.1


def test_stored_icl_score_matches_a_recomputation_from_the_shipped_weights(snaps, final):
    snap = snaps["attn2"][-1]
    got = metrics.exact_icl_score(final["attn2"], data.heldout_examples(evalset.N_EXAMPLES, 512))
    # stored values were computed from fp32 weights; the shipped weights are fp16
    assert got.value == pytest.approx(snap.metrics.icl_score, abs=0.01)
    assert got.se == pytest.approx(snap.metrics.icl_score_se, rel=0.05)
    examples = data.heldout_examples(len(snap.metrics.pca_losses), 512)
    losses = metrics.per_token_losses(final["attn2"], examples)
    chosen = losses.gather(1, token_positions(*examples.shape)[:, None]).squeeze(1)
    assert np.allclose(chosen.numpy(), snap.metrics.pca_losses, atol=0.05)


def test_multi_layer_runs_have_a_sharp_phase_change_then_a_plateau_the_one_layer_run_none(snaps, figures):
    assert figures["attn1"]["window"] is None
    for name in MULTI_LAYER:
        f = figures[name]
        assert f["window"] is not None, name
        assert f["window_decades"] <= 0.6, (name, f["window_decades"])  # measured WINDOWDECADES
        # >= 70% of the ICL fall from the 1M-token level to the end happens inside the window (held-out code):
        assert f["fall_inside_window"] >= 0.7, (name, f["fall_inside_window"])  # measured FALLCODE
        # the induction head has settled: its prefix-matching score moves < 0.05 over the last third of the
        # tokens (linear, as the paper draws training)
        assert f["induction_change_in_tail"] < 0.05, (name, f["induction_change_in_tail"])  # measured TAILCHANGE
        # training runs on well past the window's end (a long plateau on the paper's linear axis)
        assert snaps[name][-1].tokens_seen >= 3 * f["window_tokens"][2], name


def test_on_prose_the_fall_starts_before_the_window(snaps):
    # NOT met on prose (the issue asks >= 70% on both sets): PROSEFALL
    for name in MULTI_LAYER:
        f = run_figures(snaps[name], "icl_score_prose")
        assert 0 < f["fall_inside_window"], (name, f["fall_inside_window"])


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_more_layers_end_with_more_in_context_learning_than_one(snaps, key):
    tokens = claims.eval_tokens(key, 2048)
    for name in MULTI_LAYER + ("attn1-smeared",):
        # paired: the final snapshots of attn1 and of this run on the same 2,048 examples
        gap = claims.paired_icl_change(snaps["attn1"][-1], snaps[name][-1], tokens)
        # measured FINALGAP
        least = 0.05 if name == "attn1-smeared" else 0.15
        assert gap.value <= -least and gap.value <= -3 * gap.se, (name, key, gap)


def test_the_papers_magnitude_on_code(figures):
    # Asked: final ICL <= -0.3. Measured MAGNITUDE
    assert figures["attn2"]["final_icl"] <= -0.3


def test_smeared_keys_make_even_one_layer_form_an_induction_head(figures, final):
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)
    pm = metrics.prefix_matching_scores(final["attn1-smeared"], repeated)
    assert pm.max() > 0.4  # measured 0.64 (L0H2, smear sigma 0.13: its keys are mostly the previous token's)
    f = figures["attn1-smeared"]
    assert f["window"] is not None and f["window_decades"] <= 0.6  # measured SMEAREDWIN
    assert f["fall_inside_window"] >= 0.7  # measured SMEAREDFALL


def test_smeared_keys_bring_the_two_layer_phase_change_earlier(figures):
    plain, smeared = figures["attn2"], figures["attn2-smeared"]
    assert smeared["window"] is not None
    assert smeared["window_tokens"][1] < plain["window_tokens"][1]


@torch.no_grad()
def test_ablating_the_induction_head_removes_in_context_learning(final):
    model = final["attn2"]
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)  # fresh probes, not the stored ones
    pm = metrics.prefix_matching_scores(model, repeated)
    prev = metrics.previous_token_scores(model, data.heldout_examples(16, 512, seed=99)[:, :128])
    induction, previous = (1, int(pm[1].argmax())), (0, int(prev[0].argmax()))
    examples = data.heldout_examples(1024, ICL_LATE_TOKEN + 2, seed=99)

    def effect(heads):
        rep_loss = per_token_loss(run_ablated(model, repeated, heads), repeated)[:, 25:].mean().item()
        losses = torch.cat(
            [
                per_token_loss(run_ablated(model, examples[i : i + 128], heads), examples[i : i + 128])
                for i in range(0, len(examples), 128)
            ]
        )
        return rep_loss, float((losses[:, ICL_LATE_TOKEN] - losses[:, ICL_EARLY_TOKEN]).mean())

    clean_rep, clean_icl = effect([])
    ind_rep, ind_icl = effect([induction])
    assert ind_rep - clean_rep > 2.0  # measured 2.33 -> 6.37 nats on the repeated halves (L1H3)
    assert ind_icl - clean_icl > 0.15  # measured -0.32 -> -0.05 (s.e. 0.075 on these 1,024 examples)
    heads = [(layer, h) for layer in range(2) for h in range(4)]
    others = {head: effect([head]) for head in heads if head != induction}
    # No other head's ablation does as much on either measure. The layer-0 heads that feed the induction head's
    # keys come closest (measured L0H1, the previous-token head: 5.84 nats, ICL -0.085; L0H3: 4.46, -0.121);
    # the other layer-1 heads move neither (at most +0.07 nats; ICL changes the other way).
    assert all(rep < ind_rep and icl < ind_icl for rep, icl in others.values()), others
    for head, (rep, icl) in others.items():
        if head[0] == 1:
            assert rep - clean_rep < 0.25 * (ind_rep - clean_rep) and icl - clean_icl < 0.25 * (ind_icl - clean_icl)
    # Of the other heads, the previous-token head matters most on the repeated tokens (measured 6.60 nats).
    assert max(others, key=lambda h: others[h][0]) == previous, (previous, others)


def test_the_stored_attribution_of_the_phase_change_points_at_the_circuit(snaps):
    # The tour's account of the Head attribution page (attn2, held-out code): pattern-preserving, the induction
    # head first; zero and mean, the previous-token head first and the induction head first of layer 1.
    from icl_core.analysis.precompute import stored_phase_attribution

    run = SHIPPED_DIR / "attn2"
    induction = best_induction_head(snaps["attn2"][-1])
    tops = {}
    for mode in ("pattern-preserving", "zero", "mean"):
        found, stored = stored_phase_attribution(run, snaps["attn2"], mode)
        assert stored and found is not None, mode
        ranked = sorted(found.rows, key=lambda r: r.score)  # most negative: carried most of the ICL fall
        tops[mode] = [(r.layer, r.index) for r in ranked]
    assert tops["pattern-preserving"][0] == induction, tops  # measured: L1H3
    previous_token = snaps["attn2"][-1].metrics.previous_token[0]
    previous = (0, int(np.argmax(previous_token)))
    for mode in ("zero", "mean"):  # measured: L0H1 (the previous-token head), L0H3, then L1H3
        assert tops[mode][0] == previous and [h for h in tops[mode] if h[0] == 1][0] == induction, tops


def test_loss_pca_is_deterministic_and_turns_at_the_onset_of_the_phase_change(snaps, figures):
    table = pca_table(snaps)
    again = pca_table({name: snaps[name] for name in reversed(RUNS)})
    assert table is not None and not table.skipped
    coords = {}
    for name in RUNS:
        rows = [r for r in table.rows if r["run"] == name]
        a = np.array([[r["pc1"], r["pc2"]] for r in rows])
        b = np.array([[r["pc1"], r["pc2"]] for r in again.rows if r["run"] == name])
        assert np.isfinite(a).all() and np.allclose(a, b)
        coords[name] = (a, [r["tokens"] for r in rows])
    for name in ("attn2", "attn3", "attn2-smeared"):
        xy, tokens = coords[name]
        turn = tokens[sharpest_turn(xy, tokens)]
        start, _, end = figures[name]["window_tokens"]
        # measured: attn2 4.6M (window 5.4M-30M), attn3 3.9M (4.6M-30M), attn2-smeared 1.6M (1.4M-4.1M): within
        # the statistic's own span of the window's start, or inside the window
        assert math.log10(start) - TURN_SPAN_DECADES <= math.log10(turn) <= math.log10(end), (name, turn, start)
    # Not claimed for attn1-smeared: its sharpest turn is at 12.8M tokens, long after its window (0.59M-1.9M),
    # where the plain 1-layer run turns too.


# -- both evaluation sets (held-out code, English prose), paired standard errors --------------------------------


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_one_layer_stays_flat_across_the_two_layer_window_as_a_paired_test(snaps, figures, key):
    start, _, end = figures["attn2"]["window_tokens"]
    tokens = claims.eval_tokens(key, 2048)
    one = claims.paired_icl_change(claims.nearest(snaps["attn1"], start), claims.nearest(snaps["attn1"], end), tokens)
    two = claims.paired_icl_change(claims.nearest(snaps["attn2"], start), claims.nearest(snaps["attn2"], end), tokens)
    # measured (2,048 examples each): attn1 code +0.022 ± 0.024, prose -0.009 ± 0.029
    assert abs(one.value) <= 2 * one.se, one
    # measured: attn2 code -0.162 ± 0.033 (4.9 s.e.; -0.141 ± 0.017 on all 8,192); prose -0.127 ± 0.040
    # (3.2 s.e.: the 5 s.e. NOT met on prose by these runs: wide windows, noisier prose scores)
    assert two.value <= -3 * two.se and two.value < one.value - 0.08, (two, one)


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_ablation_on_both_sets_the_induction_head_and_the_layer_0_head_feeding_it_matter(final, key):
    model = final["attn2"]
    changes = claims.ablation_icl_changes(model, claims.eval_tokens(key, 1024), "zero")
    pm = metrics.prefix_matching_scores(model, data.repeated_random_tokens(n_sequences=20, seed=99))
    induction = (1, int(pm[1].argmax()))
    # Zeroing the induction head raises the ICL score by many paired s.e. on both sets (2,048 examples: code
    # +0.250 ± 0.024, prose +0.228 ± 0.025) ...
    assert changes[induction].value > 5 * changes[induction].se, changes[induction]
    # ... and so does zeroing a layer-0 head, as much or more on prose (code L0H3 +0.203 ± 0.028; prose L0H3
    # +0.254 ± 0.030): zero ablation removes what the induction head's keys are built from. So "no other head
    # does as much" holds on code (test above) but not on prose.
    strongest_layer0 = max((h for h in changes if h[0] == 0), key=lambda h: changes[h].value)
    assert changes[strongest_layer0].value > 5 * changes[strongest_layer0].se
    # The other layer-1 heads carry little of it (at most +0.08 on prose; negative on code).
    for head, change in changes.items():
        if head[0] == 1 and head != induction:
            assert change.value < 0.5 * changes[induction].value, (head, change)
