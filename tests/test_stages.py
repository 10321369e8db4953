"""Stage boundaries from an LLC curve (icl_core.analysis.stages): the stated rule on curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from icl_core.analysis import stages
from icl_core.storage.published import TIMAEUS_TOKENS_PER_STEP, published_stage_boundaries

TOKENS = [int(t) for t in np.logspace(4, 8, 60)]


def test_a_rise_a_fall_and_a_rise_give_two_boundaries_at_the_turns() -> None:
    x = np.log10(TOKENS)
    # Up to a peak at 1e6 tokens, down to a trough at 1e7, up again.
    curve = np.interp(x, [4, 6, 7, 8], [0.0, 100.0, 60.0, 150.0])
    found = stages.stage_boundaries(TOKENS, curve.tolist(), [1.0] * len(TOKENS))
    assert len(found) == 2
    assert abs(np.log10(found[0]) - 6) < 0.15 and abs(np.log10(found[1]) - 7) < 0.15


def test_noise_alone_gives_no_boundary() -> None:
    rng = np.random.default_rng(0)
    rising = np.linspace(0, 100, len(TOKENS))
    noisy = rising + rng.normal(0, 2.0, len(TOKENS))
    assert stages.stage_boundaries(TOKENS, noisy.tolist(), [2.0] * len(TOKENS)) == []
    # The same wiggle, with estimates ten times more precise, is real: the rule follows the error bars.
    wiggle = rising + 20 * np.sin(np.log10(TOKENS) * 3)
    assert stages.stage_boundaries(TOKENS, wiggle.tolist(), [0.2] * len(TOKENS)) != []
    assert stages.stage_boundaries(TOKENS, wiggle.tolist(), [20.0] * len(TOKENS)) == []


def test_step_zero_and_short_runs_are_left_out() -> None:
    assert stages.stage_boundaries([0, 10, 100, 1000], [5.0, 1.0, 2.0, 1.0], [0.1] * 4) == []


def test_the_published_boundaries_are_hooglands_in_tokens() -> None:
    marks = published_stage_boundaries("timaeus/L2W256-3m-rr")
    assert [t for _, t in marks] == [s * TIMAEUS_TOKENS_PER_STEP for s in (900, 6_500, 8_500, 17_000)]
    assert marks[2][0].startswith("LM3 | LM4")  # the induction heads form in LM4
    assert published_stage_boundaries("NeelNanda/Attn_Only_2L512W_C4_Code") == []


def test_estimates_before_the_first_positive_one_do_not_count() -> None:
    """Early snapshots are not at a local minimum (negative LLC): their climb to 0 is not a stage."""
    x = np.log10(TOKENS)
    curve = np.interp(x, [4, 5, 6, 7, 8], [-1000.0, -500.0, 50.0, 120.0, 60.0])
    found = stages.stage_boundaries(TOKENS, curve.tolist(), [1.0] * len(TOKENS))
    assert len(found) == 1 and abs(np.log10(found[0]) - 7) < 0.15


def test_scatter_between_snapshots_sets_the_noise_floor_when_the_chains_agree() -> None:
    rng = np.random.default_rng(1)
    rising = np.linspace(10, 100, len(TOKENS)) + rng.normal(0, 6.0, len(TOKENS))
    # Chains that agree to 0.1 do not make snapshot-to-snapshot scatter of 6 a signal.
    assert stages.stage_boundaries(TOKENS, rising.tolist(), [0.1] * len(TOKENS)) == []


def test_growth_around_a_window_is_equal_on_a_straight_curve_and_larger_where_it_bends() -> None:
    x = np.log10(TOKENS)
    straight = 10 * (x - 4)
    g = stages.growth_around_window(TOKENS, straight.tolist(), 1_000_000, 3_000_000)
    assert g is not None and g.scatter < 0.5  # only the smoother's bias at the two ends of the curve
    assert g.before == pytest.approx(10, rel=0.1) and g.inside == pytest.approx(10, rel=0.1)
    assert g.after == pytest.approx(10, rel=0.1)
    # Thirty per decade inside the window only: the middle rate stands out by more than its s.e.
    bent = np.interp(x, [4, 6, np.log10(3e6), 8], [0, 20, 20 + 30 * np.log10(3), 40 + 30 * np.log10(3)])
    g = stages.growth_around_window(TOKENS, bent.tolist(), 1_000_000, 3_000_000)
    assert g is not None and g.before is not None and g.inside is not None
    assert g.inside - g.before > 10 + 3 * g.se_per_decade
    # Nothing valid before the window (negative estimates up to it): no "before" figure.
    early_invalid = np.where(x < 5.9, -5.0, bent)
    g = stages.growth_around_window(TOKENS, early_invalid.tolist(), 1_000_000, 3_000_000)
    assert g is not None and g.before is None and g.inside is not None
    # A head's refined LLC takes the whole model's verdict on where estimates are valid: its own dips below zero
    # (noise, at a small value) do not discard what comes before them.
    dipping = np.where(np.abs(x - 6.5) < 0.05, -0.5, bent)
    assert stages.growth_around_window(TOKENS, dipping.tolist(), 1_000_000, 3_000_000).before is None  # type: ignore[union-attr]
    g = stages.growth_around_window(TOKENS, dipping.tolist(), 1_000_000, 3_000_000, valid_from=10_000)
    assert g is not None and g.before == pytest.approx(10, rel=0.2)
    assert stages.first_valid_tokens(TOKENS, early_invalid.tolist()) == min(t for t in TOKENS if np.log10(t) >= 5.9)
