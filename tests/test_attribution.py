import json
from pathlib import Path

import pytest
import torch

from icl_core import data
from icl_core.analysis.ablation import head_output_means, run_ablated
from icl_core.analysis.attribution import (
    ablation_change_vectors,
    attribution_over_training,
    attribution_scores,
    before_after_vector,
    pca_examples,
    phase_change_attribution,
    phase_endpoints,
)
from icl_core.analysis.head_ablation import head_ablation_losses
from icl_core.analysis.head_table import ablation_table
from icl_core.analysis.metrics import icl_score, loss_curve, per_token_losses
from icl_core.analysis.pca import select_positions, token_positions
from icl_core.model.config import ModelConfig
from icl_core.model.transformer import INIT_STD, AttnOnlyTransformer, per_token_loss
from icl_core.storage.snapshots import list_snapshots, load_model, write_snapshot

ROOT = Path(__file__).resolve().parents[1]


def _model(n_layers: int = 2, n_ctx: int = 40, seed: int = 0) -> AttnOnlyTransformer:
    torch.manual_seed(seed)
    model = AttnOnlyTransformer(ModelConfig(n_layers=n_layers, n_heads=2, d_model=16, d_head=4, n_ctx=n_ctx)).eval()
    with torch.no_grad():
        model.W_U.mul_(1 / INIT_STD)  # logits of a trained model's size, so ablations move the losses clearly
    return model


@pytest.mark.parametrize("tl_format", [False, True])
@pytest.mark.parametrize("mode", ["zero", "mean", "pattern-preserving"])
def test_head_ablation_losses_match_a_full_ablated_run(mode, tl_format):
    """Cut-short batches, the last-layer shortcut and linear propagation equal ablating and re-running;
    TransformerLens-format models (LayerNorm, biases, shortformer positions) take the second pass instead."""
    model = _model(n_layers=3)
    if tl_format:
        torch.manual_seed(5)
        cfg = ModelConfig(
            n_layers=3, n_heads=2, d_model=16, d_head=4, n_ctx=40, positional="shortformer", normalization="LN",
            biases=True,
        )  # fmt: skip
        model = AttnOnlyTransformer(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.5)
    tokens = torch.randint(0, 257, (10, 40), generator=torch.Generator().manual_seed(1))
    positions = torch.randint(0, 39, (10, 3), generator=torch.Generator().manual_seed(2))
    means = head_output_means(model, torch.randint(0, 257, (6, 40), generator=torch.Generator().manual_seed(3)))
    clean, ablated = head_ablation_losses(model, tokens, positions, mode, means=means, chunk=3)
    assert torch.allclose(clean, per_token_loss(model(tokens), tokens).gather(1, positions), atol=1e-5)
    assert sorted(ablated) == [(layer, h) for layer in range(3) for h in range(2)]
    for head, losses in ablated.items():
        expected = per_token_loss(run_ablated(model, tokens, [head], mode, means), tokens).gather(1, positions)
        assert torch.allclose(losses, expected, atol=1e-4), head


def test_head_ablation_losses_rejects_bad_positions():
    model = _model()
    with pytest.raises(ValueError, match="positions must lie"):
        head_ablation_losses(model, torch.zeros(2, 10, dtype=torch.long), torch.tensor([[9], [0]]))
    with pytest.raises(ValueError, match="unknown ablation mode"):
        head_ablation_losses(model, torch.zeros(2, 10, dtype=torch.long), torch.tensor([[1], [0]]), "ghost")


