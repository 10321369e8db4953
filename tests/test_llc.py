"""The LLC estimator (icl_core.analysis.llc) against devinterp 2.0.1, the field's own (a test-only dependency),
and the sanity checks an estimate must pass before it is believed."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from torch import nn

from icl_core.analysis import llc
from icl_core.storage.runs import SHIPPED_DIR
from icl_core.storage.snapshots import list_snapshots, load_model

# Short chains on few windows: what the comparisons need, in seconds on two cores.
QUICK = llc.SGLDSettings(n_chains=4, n_steps=40, n_windows=64)


@pytest.fixture(scope="module")
def attn2() -> list:
    return list_snapshots(SHIPPED_DIR / "attn2")


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return llc.llc_windows(512, QUICK.n_windows)


class _Plain(nn.Module):
    """Our model behind a plain module: devinterp takes any model with a `cfg.n_heads` for a TransformerLens
    HookedTransformer and calls it with TransformerLens-only arguments (slt/sampler.is_transformer_lens_model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids)


def test_the_estimate_agrees_with_devinterp(attn2: list, windows: torch.Tensor, tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    from devinterp.slt.llc import llc as devinterp_llc

    model = load_model(attn2[-1]).float()
    ours = llc.estimate_llc(model, windows, QUICK)
    data = datasets.Dataset.from_dict({"input_ids": windows.tolist()}).with_format("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = devinterp_llc(
            _Plain(model),
            data,
            {},
            lr=QUICK.epsilon,
            n_beta=QUICK.n_beta,
            localization=QUICK.gamma,
            num_chains=QUICK.n_chains,
            num_draws=QUICK.n_steps,
            batch_size=QUICK.batch_size,
            num_init_loss_batches=QUICK.n_steps,
            init_seed=QUICK.seed,
            device="cpu",
            output_path=tmp_path / "samples.zarr",
        )
    # The same batches in the same order: the loss at the starting weights is the same number.
    assert ours.init_loss == pytest.approx(float(theirs.init_loss), abs=1e-4)
    # Within the chains' spread, as issue 36 asks; in fact the same chains: devinterp seeds each chain's noise
    # with init_seed + chain, as ours does, and both draw it in the parameters' order (measured: equal to 0.1).
    their_mean, their_std = float(theirs.llc_mean), float(theirs.llc_std)
    assert abs(ours.mean - their_mean) <= ours.std + their_std, (ours.mean, ours.std, their_mean, their_std)
    assert ours.per_chain == pytest.approx([float(x) for x in theirs.llc_per_chain.values], rel=0.01, abs=0.5)
    assert their_mean > 0 and ours.mean > 0


def test_a_trained_snapshot_has_a_larger_llc_than_at_initialisation(attn2: list, windows: torch.Tensor) -> None:
    at_init = llc.estimate_llc(load_model(attn2[0]), windows, QUICK)
    trained = llc.estimate_llc(load_model(attn2[-1]), windows, QUICK)
    assert trained.mean - trained.std > at_init.mean + at_init.std, (at_init.mean, trained.mean)


def test_one_snapshot_is_stable_across_seeds(attn2: list) -> None:
    """The app's own settings, two seeds: within 10% (issue 36's bar)."""
    settings = llc.SGLDSettings()
    data = llc.llc_windows(512, settings.n_windows)
    model = load_model(attn2[-1])
    first = llc.estimate_llc(model, data, settings)
    second = llc.estimate_llc(model, data, dataclasses.replace(settings, seed=settings.seed + 1000))
    assert abs(first.mean - second.mean) <= 0.1 * abs(first.mean), (first.mean, second.mean)


def test_a_head_mask_moves_only_that_heads_weights(attn2: list) -> None:
    model = load_model(attn2[-1])
    masks = llc.head_mask(model, (1, 2))
    assert set(masks) == {"blocks.1.W_Q", "blocks.1.W_K", "blocks.1.W_V", "blocks.1.W_O"}
    for name, mask in masks.items():
        assert mask is not None
        assert mask[2].all() and not mask[[0, 1, 3]].any(), name
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    moved = llc.sgld_sample(model, llc.llc_windows(512, 16), dataclasses.replace(QUICK, n_steps=3, n_windows=16),
                            masks)  # fmt: skip
    for name, param in moved.named_parameters():
        mask = masks.get(name)
        changed = (param.detach() != before[name].float()).float()
        if mask is None:
            assert not changed.any(), name
        else:
            assert changed[mask].mean() > 0.99 and not changed[~mask].any(), name
    with pytest.raises(ValueError, match="no head 5.0"):
        llc.head_mask(model, (5, 0))


def _stored(name: str, data_set: str = "train") -> tuple[list, dict[int, llc.LLCEstimate]]:
    from icl_core.analysis.llc_over_training import stored_llc

    snaps = list_snapshots(SHIPPED_DIR / name)
    return snaps, stored_llc(SHIPPED_DIR / name, snaps, data_set)  # type: ignore[arg-type]


SHIPPED = ["attn1", "attn2", "attn3", "attn2-smeared", "attn1-smeared"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_runs_carry_the_llc_at_every_snapshot(name: str) -> None:
    snaps, estimates = _stored(name)
    assert sorted(estimates) == [s.step for s in snaps]
    assert all(e.settings == llc.DEFAULT_SETTINGS for e in estimates.values())
    assert estimates[snaps[-1].step].mean > estimates[snaps[0].step].mean  # trained > initialisation
    assert estimates[snaps[0].step].mean < 0  # not a local minimum: the README says the estimate is invalid there


def _curve(snaps: list, estimates: dict[int, llc.LLCEstimate]) -> tuple[list[int], list[float], list[float]]:
    from ui.landscape import llc_rows

    rows = llc_rows(snaps, estimates)
    return [r["tokens"] for r in rows], [r["llc"] for r in rows], [r["llc_se"] for r in rows]


def _windows_over_draws(name: str) -> list[tuple[int, int]]:
    from icl_core.analysis import precompute
    from icl_core.analysis.phase import PhaseWindow

    snaps = list_snapshots(SHIPPED_DIR / name)
    tokens = {s.step: s.tokens_seen for s in snaps}
    stored = precompute.load(SHIPPED_DIR / name, precompute.WINDOW_DRAWS, snaps)
    windows = [PhaseWindow(**w) for w in stored if w]
    return [(tokens[w.start_step], tokens[w.end_step]) for w in windows]


@pytest.mark.parametrize("name", SHIPPED)
def test_no_shipped_run_has_an_llc_stage_boundary(name: str) -> None:
    """README: by the stated rule the LLC has no stage boundary on any shipped run (it rises throughout once
    valid), so it does not place the phase-change window; checked on the prose too where it is stored."""
    from icl_core.analysis import stages

    for data_set in ("train", "prose"):
        snaps, estimates = _stored(name, data_set)
        if data_set == "prose" and len(estimates) < len(snaps) // 2:
            continue  # the prose check is stored for attn1, attn2 and attn3 (every other snapshot)
        assert stages.stage_boundaries(*_curve(snaps, estimates)) == [], (name, data_set)


@pytest.mark.parametrize("name", ["attn2", "attn3"])
def test_the_llc_grows_faster_inside_the_window_than_before_it_but_not_decisively(name: str) -> None:
    """README: on attn2 and attn3 the LLC grows faster per decade of tokens inside the window than in the
    stretch before it, with every one of the six probe draws' windows, by less than 3.5 s.e. of the difference
    (suggestive, not decisive); attn1, which has no window, grows slower than both over the same stretches."""
    from icl_core.analysis import stages

    snaps, estimates = _stored(name)
    tokens, values, _ = _curve(snaps, estimates)
    one_layer = _curve(*_stored("attn1"))
    windows = _windows_over_draws(name)
    assert len(windows) == 6
    for window in windows:
        g = stages.growth_around_window(tokens, values, *window)
        assert g is not None and g.before is not None and g.inside is not None
        z = (g.inside - g.before) / (math.sqrt(2) * g.se_per_decade)
        assert 0 < z < 3.5, (window, g)
        control = stages.growth_around_window(one_layer[0], one_layer[1], *window)
        assert control is not None and control.inside is not None and control.inside < g.inside


def test_on_attn2_the_layer0_heads_refined_llc_rises_before_the_window_and_layer1s_stays_low() -> None:
    """README: by the start of attn2's window the refined LLC of L0H0, L0H1 (its previous-token head) and L0H3
    has risen to 4-6, while every layer-1 head's, the induction head L1H3's included, is at most 2
    (3-snapshot means); at 1M tokens all are near 1. At the end every layer-0 head is above every layer-1 head,
    and the induction head is not the highest of its layer."""
    import numpy as np

    from icl_core.analysis.llc_over_training import stored_rllc
    from icl_core.analysis.phase import phase_window

    snaps = list_snapshots(SHIPPED_DIR / "attn2")
    rllc = stored_rllc(SHIPPED_DIR / "attn2", snaps)
    complete = [s for s in snaps if len(rllc.get(s.step, {})) == 8]
    window = phase_window(snaps)
    assert window is not None

    def mean3(step: int, head: str) -> float:
        i = next(k for k, s in enumerate(complete) if s.step >= step)
        return float(np.mean([rllc[s.step][head].mean for s in complete[max(i - 1, 0) : i + 2]]))

    early = next(s.step for s in complete if s.tokens_seen >= 1_000_000)
    for head in ("L0H0", "L0H1", "L0H3"):
        assert mean3(early, head) < 1.5 and 4 < mean3(window.start_step, head) < 7, head
    for head in ("L1H0", "L1H1", "L1H2", "L1H3"):
        assert mean3(window.start_step, head) < 2.0, head
    # At the end: layer 0 above every layer-1 head, and the induction head not even the highest of its layer.
    last = rllc[snaps[-1].step]
    assert min(last[h].mean for h in ("L0H0", "L0H1", "L0H2", "L0H3")) > max(
        last[h].mean for h in ("L1H0", "L1H1", "L1H2", "L1H3")
    )
    assert last["L1H3"].mean < max(last[h].mean for h in ("L1H0", "L1H1", "L1H2"))


@pytest.mark.parametrize(("name", "induction"), [("attn2", "L1H3"), ("attn3", "L2H2")])
def test_the_induction_heads_refined_llc_separates_from_its_layer_at_the_window(name: str, induction: str) -> None:
    """README: the induction head's refined LLC minus the mean of the other heads of its layer, per snapshot: not
    above zero before the window (from 1M tokens; attn2 ~0, attn3 below), about 1 or more inside it and after it;
    the change is over 3 s.e. of the snapshots' scatter. Both sweeps are complete."""
    import numpy as np

    from icl_core.analysis.llc_over_training import stored_rllc
    from icl_core.analysis.phase import phase_window

    snaps = list_snapshots(SHIPPED_DIR / name)
    rllc = stored_rllc(SHIPPED_DIR / name, snaps)
    cfg = snaps[-1].model_config
    complete = [s for s in snaps if len(rllc.get(s.step, {})) == cfg.n_layers * cfg.n_heads]
    assert len(complete) == len(snaps), "the sweep is complete"
    window = phase_window(snaps)
    assert window is not None
    layer = induction[:2]
    others = [f"{layer}H{h}" for h in range(cfg.n_heads) if f"{layer}H{h}" != induction]

    def gaps(part: list) -> tuple[float, float]:
        g = [rllc[s.step][induction].mean - np.mean([rllc[s.step][o].mean for o in others]) for s in part]
        return float(np.mean(g)), float(np.std(g, ddof=1) / np.sqrt(len(g)))

    before = gaps([s for s in complete if s.tokens_seen >= 1_000_000 and s.step < window.start_step])
    inside = gaps([s for s in complete if window.start_step <= s.step <= window.end_step])
    after = gaps([s for s in complete if s.step > window.end_step])
    assert before[0] < 2 * before[1] + 0.1 and (name != "attn2" or abs(before[0]) < 2 * before[1] + 0.1), before
    assert inside[0] > 0.6 and after[0] > 0.6, (inside, after)
    assert inside[0] - before[0] > 3 * float(np.hypot(inside[1], before[1])), (before, inside)


def test_on_attn3_the_previous_token_heads_refined_llc_leads_every_head_from_the_window_start() -> None:
    """README: on attn3 the refined LLC of L0H1, its previous-token head, is the highest of all twelve heads at
    the window's start and end (3-snapshot means); every head of layers 1 and 2 is at most 1.5 at the start."""
    import numpy as np

    from icl_core.analysis.llc_over_training import stored_rllc
    from icl_core.analysis.phase import phase_window

    snaps = list_snapshots(SHIPPED_DIR / "attn3")
    rllc = stored_rllc(SHIPPED_DIR / "attn3", snaps)
    heads = [f"L{layer}H{h}" for layer in range(3) for h in range(4)]
    complete = [s for s in snaps if len(rllc.get(s.step, {})) == len(heads)]
    window = phase_window(snaps)
    assert window is not None and len(complete) == len(snaps)

    def mean3(step: int, head: str) -> float:
        i = next(k for k, s in enumerate(complete) if s.step >= step)
        return float(np.mean([rllc[s.step][head].mean for s in complete[max(i - 1, 0) : i + 2]]))

    for step in (window.start_step, window.end_step):
        at = {h: mean3(step, h) for h in heads}
        assert max(at, key=at.__getitem__) == "L0H1", (step, at)
    assert all(mean3(window.start_step, h) <= 1.5 for h in heads[4:])


@pytest.mark.parametrize("name", ["attn2", "attn3"])
def test_on_prose_the_llc_is_not_valid_at_the_window_start(name: str) -> None:
    """README: on the held-out prose SGLD finds lower loss next to the weights (a negative estimate) until after
    the window's start with every probe draw: the snapshots sit at a minimum of the code loss, not the prose
    loss, so the prose estimate cannot place the window; where valid it still rises (checked above: no boundary)."""
    from icl_core.analysis import stages

    snaps, estimates = _stored(name, "prose")
    assert len(estimates) == len(snaps) // 2 + 1  # every other snapshot and the last
    tokens, values, _ = _curve(snaps, estimates)
    valid_from = stages.first_valid_tokens(tokens, values)
    assert valid_from is not None
    assert all(valid_from > start for start, _ in _windows_over_draws(name))
    assert values[-1] > values[tokens.index(valid_from)]
