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
from icl_core.analysis import claims, metrics, robustness
from icl_core.analysis.ablation import run_ablated
from icl_core.analysis.claims import run_figures
from icl_core.analysis.pca import TURN_SPAN_DECADES, pca_table, sharpest_turn, token_positions
from icl_core.analysis.phase import best_induction_head, phase_window
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
        assert abs(f["step0_loss"] - f["ln_vocab"]) <= 0.1, (name, f["step0_loss"])  # measured 5.548-5.557
        assert abs(f["step0_icl"]) <= 0.03, (name, key, f["step0_icl"])  # measured -0.008 ... +0.007


def test_icl_scores_carry_their_standard_error(snaps, figures):
    for name, s in snaps.items():
        assert all(x.metrics.icl_examples == evalset.N_EXAMPLES for x in s), name
        assert figures[name]["final_icl_se"] <= 0.035, (name, figures[name]["final_icl_se"])  # measured 0.028-0.029


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
        # measured: attn2 5.86M-21.8M tokens, 0.57 decades; attn3 4.62M-13.3M, 0.46
        assert f["window_decades"] <= 0.6, (name, f["window_decades"])
        # >= 70% of the ICL fall from the 1M-token level to the end happens inside the window (held-out code;
        # prose below). Measured: attn2 74%, attn3 101%.
        assert f["fall_inside_window"] >= 0.7, (name, f["fall_inside_window"])
        # The induction head has settled: its prefix-matching score moves < 0.05 over the last third of the
        # tokens (linear, as the paper draws training). Measured: attn2 0.019; attn3 0.056, NOT met: its L2H2
        # goes 0.799, 0.742, 0.780 at 70M, 84M and 101M tokens (0.72-0.80 from 28M on, no trend).
        assert f["induction_change_in_tail"] < (0.05 if name == "attn2" else 0.06), (
            name,
            f["induction_change_in_tail"],
        )
        # training runs on well past the window's end (a long plateau on the paper's linear axis)
        assert snaps[name][-1].tokens_seen >= 3 * f["window_tokens"][2], name


def test_on_prose_attn3_falls_inside_its_window_attn2_partly_before_it_while_its_previous_token_head_forms(snaps):
    f = run_figures(snaps["attn3"], "icl_score_prose")
    assert f["fall_inside_window"] >= 0.7, f["fall_inside_window"]  # measured 87%
    # attn2 on prose: 39%, NOT the 70% asked (95% bootstrap interval 7-73%). A third of its prose fall comes between
    # 1M tokens and the window's start (0.098 ± 0.035 nats paired), while its previous-token head forms and its
    # induction head has not yet: what the window (located on the induction score) cannot hold.
    two = snaps["attn2"]
    f = run_figures(two, "icl_score_prose")
    assert 0.2 < f["fall_inside_window"] < 0.7, f["fall_inside_window"]
    before = claims.nearest(two, claims.FALL_FROM_TOKENS)
    start = next(s for s in two if s.step == f["window"].start_step)
    previous_token = [max(s.metrics.previous_token[0]) for s in (before, start)]
    induction = [max(s.metrics.prefix_matching[1]) for s in (before, start)]
    assert previous_token[1] - previous_token[0] >= 0.2, previous_token  # measured 0.13 -> 0.46
    assert max(induction) < 0.15, induction  # measured 0.08 -> 0.12


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_more_layers_end_with_more_in_context_learning_than_one(final, key):
    tokens = claims.eval_tokens(key, 2048)
    one = metrics.per_example_icl(final["attn1"], tokens)
    for name in MULTI_LAYER + ("attn1-smeared",):
        # paired: the final snapshots of attn1 and of this run on the same 2,048 examples
        gap = metrics.mean_with_se(metrics.per_example_icl(final[name], tokens) - one)
        # measured, code / prose: attn2 -0.238 ± 0.035 / -0.193 ± 0.042; attn3 -0.240 ± 0.036 / -0.074 ± 0.041;
        # attn1-smeared -0.143 ± 0.030 / -0.082 ± 0.034 (2.4 s.e.: its advantage is smaller on prose)
        if name == "attn3" and key == "icl_score_prose":
            # NOT met (asked: >= 0.15): 1.8 s.e. (2.2 with last-3-snapshot means)
            assert gap.value < 0, gap
            continue
        least, n_se = (0.05, 2 if key == "icl_score_prose" else 3) if name == "attn1-smeared" else (0.15, 3)
        assert gap.value <= -least and gap.value <= -n_se * gap.se, (name, key, gap)


