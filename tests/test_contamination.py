"""The contamination check (icl_core/analysis/contamination.py) on the shipped runs: what it shows on an untrained
model, and the confound it carries (the post-2020 files are harder code, whoever trained on them)."""

from __future__ import annotations

import pytest

from icl_core.analysis.contamination import N_WINDOWS, POST_PILE_FILES, SEED, contamination_check, later_text
from icl_core.stdlib_text import _is_held_out
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model

pytestmark = pytest.mark.skipif(later_text() is None, reason="this Python predates 3.11's new modules")


def test_an_untrained_model_shows_no_gap() -> None:
    c = contamination_check(load_model(list_snapshots(SHIPPED_DIR / "attn2")[0]))
    assert c is not None and abs(c.gap) < 0.01
    assert c.heldout.n_examples == c.later.n_examples == N_WINDOWS


@pytest.mark.parametrize("run", ["attn1", "attn2", "attn3"])
def test_the_later_files_are_harder_even_for_runs_that_trained_on_them(run: str) -> None:
    """README: our runs trained on the post-2020 files (they fall in the train split) and never on the held-out
    set, yet score the held-out set better, with the app's draw of windows and four others: the files are harder
    code. So a gap of that sign is not by itself a sign that a model saw the held-out set."""
    assert not any(_is_held_out(f) for f in POST_PILE_FILES)
    model = load_model(list_snapshots(SHIPPED_DIR / run)[-1])
    for seed in (SEED, 1, 2, 3, 4):
        c = contamination_check(model, seed=seed)
        assert c is not None
        assert -0.35 < c.gap < -0.05 and c.gap < -3 * c.gap_se, (seed, c)
