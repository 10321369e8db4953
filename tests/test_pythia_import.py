"""Pythia imported by revision from a fake repo laid out as EleutherAI's (tests/pythia_fixtures.py): listed from the
refs and tree routes, the duplicated branches left out and named, each chosen revision streamed from its own branch
(safetensors where it has them, the pickle only where not), converted, evaluated, and equal to transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from pythia_fixtures import DUPLICATED, PYTHIA_REPO, pythia_model

from icl_core.analysis.evaluation import evaluate_snapshot
from icl_core.errors import CheckpointError
from icl_core.model.neox import NeoXTransformer
from icl_core.storage import published, tl_hub
from icl_core.storage.published import PYTHIA_TOKENS_PER_STEP
from icl_core.storage.snapshots import list_snapshots, load_model
from icl_core.tasks import import_cli

pytest.importorskip("transformers")


def resolved(fake_hub: FakeHub) -> list[tuple[str, str]]:
    """(revision, file) of every resolve call (HEAD or GET)."""
    out = []
    for _, path in fake_hub.requests:
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            out.append((parts[3], "/".join(parts[4:])))
    return out


def test_the_listing_labels_every_step_and_leaves_out_the_duplicates(fake_hub: FakeHub, pythia_like: str) -> None:
    repo = tl_hub.list_repo(pythia_like)
    assert repo.model_config.family == "gpt-neox" and repo.model_config.tokenizer == PYTHIA_REPO
    assert repo.unit == "step" and repo.tokens_per_step == PYTHIA_TOKENS_PER_STEP == 2_097_152
    assert len(repo.checkpoints) == 154 - len(DUPLICATED)
    assert not {c.revision for c in repo.checkpoints} & set(DUPLICATED)
    assert repo.flagged == tuple(f"{b} (its weights file is step143000's)" for b in DUPLICATED)
    assert {c.path for c in repo.checkpoints if c.revision == "step2"} == {"pytorch_model.bin"}
    assert {c.path for c in repo.checkpoints if c.revision == "step4"} == {"model.safetensors"}
    plan = tl_hub.describe(repo, tl_hub.choose(repo, 12))
    assert "step3000" in plan and "step99000" in plan, "the plan names what it skips"
    assert set(resolved(fake_hub)) == {("main", "config.json")}, "only the config is fetched to list"


def test_the_default_choice_takes_every_revision_inside_the_window(pythia_like: str) -> None:
    repo = tl_hub.list_repo(pythia_like)
    assert repo.window == published.PYTHIA_WINDOW
    chosen = tl_hub.choose(repo, 12)
    inside = [c.label for c in repo.checkpoints if 256 <= c.label <= 4000 and c.revision not in DUPLICATED]
    assert inside == [256, 512, 1000, 2000, 4000]  # step3000 is a duplicate of main here
    assert set(inside) <= {c.label for c in chosen}
    assert chosen[0].label == 0 and chosen[-1].label == 143_000


def test_an_import_streams_each_revision_from_its_branch_and_matches_transformers(
    fake_hub: FakeHub, pythia_like: str
) -> None:
    repo = tl_hub.list_repo(pythia_like)
    steps = (0, 2, 4, 1000, 143_000)
    chosen = [c for c in repo.checkpoints if c.label in steps]
    run_dir = tl_hub.import_checkpoints(repo, chosen, on_snapshot=evaluate_snapshot)
    snaps = list_snapshots(run_dir)
    assert [(s.step, s.tokens_seen) for s in snaps] == [(s, s * 2_097_152) for s in steps]
    fetched = resolved(fake_hub)
    weights = {(rev, f) for rev, f in fetched if f.endswith((".bin", ".safetensors"))}
    assert weights == {(f"step{s}", "pytorch_model.bin" if s == 2 else "model.safetensors") for s in steps}
    assert ("main", "tokenizer.json") in fetched
    tokens = torch.randint(0, 120, (2, 30), generator=torch.Generator().manual_seed(0))
    for snap in snaps:
        ours = load_model(snap)
        assert isinstance(ours, NeoXTransformer)
        with torch.no_grad():
            theirs = pythia_model(snap.step).half().float()(tokens).logits
            assert torch.allclose(ours(tokens), theirs, atol=1e-3), snap.step
        m = snap.metrics
        assert m.heldout_loss is not None and m.prefix_matching is not None and m.previous_token is not None
        assert m.copying is None, "the weight-only copying score is not stored for a model with MLPs"
    assert list(run_dir.glob("tokenizer/tokenizer.json"))


def test_a_revision_whose_weights_do_not_fit_the_config_is_refused(fake_hub: FakeHub, pythia_like: str) -> None:
    files = dict(fake_hub.files(PYTHIA_REPO, "step8"))
    other = fake_hub.files(PYTHIA_REPO, "main")
    fake_hub.add_repo(PYTHIA_REPO, {**files, "model.safetensors": other["model.safetensors"][:-100]}, branch="step8")
    repo = tl_hub.list_repo(pythia_like)
    with pytest.raises(CheckpointError, match="step8"):
        tl_hub.import_checkpoints(repo, [c for c in repo.checkpoints if c.label == 8])


def test_the_cli_imports_pythia_by_revision(fake_hub: FakeHub, pythia_like: str, capsys) -> None:
    assert import_cli.main([PYTHIA_REPO, "--checkpoints", "3", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "3 of 152 checkpoints" in out and "step3000" in out
    repo = tl_hub.list_repo(PYTHIA_REPO)
    snaps = list_snapshots(tl_hub.run_dir_for(repo))
    assert [s.step for s in snaps] == [c.label for c in tl_hub.choose(repo, 3)]
    assert snaps[0].step == 0 and snaps[-1].step == 143_000
    assert all(s.tokens_seen == s.step * 2_097_152 and s.metrics.recorded for s in snaps)


def test_every_page_works_on_a_pythia_run_and_says_what_does_not_apply(fake_hub: FakeHub, pythia_like: str) -> None:
    """Every page on a model with MLPs: no traceback, no error; the Circuits page says why its scores are hidden."""
    from conftest import open_page

    from icl_core.analysis.circuits import NOT_WEIGHT_ONLY
    from icl_core.storage.runs import discover_runs
    from ui.nav import PAGES

    repo = tl_hub.list_repo(pythia_like)
    chosen = [c for c in repo.checkpoints if c.label in (0, 512, 1000, 2000, 143_000)]
    run_dir = tl_hub.import_checkpoints(repo, chosen, on_snapshot=evaluate_snapshot)
    name = next(r.name for r in discover_runs() if r.path == run_dir)
    for page, _, _ in PAGES:
        at = open_page(page, run=name)
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        if page in ("pages/attention.py", "pages/phase_change.py", "pages/ablation.py"):
            assert at.get("vega_lite_chart"), f"{page} draws its charts for the Pythia run"
        if page == "pages/circuits.py":
            assert any(NOT_WEIGHT_ONLY[:60] in i.value for i in at.info), "the page says why its scores are hidden"
            assert not at.get("vega_lite_chart")


def test_offline_or_a_config_this_app_cannot_run_gives_one_clear_message(
    fake_hub: FakeHub, pythia_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from icl_core.errors import HubError

    tl_hub.list_repo(pythia_like)  # online: the config is cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="only be listed online"):
        tl_hub.list_repo(pythia_like)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    main = dict(fake_hub.files(PYTHIA_REPO, "main"))
    config = json.loads(main["config.json"])
    fake_hub.add_repo(
        "EleutherAI/pythia-rope", {**main, "config.json": json.dumps({**config, "hidden_act": "relu"}).encode()}
    )
    with pytest.raises(CheckpointError, match="hidden_act 'relu'"):
        tl_hub.list_repo("EleutherAI/pythia-rope")


def test_the_llc_and_each_heads_refined_llc_are_estimated_on_a_pythia_run(fake_hub: FakeHub, pythia_like: str) -> None:
    """The on-demand LLC (the Phase change page's background task runs llc_over_training) on a model with MLPs:
    SGLD moves every weight, MLPs included; a head's restriction is its own rows of W_Q, W_K, W_V, W_O and
    biases; the stated cost counts the MLPs."""
    from dataclasses import replace

    from icl_core.analysis import costs, llc, llc_over_training

    repo = tl_hub.list_repo(pythia_like)
    run_dir = tl_hub.import_checkpoints(repo, [c for c in repo.checkpoints if c.label in (0, 143_000)])
    snaps = list_snapshots(run_dir)
    assert llc_over_training.llc_over_training(run_dir)
    assert llc_over_training.llc_over_training(run_dir, heads=True)
    whole = llc_over_training.stored_llc(run_dir, snaps)
    per_head = llc_over_training.stored_rllc(run_dir, snaps)
    for snap in snaps:
        est = whole[snap.step]
        assert len(est.per_chain) == llc.DEFAULT_SETTINGS.n_chains and all(map(np.isfinite, est.per_chain))
        assert set(per_head[snap.step]) == {"L0H0", "L0H1"}
    mask = llc.head_mask(load_model(snaps[-1]), (0, 1))
    assert set(mask) == {f"blocks.0.{p}" for p in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
    assert all(m[1].all() and not m[0].any() for m in mask.values())
    cfg = snaps[-1].model_config
    assert costs.forward_flops(cfg, 64) > costs.forward_flops(replace(cfg, d_mlp=0), 64), "the MLPs cost"


def test_the_cross_source_chart_draws_ours_neel_nandas_l2w256_and_pythia(
    fake_hub: FakeHub, pythia_like: str, tl_repo, timaeus_repo
) -> None:
    """The Phase change page's 'every run, one token axis' chart, with a run imported from each published source
    beside the shipped ones, each labelled with its unit."""
    import json

    import pyarrow as pa
    from conftest import open_page
    from tl_fixtures import REPO, TIMAEUS_REPO

    from icl_core.storage.runs import discover_runs

    # Pythia's rotary positions carry no weights: the same files with a 512-token context reach token 500.
    for branch in ("main", "step1000", "step143000"):
        files = fake_hub.files(PYTHIA_REPO, branch)
        config = json.loads(files["config.json"]) | {"max_position_embeddings": 512}
        fake_hub.add_repo(PYTHIA_REPO, {**files, "config.json": json.dumps(config).encode()}, branch=branch)
    imported = {}
    for repo_id, labels in ((REPO, None), (TIMAEUS_REPO, None), (PYTHIA_REPO, (1000, 143_000))):
        repo = tl_hub.list_repo(repo_id)
        chosen = [c for c in repo.checkpoints if c.label in labels] if labels else repo.checkpoints[-2:]
        run_dir = tl_hub.import_checkpoints(repo, chosen, on_snapshot=evaluate_snapshot)
        assert all(s.metrics.icl_score is not None for s in list_snapshots(run_dir)), repo_id
        imported[repo_id] = next(r.name for r in discover_runs() if r.path == run_dir)
    at = open_page("pages/phase_change.py", run=imported[PYTHIA_REPO])
    assert not at.exception and not at.error

    def title(chart) -> str:
        t = json.loads(chart.proto.spec).get("title", "")
        return str(t.get("text", "") if isinstance(t, dict) else t)

    chart = next(c for c in at.get("vega_lite_chart") if title(c) == "Every run, one token axis")
    tables = [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]
    drawn = {v for t in tables if "run" in t.column_names for v in t.column("run").to_pylist()}
    assert "attn2 (byte tokens)" in drawn
    for name in imported.values():
        assert f"{name} (BPE tokens)" in drawn, (name, drawn)