def test_over_its_plateau_attn3_does_not_clearly_lose_in_context_learning_on_prose(snaps):
    """From 24.6M tokens (past every window) to the end, paired on the same examples. Single snapshots: prose
    +0.101 ± 0.033 (3.0 s.e.). With each end the mean of 3 neighbouring snapshots: +0.071 ± 0.026 (2.7 s.e.);
    an independent re-check on other English text found +0.050 ± 0.032 (1.6 s.e.). The README therefore makes
    no claim that attn3 loses in-context learning on prose; this test keeps that verdict true: the rise stays
    below 3 s.e. once one snapshot cannot decide it, and the code score's change stays within 2 s.e."""
    start = claims.nearest(snaps["attn3"], 24.6e6)
    last = snaps["attn3"][-1]
    prose = robustness.paired_change3(snaps["attn3"], start.step, last.step, claims.eval_tokens("icl_score_prose"))
    code = robustness.paired_change3(snaps["attn3"], start.step, last.step, claims.eval_tokens("icl_score", 2048))
    assert 0 < prose.value < 3 * prose.se, prose
    assert abs(code.value) < 2 * code.se, code


def test_across_attn2s_window_verdicts_hold_with_three_snapshot_ends(snaps):
    """attn2 falls by >= 5 paired s.e. on code with each end the mean of 3 neighbouring snapshots (measured
    -0.235 ± 0.027, 8.6 s.e.); attn1-smeared's prose move across the same window (+0.094 ± 0.026 on single
    snapshots) came from one low snapshot: with 3-snapshot ends it is +0.009 ± 0.021, within 2 s.e."""
    window = phase_window(snaps["attn2"])
    assert window is not None
    code = robustness.paired_change3(
        snaps["attn2"], window.start_step, window.end_step, claims.eval_tokens("icl_score", 2048)
    )
    assert code.value <= -5 * code.se, code
    prose = robustness.paired_change3(
        snaps["attn1-smeared"], window.start_step, window.end_step, claims.eval_tokens("icl_score_prose")
    )
    assert abs(prose.value) < 2 * prose.se, prose


def test_the_papers_magnitude_on_code(figures):
    # Asked: final ICL <= -0.3. Measured: attn2 -0.308 ± 0.028, attn2-smeared -0.303 ± 0.028 (both by less than
    # one s.e.); attn3 -0.254 ± 0.028, NOT met. Prose is far from it (-0.06 ... -0.23): byte tokens, next table.
    assert figures["attn2"]["final_icl"] <= -0.3 and figures["attn2-smeared"]["final_icl"] <= -0.3
    assert figures["attn3"]["final_icl"] <= -0.25


def test_smeared_keys_make_even_one_layer_form_an_induction_head(figures, final):
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)
    pm = metrics.prefix_matching_scores(final["attn1-smeared"], repeated)
    assert pm.max() > 0.4  # measured 0.62 (L0H2, smear sigma 0.15: its keys are mostly the previous token's)
    f = figures["attn1-smeared"]
    assert f["window"] is not None and f["window_decades"] <= 0.6  # measured 0.48 (0.59M-1.77M tokens)
    assert f["fall_inside_window"] >= 0.7  # measured 116% (code), 144% (prose)


def test_smeared_keys_bring_the_two_layer_phase_change_earlier(figures):
    plain, smeared = figures["attn2"], figures["attn2-smeared"]
    assert smeared["window"] is not None
    assert smeared["window_tokens"][1] < plain["window_tokens"][1]


@torch.no_grad()
def test_ablating_the_induction_head_removes_the_gain_from_a_repeat(final):
    model = final["attn2"]
    repeated = data.repeated_random_tokens(n_sequences=20, seed=99)  # fresh probes, not the stored ones
    pm = metrics.prefix_matching_scores(model, repeated)
    prev = metrics.previous_token_scores(model, data.heldout_examples(16, 512, seed=99)[:, :128])
    induction, previous = (1, int(pm[1].argmax())), (0, int(prev[0].argmax()))

    def second_copy_loss(heads):
        return per_token_loss(run_ablated(model, repeated, heads), repeated)[:, 25:].mean().item()

    clean, ablated = second_copy_loss([]), second_copy_loss([induction])
    assert ablated - clean > 2.0  # measured 2.49 -> 6.99 nats on the repeated halves (L1H3)
    others = {head: second_copy_loss([head]) for layer in range(2) for head in ((layer, h) for h in range(4))}
    del others[induction]
    # No other head's ablation does as much. The previous-token head comes closest (measured L0H1: 6.60 nats;
    # L0H3 4.82); the other layer-1 heads lower it a little (2.25-2.45). The ICL score's side of this claim is the
    # paired test on both sets below.
    assert all(loss < ablated for loss in others.values()), others
    assert max(others, key=others.get) == previous, (previous, others)
    for head, loss in others.items():
        if head[0] == 1:
            assert loss - clean < 0.25 * (ablated - clean), (head, loss)


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
    for name in ("attn3", "attn2-smeared"):
        xy, tokens = coords[name]
        start, _, end = figures[name]["window_tokens"]
        for span in (0.2, TURN_SPAN_DECADES, 0.3):  # the statistic's span, and either side of it
            turn = tokens[sharpest_turn(xy, tokens, span)]
            # measured: attn3 4.42M at every span 0.15-0.35 (window 4.62M-13.3M); attn2-smeared 1.77M at spans
            # 0.2-0.35 (window 1.22M-4.42M): inside the window, or within the statistic's span before its start
            assert math.log10(start) - span <= math.log10(turn) <= math.log10(end), (name, span, turn, start)
    # Not claimed for attn2: its sharpest turn moves with the span (spans 0.15-0.35: 9.5M, 1.8M, 21.8M, 4.1M,
    # 4.4M; window 5.86M-21.8M): neighbouring snapshots' turn strengths differ by a median factor of 2, so
    # "sharpest" is decided by the trajectory's jitter. Nor for attn1-smeared (0.59M at spans >= 0.25, 12-14M below).


