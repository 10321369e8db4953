"""The computations behind the pages (text analysis, live ablation, summaries, PCA table), without Streamlit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from icl_core.analysis import ablation, metrics
from icl_core.analysis.ablation import (
    ablation_hooks,
    pattern_freezing_hooks,
    record_patterns,
    run_ablated,
    zero_ablation_hooks,
)
from icl_core.analysis.pca import highlighted_pca_rows, pca_table
from icl_core.analysis.phase import induction_onset, phase_status, phase_window
from icl_core.analysis.summary import nearest_by_tokens, nearest_step, summary_rows
from icl_core.analysis.text import PRESETS, analyze_tokens, prepare_text, preset_text
from icl_core.errors import InputTextError
from icl_core.heads import induction_heads, random_other_head
from icl_core.model.config import ModelConfig, train_config_from_dict
from icl_core.model.transformer import AttnOnlyTransformer
from icl_core.storage.runs import extra_run_refs
from icl_core.storage.snapshot_metrics import SnapshotMetrics
from icl_core.storage.snapshots import SnapshotInfo, write_manifest


@pytest.fixture(scope="module")
def model() -> AttnOnlyTransformer:
    torch.manual_seed(0)
    return AttnOnlyTransformer(ModelConfig(n_layers=3, n_heads=2, d_model=32, d_head=8, n_ctx=64)).eval()


def test_presets_repeat_and_fit_a_heatmap() -> None:
    for name in PRESETS:
        text = preset_text(name)
        assert 20 < len(text) < 100
    rnd = preset_text("Repeated random tokens")
    assert rnd[:25] == rnd[25:] and rnd.isprintable()
    fuzzy = preset_text("Fuzzy repeat (case-flipped)")
    half = len(fuzzy) // 2
    assert fuzzy[half:] == fuzzy[:half].swapcase()
    with pytest.raises(InputTextError):
        preset_text("nope")


def test_prepare_text_reports_empty_truncated_and_non_ascii() -> None:
    with pytest.raises(InputTextError):
        prepare_text("   ", 64)
    prepared = prepare_text("é" * 100, 64)
    assert len(prepared.tokens) == 64
    assert any("only the first 64" in n for n in prepared.notes)
    assert any("non-ASCII" in n for n in prepared.notes)
    assert prepare_text("abc", 64).notes == ()


def test_analyze_tokens_and_text_prefix_matching(model: AttnOnlyTransformer) -> None:
    an = analyze_tokens(model, prepare_text("abcdabcd", 64).tokens)
    n = 9
    assert an.patterns.shape == (3, 2, n, n) and an.losses.shape == (n - 1,)
    assert an.top_ids.shape == (n, 5) and np.all(np.diff(an.top_probs, axis=1) <= 1e-6)
    assert an.targets[5, 2] and not an.targets[4, 2]  # 'a' at 5 -> 'b' at 2 follows the earlier 'a'
    expected = (an.patterns[..., 5:, :] * an.targets[5:]).sum(-1).mean(-1)
    np.testing.assert_allclose(an.text_prefix_matching, expected, rtol=1e-5)
    none = analyze_tokens(model, prepare_text("abcd", 64).tokens)
    assert np.isnan(none.text_prefix_matching).all()


@pytest.mark.parametrize("heads", [[(0, 1)], [(1, 0), (2, 1)], [(2, 0)]])
def test_freezing_only_later_layers_matches_freezing_all(model: AttnOnlyTransformer, heads) -> None:
    tokens = torch.randint(0, 256, (3, 40), generator=torch.Generator().manual_seed(1))
    every_layer = record_patterns(model, tokens, list(range(model.cfg.n_layers)))
    ref = model.run_with_hooks(tokens, pattern_freezing_hooks(every_layer) + zero_ablation_hooks(heads))
    torch.testing.assert_close(run_ablated(model, tokens, heads, "pattern-preserving"), ref)
    clean = record_patterns(model, tokens, list(range(1, model.cfg.n_layers)))
    hooks = ablation_hooks(model, tokens, heads, "pattern-preserving", clean=clean)
    torch.testing.assert_close(model.run_with_hooks(tokens, hooks), ref)


def test_ablation_effect_reports_both_copies(model: AttnOnlyTransformer) -> None:
    probes = ablation.make_probes(model.cfg.n_ctx, n_repeated=2, half_len=20, n_heldout=2)
    assert probes.repeated.shape == (2, 41)
    clean = ablation.ablation_effect(model, [], "zero", probes)
    assert clean.icl_score is None  # a 64-token context has no token 500
    assert len(clean.loss_curve) == model.cfg.n_ctx - 1
    cached = ablation.record_probe_patterns(model, probes)
    a = ablation.ablation_effect(model, [(0, 0)], "pattern-preserving", probes)
    b = ablation.ablation_effect(model, [(0, 0)], "pattern-preserving", probes, clean=cached)
    assert a.second_half_loss == pytest.approx(b.second_half_loss, abs=1e-3)  # cached patterns are fp16


def test_windowed_icl_score() -> None:
    curve = np.ones(511)
    curve[490:511] = 0.5
    assert metrics.windowed_icl_score(curve) == pytest.approx(-0.5)
    assert metrics.windowed_icl_score(np.ones(100)) is None


def test_induction_heads_and_random_other_head() -> None:
    pm = [[0.9, 0.1], [0.2, 0.6], [0.5, 0.05]]
    assert induction_heads(pm, 0.3) == [(1, 1), (2, 0)]  # layer 0 never counts in a deep model
    assert induction_heads([[0.1, 0.7]], 0.3) == [(0, 1)]  # ... but does in a 1-layer model
    other = random_other_head(3, 2, [(1, 1), (2, 0)], seed=3)
    assert other not in {(1, 1), (2, 0)} and other == random_other_head(3, 2, [(1, 1), (2, 0)], seed=3)
    assert random_other_head(1, 1, [(0, 0)]) is None


def _grid(rows: list[list[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in rows)


def _snap(step: int, tokens: int, vec: list[float], n_ctx: int = 512, icl: float = -0.1) -> SnapshotInfo:
    cfg = ModelConfig(n_ctx=n_ctx)
    return SnapshotInfo(Path("/nowhere"), step, tokens, cfg, SnapshotMetrics(icl_score=icl, pca_losses=tuple(vec)))


def test_pca_table_groups_comparable_runs_and_highlights_by_tokens() -> None:
    rng = np.random.default_rng(0)
    a = [_snap(s, s * 100, rng.normal(size=6).tolist()) for s in (0, 10, 20, 40)]
    b = [_snap(s, s * 200, rng.normal(size=6).tolist()) for s in (0, 5, 10, 20)]
    odd = [_snap(s, s, rng.normal(size=4).tolist()) for s in (0, 1)]
    table = pca_table({"a": a, "b": b, "odd": odd}, focus_run="a", min_step=0)
    assert table is not None and {r["run"] for r in table.rows} == {"a", "b"}
    assert "odd" in table.skipped
    hl = highlighted_pca_rows(table, "a", 20)  # 2000 tokens: b's nearest is its step 10
    assert {(h["run"], h["step"], h["focus"]) for h in hl} == {("a", 20, True), ("b", 10, False)}
    assert highlighted_pca_rows(table, "a", 15) == []  # a step not in the plane, no tokens given
    late = pca_table({"a": a, "b": b}, focus_run="a", min_step=10)
    hl = highlighted_pca_rows(late, "a", 0, tokens=0)  # step 0 is before the fit: nearest points
    assert {(h["run"], h["step"], h["focus"]) for h in hl} == {("a", 10, True), ("b", 10, False)}


def test_the_pca_plane_cuts_vectors_to_the_focus_runs_examples_and_groups_by_tokenizer_file(tmp_path: Path) -> None:
    """Pythia's sizes are evaluated on fewer examples the larger they are (the FLOP budget) but on the same
    windows in the same tokenizer: the plane of the smaller count holds both, each vector cut to that count."""
    from tl_fixtures import tiny_tokenizer_json

    from icl_core.analysis.pca import joint_pca

    def bpe_run(name: str, tokenizer_json: bytes, n: int, rng: np.random.Generator) -> list[SnapshotInfo]:
        (tmp_path / name / "tokenizer").mkdir(parents=True)
        (tmp_path / name / "tokenizer" / "tokenizer.json").write_bytes(tokenizer_json)
        cfg = ModelConfig(n_ctx=2048, d_vocab=128, tokenizer=f"EleutherAI/{name}")  # each repo names its own
        return [
            SnapshotInfo(tmp_path / name, s, s * 10, cfg, SnapshotMetrics(pca_losses=tuple(rng.normal(size=n))))
            for s in (0, 1, 2)
        ]

    rng = np.random.default_rng(1)
    tok, other_tok = tiny_tokenizer_json(120), tiny_tokenizer_json(120, ["zebra quartz jump"] * 20)
    runs = {"small": bpe_run("small", tok, 28, rng), "large": bpe_run("large", tok, 8, rng)}
    runs["other"] = bpe_run("other", other_tok, 8, rng)
    on_large = pca_table(runs, focus_run="large", min_step=0)
    assert on_large is not None and on_large.n_examples == 8
    assert {r["run"] for r in on_large.rows} == {"small", "large"}, "one tokenizer file, two repo names"
    assert "other" in on_large.skipped and "other examples" in on_large.skipped["other"]
    cut = {n: [(s.step, np.asarray(s.metrics.pca_losses)[:8]) for s in runs[n]] for n in ("small", "large")}
    expected = joint_pca(cut)
    got = np.array([[r["pc1"], r["pc2"]] for r in sorted(on_large.rows, key=lambda r: (r["run"], r["step"]))])
    np.testing.assert_allclose(got, np.concatenate([expected.coords["large"], expected.coords["small"]]))
    on_small = pca_table(runs, focus_run="small", min_step=0)
    assert on_small is not None and on_small.n_examples == 28 and {r["run"] for r in on_small.rows} == {"small"}
    assert "fewer than this plane's 28" in on_small.skipped["large"]


def test_held_out_examples_of_one_draw_agree_on_their_first_rows() -> None:
    """What lets pca_table cut loss vectors to a common count: the same first windows and the same positions."""
    from icl_core import data
    from icl_core.analysis.pca import token_positions

    for n_ctx in (512, 700):  # the evaluation set's rows; windows sampled from the held-out text
        assert data.heldout_draw(8, n_ctx) == data.heldout_draw(64, n_ctx)
        assert torch.equal(data.heldout_examples(64, n_ctx)[:8], data.heldout_examples(8, n_ctx))
        assert torch.equal(token_positions(64, n_ctx)[:8], token_positions(8, n_ctx))
    assert data.heldout_draw(8, 512) != data.heldout_draw(9000, 512), "past the set's 8,192 rows: another draw"


def test_summary_rows_phase_window_and_nearest_step() -> None:
    snaps = [_snap(s, s * 10, [0.0], icl=v) for s, v in enumerate([0, 0, 0, 0, -0.1, -0.4, -0.5, -0.5, -0.5, -0.5])]
    rows = summary_rows(snaps)
    assert rows[5]["icl_score"] == -0.4 and rows[0]["max_prefix_matching"] is None
    window = phase_window(snaps)
    assert window is not None and window.start_step <= 5 <= window.end_step
    assert phase_status(window, 0) == "before the phase change"
    assert phase_status(None, 3) == "no phase change"
    assert nearest_step([0, 10, 100], 60) == 100
    assert nearest_by_tokens([0, 100, 10_000], 900) == 1


def test_extra_run_refs_accepts_runs_and_folders_of_runs(tmp_path: Path) -> None:
    cfg = train_config_from_dict({"run_name": "r1"})
    write_manifest(tmp_path / "many" / "r1", cfg)
    write_manifest(tmp_path / "many" / "r2", cfg)
    write_manifest(tmp_path / "single", cfg)
    (tmp_path / "many" / "not-a-run").mkdir()
    refs = extra_run_refs(f"{tmp_path / 'many'}:{tmp_path / 'single'}:{tmp_path / 'missing'}")
    assert [r.name for r in refs] == ["r1", "r2", "single"] and {r.source for r in refs} == {"extra"}


def test_induction_onset_needs_two_snapshots_above_threshold() -> None:
    def snap(step: int, pm: list[list[float]]) -> SnapshotInfo:
        return SnapshotInfo(Path("/nowhere"), step, step, ModelConfig(), SnapshotMetrics(prefix_matching=_grid(pm)))

    blip = [snap(0, [[0.9, 0], [0.1, 0]]), snap(1, [[0, 0], [0.5, 0]]), snap(2, [[0, 0], [0.1, 0]])]
    assert induction_onset(blip) is None  # layer 0 never counts; one snapshot above is a blip
    grows = [*blip, snap(3, [[0, 0], [0.1, 0.4]]), snap(4, [[0, 0], [0.1, 0.8]])]
    assert induction_onset(grows) == (3, (1, 1))
