"""TransformerLens-format repos from the (fake) Hub: listed, chosen, downloaded, converted, checked against TL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from test_tl_format import tl_config
from tl_fixtures import REPO, TOKENIZER_REPO, TOKENS, pth

from icl_core.errors import CheckpointError, HubError
from icl_core.storage import tl_hub
from icl_core.storage.runs import discover_runs
from icl_core.storage.snapshots import list_snapshots, load_model


def test_listing_reads_labels_and_sizes_before_any_checkpoint_is_fetched(fake_hub: FakeHub, tl_repo) -> None:
    repo = tl_hub.list_repo(REPO)
    assert repo.unit == "tokens" and [c.label for c in repo.checkpoints] == TOKENS
    assert all(c.size > 1000 for c in repo.checkpoints)
    assert repo.model_config.normalization == "LN" and repo.model_config.tokenizer == TOKENIZER_REPO
    assert not any(fake_hub.fetched(c.path.split("/")[-1]) for c in repo.checkpoints)
    chosen = tl_hub.pick_log_spaced(repo.checkpoints, 3)
    assert [c.label for c in chosen] == [0, 2_000, 20_000_000]  # nearest in log(label) to 1, 4472, 2e7
    assert chosen[0] == repo.checkpoints[0] and chosen[-1] == repo.checkpoints[-1]
    assert "3 of 6 checkpoints" in tl_hub.describe(repo, chosen)


def test_import_converts_the_chosen_checkpoints_into_a_run_that_matches_transformer_lens(
    fake_hub: FakeHub, tl_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tl_hub.list_repo(REPO)
    chosen = [repo.checkpoints[1], repo.checkpoints[4]]
    run_dir = tl_hub.import_checkpoints(repo, chosen)
    assert not any(fake_hub.fetched(f"optimizer_{n:012d}.pth") for n in TOKENS), "optimizer states never fetched"
    assert not fake_hub.fetched(f"tokens_{TOKENS[0]:012d}.pth"), "only the chosen checkpoints"
    snaps = list_snapshots(run_dir)
    assert [s.tokens_seen for s in snaps] == [c.label for c in chosen]
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    assert any(r.path == run_dir and r.source == "hub" for r in discover_runs())
    tokens = torch.randint(0, 120, (2, 30), generator=torch.Generator().manual_seed(0))
    for snap, c in zip(snaps, chosen, strict=True):
        with torch.no_grad():
            ours = load_model(snap).eval()(tokens)
            reference = tl_repo[c.label](tokens)
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert not list(run_dir.glob("*.pth")), "converted once: no pickle in the run folder"

    # Offline, the same import is served by the cache.
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert tl_hub.list_repo(REPO).checkpoints == repo.checkpoints, "offline: the listing saved online, same steps"
    again = tl_hub.import_checkpoints(repo, chosen)
    assert [s.tokens_seen for s in list_snapshots(again)] == [c.label for c in chosen]


def test_a_checkpoint_that_is_not_a_tensor_dict_is_refused_and_nothing_half_written_is_listed(
    fake_hub: FakeHub, tl_repo
) -> None:
    files = dict(fake_hub.files(REPO))
    files["checkpoints/tokens_000000002000.pth"] = pth({"model": {"nested": torch.zeros(1)}})
    fake_hub.add_repo(REPO, files)
    repo = tl_hub.list_repo(REPO)
    with pytest.raises(CheckpointError, match="tokens_000000002000.pth.*flat dict of tensors"):
        tl_hub.import_checkpoints(repo, [repo.checkpoints[0], repo.checkpoints[1]])
    assert not tl_hub.run_dir_for(repo).exists()
    assert not any(r.name.startswith(REPO) for r in discover_runs())


def test_bad_repos_give_one_clear_message(fake_hub: FakeHub, tl_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubError):
        tl_hub.list_repo("nobody/missing-repo")
    fake_hub.add_repo("someone/no-checkpoints", {"config.json": json.dumps(tl_config("standard")).encode()})
    with pytest.raises(HubError, match="no training checkpoints"):
        tl_hub.list_repo("someone/no-checkpoints")
    fake_hub.add_repo(
        "someone/mlp-model", {"config.json": json.dumps({**tl_config("standard"), "attn_only": False}).encode()}
    )
    with pytest.raises(CheckpointError, match="attention-only"):
        tl_hub.list_repo("someone/mlp-model")
    repo = tl_hub.list_repo(REPO)
    monkeypatch.setattr(tl_hub.hub, "cap_mb", lambda env, default: 0.00001 if "FILE" in env else default)
    with pytest.raises(HubError, match="over the .* limit for one file"):
        tl_hub.import_checkpoints(repo, repo.checkpoints[:2])


def test_the_imported_runs_tokenizer_prepends_bos_and_labels_tokens_readably(fake_hub: FakeHub, tl_repo) -> None:
    from icl_core.model.tokenizer import BYTES, load_tokenizer

    repo = tl_hub.list_repo(REPO)
    run_dir = tl_hub.import_checkpoints(repo, [repo.checkpoints[-1]])
    tok = load_tokenizer(repo.model_config.tokenizer, run_dir)
    enc = tok.encode("the cat sat on the mat", n_ctx=64)
    assert int(enc.tokens[0]) == tok.bos and len(enc.tokens) > 2
    labels = tok.labels(enc.tokens)
    assert labels[0] == "<s>" and "".join(labels[1:]).replace("␣", " ") == "the cat sat on the mat"
    assert tok.decode(enc.tokens) == "the cat sat on the mat"
    assert tok.encode("the cat " * 40, n_ctx=8).truncated
    assert load_tokenizer("bytes") is BYTES
    (run_dir / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.*missing"):
        load_tokenizer(repo.model_config.tokenizer, run_dir)


def test_an_imported_run_is_evaluated_with_its_own_tokenizer_once(fake_hub: FakeHub, tl_repo) -> None:
    from icl_core import data
    from icl_core.analysis.evaluation import evaluate_run
    from icl_core.model.tokenizer import load_tokenizer

    repo = tl_hub.list_repo(REPO)
    run_dir = tl_hub.import_checkpoints(repo, [repo.checkpoints[1], repo.checkpoints[-1]])
    assert all(not s.metrics for s in list_snapshots(run_dir))
    seen = []
    assert evaluate_run(run_dir, eval_examples=8, progress=lambda i, n: seen.append((i, n))) == 2
    assert seen == [(1, 2), (2, 2)]
    snaps = list_snapshots(run_dir)
    for s in snaps:
        m = s.metrics
        assert len(m["loss_curve"]) == 47 and len(m["pca_losses"]) == 8
        assert len(m["prefix_matching"]) == 2 and len(m["prefix_matching"][0]) == 4
        assert "icl_score" not in m, "a 48-token context cannot reach token 500"
    tok = load_tokenizer(repo.model_config.tokenizer, run_dir)
    pool = data.tokenizer_probe_pool(tok)
    assert pool and tok.bos not in pool and max(pool) < repo.model_config.d_vocab
    assert evaluate_run(run_dir) == 0, "evaluated once"


def test_every_page_works_on_an_imported_run(fake_hub: FakeHub, tl_repo) -> None:
    """No page special-cases the family: each draws its views of a BPE, LayerNorm run, with its own tokens."""
    from conftest import open_page

    from icl_core.analysis.evaluation import evaluate_run
    from icl_core.model.tokenizer import load_tokenizer
    from ui.nav import PAGES

    repo = tl_hub.list_repo(REPO)
    run_dir = tl_hub.import_checkpoints(repo, list(repo.checkpoints[1:]))
    evaluate_run(run_dir, eval_examples=8)
    name = next(r.name for r in discover_runs() if r.path == run_dir)
    tok = load_tokenizer(repo.model_config.tokenizer, run_dir)
    for page, _, _ in PAGES:
        at = open_page(page, run=name)
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        assert not any("works on byte-level runs" in i.value for i in at.info), page
        if page in ("pages/attention.py", "pages/phase_change.py", "pages/ablation.py", "pages/circuits.py"):
            assert at.get("vega_lite_chart"), f"{page} draws its charts for the imported run"
    at = open_page("pages/attention.py", run=name)
    assert tok.name in at.text_area(key="attn_text").label, "the text box says which tokenizer reads it"
    text = at.text_area(key="attn_text").value
    assert text and tok.encode(text).tokens.numel() > 2


def test_a_retried_import_with_another_choice_does_not_reuse_a_different_checkpoint(fake_hub: FakeHub, tl_repo) -> None:
    repo = tl_hub.list_repo(REPO)
    staging = tl_hub.run_dir_for(repo).with_name(tl_hub.run_dir_for(repo).name + ".partial")
    files = dict(fake_hub.files(REPO))
    good = files["checkpoints/tokens_000000200000.pth"]
    files["checkpoints/tokens_000000200000.pth"] = pth({"bad": {"nested": torch.zeros(1)}})
    fake_hub.add_repo(REPO, files)
    with pytest.raises(CheckpointError):  # the first attempt converts checkpoint 1, then fails on checkpoint 3
        tl_hub.import_checkpoints(repo, [repo.checkpoints[1], repo.checkpoints[3]])
    assert staging.exists()
    files["checkpoints/tokens_000000200000.pth"] = good
    fake_hub.add_repo(REPO, files)
    repo = tl_hub.list_repo(REPO)
    run_dir = tl_hub.import_checkpoints(repo, [repo.checkpoints[2], repo.checkpoints[3]])
    assert [s.tokens_seen for s in list_snapshots(run_dir)] == [TOKENS[2], TOKENS[3]]


def test_a_missing_tokenizer_no_network_and_an_empty_offline_cache_each_give_one_clear_message(
    fake_hub: FakeHub, tl_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_repo("test/no-tokenizer", {"README.md": b"no tokenizer here"})
    config = {**tl_config("standard"), "tokenizer_name": "test/no-tokenizer"}
    fake_hub.add_repo(REPO, {**fake_hub.files(REPO), "config.json": json.dumps(config).encode()})
    repo = tl_hub.list_repo(REPO)
    with pytest.raises(HubError) as missing:
        tl_hub.import_checkpoints(repo, repo.checkpoints[:2])
    assert "tokenizer.json" in str(missing.value) and "test/no-tokenizer" in str(missing.value)
    assert "Traceback" not in str(missing.value) and not tl_hub.run_dir_for(repo).exists()

    fake_hub.stop()  # the Hub stops answering: no network
    with pytest.raises(HubError) as down:
        tl_hub.list_repo(REPO)
    assert REPO in str(down.value) and len(str(down.value)) < 600

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, and nothing of this repo in the cache
    with pytest.raises(HubError) as offline:
        tl_hub.list_repo("someone/never-downloaded")
    assert "offline" in str(offline.value).lower()
    assert not any(r.name.startswith("someone") for r in discover_runs()), "nothing half-written is listed"


def test_large_models_are_evaluated_on_fewer_examples_to_a_flop_budget_ours_on_all() -> None:
    from dataclasses import replace

    from icl_core.analysis.evaluation import DEFAULT_EVAL_EXAMPLES, DEFAULT_ICL_EXAMPLES, example_counts
    from icl_core.model.config import ModelConfig
    from icl_core.storage.runs import SHIPPED_DIR
    from icl_core.storage.snapshots import read_run_config

    asked = (DEFAULT_EVAL_EXAMPLES, DEFAULT_ICL_EXAMPLES)
    for run in ("attn1", "attn2", "attn3"):
        assert example_counts(read_run_config(SHIPPED_DIR / run).model, *asked) == asked, run
    neel_2l = ModelConfig(
        n_layers=2, n_heads=8, d_model=512, d_head=64, n_ctx=1024, d_vocab=48262, normalization="LN", biases=True,
        tokenizer="NeelNanda/gpt-neox-tokenizer-digits",
    )  # fmt: skip
    n_eval, n_icl = example_counts(neel_2l, *asked)
    assert 8 <= n_eval < DEFAULT_EVAL_EXAMPLES and 128 <= n_icl < DEFAULT_ICL_EXAMPLES
    deeper = example_counts(replace(neel_2l, n_layers=4), *asked)
    assert deeper[0] <= n_eval and deeper[1] < n_icl, "more layers, fewer examples"


def test_step_labelled_safetensors_checkpoints_go_on_the_tokens_axis_with_their_tokens_per_step(
    fake_hub: FakeHub, tl_repo
) -> None:
    """Hoogland et al.'s layout (checkpoints/checkpoint_{step:07d}), here as safetensors beside a .pth of the
    same step: the safetensors file is taken, and steps times tokens_per_step become the tokens seen."""
    from conftest import open_page
    from safetensors.torch import save as save_safetensors

    from icl_core.model.tl_format import load_checkpoint

    files = {"config.json": fake_hub.files(REPO)["config.json"]}
    for step, n in zip([0, 100, 1000], TOKENS, strict=False):
        state = {k: v.contiguous() for k, v in tl_repo[n].state_dict().items()}
        files[f"checkpoints/checkpoint_{step:07d}.safetensors"] = save_safetensors(state)
        files[f"checkpoints/checkpoint_{step:07d}.pth"] = pth({"not": {"this": 1}})  # never taken over the above
    fake_hub.add_repo("someone/L2-steps", files)
    repo = tl_hub.list_repo("someone/L2-steps")
    assert repo.unit == "step" and [c.label for c in repo.checkpoints] == [0, 100, 1000]
    assert all(c.path.endswith(".safetensors") for c in repo.checkpoints)
    unknown = tl_hub.import_checkpoints(repo, list(repo.checkpoints))
    assert [s.tokens_seen for s in list_snapshots(unknown)] == [0, 0, 0]
    name = next(r.name for r in discover_runs() if r.path == unknown)
    at = open_page("pages/phase_change.py", run=name)
    assert any("tokens per step" in w.value for w in at.warning), "the empty charts are explained"
    run_dir = tl_hub.import_checkpoints(repo, list(repo.checkpoints), tokens_per_step=51_200)
    assert [s.tokens_seen for s in list_snapshots(run_dir)] == [0, 5_120_000, 51_200_000]
    assert not fake_hub.fetched("checkpoint_0000100.pth")
    at = open_page("pages/phase_change.py", run=name)
    assert not any("tokens per step" in w.value for w in at.warning)
    with pytest.raises(CheckpointError, match="bad.safetensors.*safetensors"):
        load_checkpoint(Path(__file__), "checkpoints/bad.safetensors")