# -- both evaluation sets (held-out code, English prose), paired standard errors --------------------------------


@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_one_layer_stays_flat_across_the_two_layer_window_as_a_paired_test(snaps, figures, key):
    start, _, end = figures["attn2"]["window_tokens"]
    tokens = claims.eval_tokens(key, 2048)
    one = claims.paired_icl_change(claims.nearest(snaps["attn1"], start), claims.nearest(snaps["attn1"], end), tokens)
    two = claims.paired_icl_change(claims.nearest(snaps["attn2"], start), claims.nearest(snaps["attn2"], end), tokens)
    # measured (2,048 examples each): attn1 code +0.039 ± 0.023 (1.7 s.e.), prose -0.024 ± 0.027 (0.9 s.e.)
    assert abs(one.value) <= 2 * one.se, one
    # measured: attn2 code -0.227 ± 0.033 (6.9 s.e.); prose -0.097 ± 0.038 (2.5 s.e.: the 5 s.e. asked NOT met on
    # prose: with 2,048 windows 5 s.e. needs a change of >= 0.19 nats, and a third of attn2's prose fall comes
    # before its window, test_on_prose_attn3_falls_inside...)
    n_se = 5 if key == "icl_score" else 2
    assert two.value <= -n_se * two.se and two.value < one.value - 0.05, (two, one)  # measured 0.27 / 0.07 apart


@pytest.mark.parametrize("run", MULTI_LAYER)
@pytest.mark.parametrize("key", claims.ICL_KEYS)
def test_ablation_on_both_sets_the_induction_head_and_layer_0_heads_matter(final, run, key):
    model = final[run]
    # 1,024 code examples; every prose window (2,048: with 1,024, L1H2 of attn2 reads +0.133 ± 0.053, too noisy)
    changes = claims.ablation_icl_changes(model, claims.eval_tokens(key, 1024 if key == "icl_score" else None), "zero")
    pm = metrics.prefix_matching_scores(model, data.repeated_random_tokens(n_sequences=20, seed=99))
    layer = int(pm[1:].max(1).values.argmax()) + 1
    induction = (layer, int(pm[layer].argmax()))
    # Zeroing the induction head raises the ICL score by many paired s.e. on both sets. Measured on 2,048
    # examples: attn2 L1H3 code +0.279 ± 0.026, prose +0.207 ± 0.026; attn3 L2H2 code +0.255 ± 0.024, prose
    # +0.178 ± 0.024 ...
    assert changes[induction].value > 5 * changes[induction].se, changes[induction]
    # ... and so does zeroing a layer-0 head, as much or more: zero ablation also removes what later heads read
    # from it. attn2: L0H2 code +0.203 ± 0.038, prose +0.389 ± 0.038 (more than the induction head); attn3: L0H2
    # code +0.256 ± 0.032 (as much), prose +0.459 ± 0.038. So "no other head does as much" holds only for attn2 on code.
    # (On 1,024 code examples, the prose set's 2,048, the layer-0 heads' s.e. is up to 0.08: the test asks 3 s.e.)
    strongest_layer0 = max((h for h in changes if h[0] == 0), key=lambda h: changes[h].value)
    assert changes[strongest_layer0].value > 3 * changes[strongest_layer0].se
    # The other heads after layer 0 carry less than half as much (measured: attn2 L1H2 +0.083 ± 0.039 on prose, -0.66
    # on code; in attn3 at most +0.02).
    for head, change in changes.items():
        if head[0] >= 1 and head != induction:
            assert change.value < 0.5 * changes[induction].value, (head, change)