def test_ablation_table_shapes_flags_and_order():
    model = _model(n_ctx=512)
    with torch.no_grad():
        model.blocks[1].W_O[1].zero_()  # L1H1 writes nothing: ablating it changes nothing
    pm = [[0.9, 0.0], [0.5, 0.1]]  # layer 0 never counts as induction in a 2-layer model
    table = ablation_table(model, "zero", n_examples=3, n_repeated=3, repeat_len=20, prefix_matching=pm)
    assert len(table.rows) == 4 and table.mode == "zero" and table.repeat_len == 20
    assert {r.head for r in table.rows} == {"L0H0", "L0H1", "L1H0", "L1H1"}
    assert [r.head for r in table.rows if r.is_induction] == ["L1H0"]
    deltas = [r.delta_icl for r in table.rows]
    assert deltas == sorted(deltas, reverse=True)
    silent = next(r for r in table.rows if r.head == "L1H1")
    assert silent.delta_icl == pytest.approx(0.0, abs=1e-6)
    assert silent.delta_second_half == pytest.approx(0.0, abs=1e-6)
    for r in table.rows:
        assert r.icl_score == pytest.approx(table.clean_icl + r.delta_icl, abs=1e-6)
    records = table.records()
    assert records[0]["head"] == table.rows[0].head and "delta_second_half" in records[0]


def test_ablation_table_exact_icl_definition():
    model = _model(n_ctx=512)
    table = ablation_table(model, "zero", n_examples=3, n_repeated=2, repeat_len=10, icl_window=0)
    examples = data.heldout_examples(3, 512)
    assert table.clean_icl == pytest.approx(icl_score(loss_curve(per_token_losses(model, examples))), abs=1e-5)


def test_ablation_table_without_icl_sorts_by_the_repeat_loss():
    table = ablation_table(_model(n_ctx=40), "pattern-preserving", n_repeated=3, repeat_len=100)
    assert table.clean_icl is None and table.repeat_len == 19  # capped by the context
    assert all(r.delta_icl is None for r in table.rows)
    second = [r.delta_second_half for r in table.rows]
    assert second == sorted(second, reverse=True)
    with pytest.raises(ValueError, match="sort_by"):
        ablation_table(_model(), sort_by="size")


def test_attribution_scores_hand_made():
    ba = torch.tensor([0.6, -0.8, 0.0])
    scores = attribution_scores(
        ba, {(1, 0): torch.tensor([-3.0, 4.0, 0.0]), (0, 0): torch.tensor([0.0, 0.0, 2.0]), (1, 1): torch.zeros(3)}
    )
    assert scores[(1, 0)] == pytest.approx((-5.0, -1.0))
    assert scores[(0, 0)] == pytest.approx((0.0, 0.0))
    assert scores[(1, 1)] == (0.0, 0.0)
    with pytest.raises(ValueError):
        attribution_scores(ba, {(0, 0): torch.zeros(4)})


