"""Figures that must not hang on one probe draw or one snapshot (icl_core.analysis.robustness), and what they
say about the shipped runs."""

from __future__ import annotations

import math

import pytest
import torch

from icl_core import data
from icl_core.analysis import precompute, robustness
from icl_core.analysis.phase import PhaseWindow, phase_window
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots


def test_draw_zero_is_the_apps_probe_and_the_others_are_other_tokens() -> None:
    own, seq_len = robustness.probe_draw(0, 512)
    expected, expected_len = data.prefix_matching_probe(512)
    assert torch.equal(own, expected) and seq_len == expected_len
    pools = [set(robustness.probe_draw(d, 512)[0][:, 1:].unique().tolist()) for d in range(1, 6)]
    assert all(pool <= set(robustness.PRINTABLE) for pool in pools)
    assert len({frozenset(p) for p in pools}) == 5  # five different pools
    tokens, n = robustness.probe_draw(3, 512)
    assert tokens.shape == own.shape and torch.equal(tokens[:, 1 : 1 + n], tokens[:, 1 + n : 1 + 2 * n])


def test_neighbours_at_the_ends_and_inside() -> None:
    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    steps = [s.step for s in snaps]
    assert [s.step for s in robustness.neighbours(snaps, steps[0])] == steps[:3]
    assert [s.step for s in robustness.neighbours(snaps, steps[10])] == steps[9:12]
    assert [s.step for s in robustness.neighbours(snaps, steps[-1])] == steps[-3:]
    final = robustness.mean3(snaps, steps[-1])
    stored = [s.metrics.icl_score for s in snaps[-3:]]
    assert final.value == pytest.approx(sum(v for v in stored if v is not None) / 3)


def test_window_spread_reports_the_range_over_draws() -> None:
    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    by = {s.step: s.tokens_seen for s in snaps}
    a = PhaseWindow(snaps[40].step, snaps[50].step, snaps[45].step, 0.5)
    b = PhaseWindow(snaps[41].step, snaps[55].step, snaps[45].step, 0.5)
    spread = robustness.window_spread(snaps, [a, None, b])
    assert (spread.n_draws, spread.n_found) == (3, 2)
    assert spread.start == (by[a.start_step], by[b.start_step]) and spread.end == (by[a.end_step], by[b.end_step])
    assert spread.decades is not None and spread.decades[0] == pytest.approx(
        math.log10(by[a.end_step] / by[a.start_step])
    )
    assert robustness.window_spread(snaps, [None, None]).start is None


def test_the_loss_bump_of_the_shipped_2_layer_run() -> None:
    """attn2's held-out loss rises above its trend inside its window by more than three times the jitter of the
    snapshots around it; attn3's does not (README, "The loss bump")."""
    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    window = phase_window(snaps)
    assert window is not None
    bump = robustness.loss_bump(snaps, window)
    assert bump is not None and bump.shows and bump.height > 0.03
    attn3 = list_snapshots(SHIPPED_DIR / "attn3")
    window3 = phase_window(attn3)
    assert window3 is not None
    bump3 = robustness.loss_bump(attn3, window3)
    assert bump3 is not None and not bump3.shows


@pytest.mark.parametrize("name", ["attn2", "attn3", "attn2-smeared", "attn1-smeared"])
def test_the_shipped_windows_over_probe_draws(name: str) -> None:
    """Stored beside each run (precompute.window_draws_rows): every draw finds a window; the width is 0.4-0.8
    decades (README: narrow with the app's probe only); the start holds to 0.05 decades in attn2 and attn3
    (5.32M-5.86M, 4.42M-4.62M), to 0.2 in the smeared-key runs (1.22M-1.77M, 0.49M-0.59M)."""
    run = SHIPPED_DIR / name
    snaps = list_snapshots(run)
    spread = precompute.stored_window_spread(run, snaps)
    assert spread is not None and spread.n_draws == 1 + robustness.N_OTHER_DRAWS and spread.n_found == spread.n_draws
    assert spread.start is not None and spread.decades is not None
    assert math.log10(spread.start[1] / spread.start[0]) < (0.05 if name in ("attn2", "attn3") else 0.2), spread
    assert 0.4 <= spread.decades[0] and spread.decades[1] <= 0.8, spread
    assert precompute.stored_window_spread(SHIPPED_DIR / "attn1", list_snapshots(SHIPPED_DIR / "attn1")) is not None