STEPS = [0, 10, 20, 30, 40, 50]
ICL = [0.0, -0.01, -0.02, -0.5, -0.55, -0.55]  # falls between steps 20 and 30


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run whose 'phase change' (steps 20 -> 30) is exactly the arrival of head L1H0.

    Every snapshot holds the same weights; the stored loss vector at step 20 is that model's loss with L1H0
    ablated (pattern-preserving), from step 30 on its clean loss.
    """
    run = tmp_path_factory.mktemp("run")
    model = _model(n_ctx=64)
    with torch.no_grad():
        model.blocks[1].W_O[0].mul_(4)  # the arriving head writes strongly, as an induction head does
    n_total = 8
    examples = pca_examples(n_total, 64)[0]
    positions = token_positions(n_total, 64)
    clean = select_positions(per_token_loss(model(examples), examples), positions).detach()
    ablated = select_positions(
        per_token_loss(run_ablated(model, examples, [(1, 0)], "pattern-preserving"), examples), positions
    )
    for step, icl in zip(STEPS, ICL, strict=True):
        vec = ablated if step <= 20 else clean
        metrics = {
            "icl_score": icl,
            "pca_losses": [float(x) for x in vec],
            "prefix_matching": [[0.0, 0.1], [0.8 if step >= 30 else 0.05, 0.1]],
        }
        write_snapshot(run, model, step, step * 100, metrics)
    return run, model, clean, ablated


def test_phase_change_attribution_finds_the_head_that_arrived(fake_run):
    run, model, clean, ablated = fake_run
    snaps = list_snapshots(run)
    ends = phase_endpoints(snaps)
    assert (ends.start.step, ends.end.step) == (20, 30)
    result = phase_change_attribution(snaps, "pattern-preserving", n_examples=None)
    assert result.n_examples == 8 and (result.start_step, result.end_step) == (20, 30)
    assert [r.head for r in result.rows][0] == "L1H0"
    top = result.rows[0]
    assert top.is_induction and top.cosine == pytest.approx(-1.0, abs=1e-4)
    assert top.score == pytest.approx(-float((ablated - clean).norm()), rel=1e-4)
    assert [r.score for r in result.rows] == sorted(r.score for r in result.rows)
    assert sum(r.is_induction for r in result.rows) == 1


def test_attribution_subset_uses_the_same_examples_for_both_vectors(fake_run):
    run, model, clean, ablated = fake_run
    snaps = list_snapshots(run)
    ba = before_after_vector(snaps[2], snaps[3], n_examples=5)
    assert ba.shape == (5,) and float(ba.norm()) == pytest.approx(1.0)
    assert torch.allclose(ba, ((clean - ablated)[:5] / (clean - ablated)[:5].norm()).float(), atol=1e-5)
    changes = ablation_change_vectors(load_model(snaps[3]), 8, "pattern-preserving", n_examples=5)
    assert torch.allclose(changes[(1, 0)], (ablated - clean)[:5], atol=1e-4)
    result = phase_change_attribution(snaps, "pattern-preserving", n_examples=5)
    aligned = min(result.rows, key=lambda r: r.cosine)  # on 5 examples another head may move the loss more
    assert result.n_examples == 5 and aligned.head == "L1H0"
    assert aligned.cosine == pytest.approx(-1.0, abs=1e-4), "the same 5 examples in both vectors"


def test_attribution_over_training_rows(fake_run):
    run, *_ = fake_run
    snaps = list_snapshots(run)
    calls = []
    rows = attribution_over_training(
        snaps, "zero", n_examples=4, steps=[0, 30], progress=lambda i, n: calls.append((i, n))
    )
    assert calls == [(1, 2), (2, 2)]
    assert len(rows) == 2 * 4 and {r["step"] for r in rows} == {0, 30}
    assert {r["head"] for r in rows if r["is_induction"]} == {"L1H0"}
    by_step = {(r["step"], r["head"]): r for r in rows}
    assert by_step[(0, "L1H0")]["prefix_matching"] == pytest.approx(0.05)  # the snapshot's own score
    assert by_step[(0, "L1H0")]["score"] == pytest.approx(by_step[(30, "L1H0")]["score"])  # same weights


def test_no_phase_change_gives_nothing(tmp_path):
    model = _model(n_ctx=64)
    for step in (0, 1, 2, 3):
        write_snapshot(tmp_path, model, step, step, {"icl_score": -0.01 * step, "pca_losses": [1.0, 2.0]})
    snaps = list_snapshots(tmp_path)
    assert phase_change_attribution(snaps) is None
    assert attribution_over_training(snaps) == []


def _shipped_finished(name: str) -> bool:
    manifest = ROOT / "checkpoints" / name / "run.json"
    try:
        return json.loads(manifest.read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


@pytest.mark.skipif(not _shipped_finished("attn2"), reason="checkpoints/attn2 is not a finished run")
def test_shipped_induction_heads_carry_the_phase_change():
    snaps = list_snapshots(ROOT / "checkpoints" / "attn2")
    result = phase_change_attribution(snaps, "pattern-preserving", n_examples=128)
    assert result is not None, "the shipped 2-layer run should show a phase change"
    layer1 = [r for r in result.rows if r.layer == 1]
    best = max(layer1, key=lambda r: r.prefix_matching)
    assert result.rows[0].head == best.head
    assert result.rows[0].score < 0
