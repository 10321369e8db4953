"""The field's published runs from the (fake) Hub, laid out as their authors' code writes them (tl_fixtures):
listed, chosen, streamed, converted, and checked against TransformerLens loading the same files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from test_tl_format import tl_config
from tl_fixtures import (
    REPO,
    TIMAEUS_REPO,
    TIMAEUS_STEPS,
    TIMAEUS_TOKENIZER_REPO,
    TIMAEUS_TOKENS_PER_STEP,
    TOKENIZER_REPO,
    TOKENS,
    neel_config,
    pth,
)

from icl_core.errors import CheckpointError, HubError
from icl_core.storage import hub, published, tl_hub
from icl_core.storage.runs import discover_runs
from icl_core.storage.snapshots import list_snapshots, load_model
from icl_core.tasks import import_cli


def fetched_files(fake_hub: FakeHub) -> set[str]:
    """Every file a resolve call (HEAD or GET) asked for, as repo/path."""
    out = set()
    for _, path in fake_hub.requests:
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            out.add(f"{parts[0]}/{parts[1]}/{'/'.join(parts[4:])}")
    return out


def cached_pth_files() -> list[Path]:
    return [p for p in hub.hub_cache_dir().rglob("*") if p.is_file() and p.suffix == ".pth"] + [
        p for p in hub.hub_cache_dir().rglob("blobs/*") if p.is_file() and p.stat().st_size > 50_000
    ]


def transformer_lens_loads(fake_hub: FakeHub, repo_id: str, path: str, reference: torch.nn.Module):
    """The file as TransformerLens loads it without processing (from_pretrained_no_processing): a fresh
    HookedTransformer of the reference's config, load_and_process_state_dict with every processing step off."""
    from transformer_lens import HookedTransformer

    state = torch.load(io.BytesIO(fake_hub.files(repo_id)[path]), map_location="cpu", weights_only=True)
    model = HookedTransformer(reference.cfg)
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )  # fmt: skip
    return model.eval()


def test_listing_reads_the_real_layout_and_fetches_nothing_but_the_config(fake_hub: FakeHub, tl_repo) -> None:
    repo = tl_hub.list_repo(REPO)
    assert repo.unit == "tokens" and [c.label for c in repo.checkpoints] == TOKENS
    assert repo.checkpoints[0].path == "model_init.pth", "the initial weights are step 0 (tokens 0)"
    assert repo.checkpoints[1].label == 262_144, "the first saved label is one step's tokens"
    assert all(c.size > 1000 for c in repo.checkpoints)
    assert repo.model_config.normalization == "LN" and repo.model_config.tokenizer == TOKENIZER_REPO
    assert repo.config_source == "config.json" and len(repo.config) >= 45
    assert fetched_files(fake_hub) == {f"{REPO}/config.json"}
    chosen = tl_hub.pick_log_spaced(repo.checkpoints, 3)
    assert [c.label for c in chosen] == [0, TOKENS[1], TOKENS[-1]], "tokens 0, then log-spaced from the first step"
    assert "3 of 6 checkpoints" in tl_hub.describe(repo, chosen) and "keeps" in tl_hub.describe(repo, chosen)


def test_an_import_streams_each_checkpoint_and_matches_transformer_lens_on_the_same_files(
    fake_hub: FakeHub, tl_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tl_hub.list_repo(REPO)
    chosen = [repo.checkpoints[0], repo.checkpoints[2], repo.checkpoints[4]]
    seen_in_cache = []

    def on_snapshot(snap) -> None:  # the caller's evaluation happens here: the .pth is gone by then
        seen_in_cache.append(len(cached_pth_files()))

    run_dir = tl_hub.import_checkpoints(repo, chosen, on_snapshot=on_snapshot)
    assert seen_in_cache == [0, 0, 0] and not cached_pth_files(), "each .pth dropped from the cache once converted"
    allowed = {f"{REPO}/config.json", f"{TOKENIZER_REPO}/tokenizer.json", *(f"{REPO}/{c.path}" for c in chosen)}
    assert fetched_files(fake_hub) == allowed, "nothing but the config, the chosen checkpoints and the tokenizer"
    snaps = list_snapshots(run_dir)
    assert [s.tokens_seen for s in snaps] == [c.label for c in chosen]
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    assert any(r.path == run_dir and r.source == "hub" for r in discover_runs())
    tokens = torch.randint(0, 120, (2, 1024), generator=torch.Generator().manual_seed(0))
    for snap, c in zip(snaps, chosen, strict=True):
        reference = transformer_lens_loads(fake_hub, REPO, c.path, tl_repo[c.label])
        with torch.no_grad():
            ours = load_model(snap).eval()(tokens)
            theirs = reference(tokens)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
        assert snap.weights_path.stat().st_size < 0.6 * len(fake_hub.files(REPO)[c.path]), "kept as fp16"
    assert not list(run_dir.glob("*.pth")), "converted once: no pickle in the run folder"

    # Offline, the same import needs nothing: the converted checkpoints are kept.
    fake_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert tl_hub.list_repo(REPO).checkpoints == repo.checkpoints, "offline: the listing saved online, same steps"
    again = tl_hub.import_checkpoints(repo, chosen)
    assert [s.tokens_seen for s in list_snapshots(again)] == [c.label for c in chosen]


def test_a_timaeus_run_imports_without_a_config_on_the_tokens_axis_and_matches_transformer_lens(
    fake_hub: FakeHub, timaeus_repo
) -> None:
    repo = tl_hub.list_repo(TIMAEUS_REPO)
    assert f"{TIMAEUS_REPO}/config.json" not in fetched_files(fake_hub), "the repo has none: never asked for"
    assert repo.unit == "step" and [c.label for c in repo.checkpoints] == TIMAEUS_STEPS
    assert repo.tokens_per_step == TIMAEUS_TOKENS_PER_STEP and "tetrahedron.py" in repo.config_source
    cfg = repo.model_config
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.n_ctx, cfg.d_vocab) == (2, 256, 8, 32, 1024, 5000)
    assert cfg.positional == "shortformer" and cfg.tokenizer == TIMAEUS_TOKENIZER_REPO
    chosen = [repo.checkpoints[0], repo.checkpoints[2], repo.checkpoints[-1]]
    run_dir = tl_hub.import_checkpoints(repo, chosen)
    snaps = list_snapshots(run_dir)
    assert [s.tokens_seen for s in snaps] == [c.label * 102_400 for c in chosen], "no tokens per step typed"
    allowed = {f"{TIMAEUS_TOKENIZER_REPO}/tokenizer.json", *(f"{TIMAEUS_REPO}/{c.path}" for c in chosen)}
    assert fetched_files(fake_hub) == allowed
    tokens = torch.randint(0, 5000, (2, 300), generator=torch.Generator().manual_seed(0))
    for snap, c in zip(snaps, chosen, strict=True):
        reference = transformer_lens_loads(fake_hub, TIMAEUS_REPO, c.path, timaeus_repo[c.label])
        with torch.no_grad():
            torch.testing.assert_close(load_model(snap).eval()(tokens), reference(tokens), atol=1e-4, rtol=1e-4)
    assert json.loads((run_dir / "run.json").read_text())["source"]["tokens_per_step"] == 102_400


def real_scale_repo(repo_id: str) -> tl_hub.TLRepo:
    """A preset's listing at its real size, without downloading: Neel Nanda's config (neel_config's real values)
    and ~160 token labels up to 2.2e10, or timaeus' built-in config and its 2,100 steps; fp32 file sizes."""
    from icl_core.model.config import parameter_count
    from icl_core.model.tl_format import model_config_from_tl

    if repo_id.startswith("EleutherAI/pythia-"):
        return pythia_scale_repo(repo_id)
    builtin = published.builtin_config(repo_id)
    config = builtin.tl_config if builtin else neel_config(n_layers=int(repo_id.split("_")[2][0]))
    cfg = model_config_from_tl(config)
    size = 4 * parameter_count(cfg)
    if builtin:
        steps = sorted({0, *(int(x) for x in torch.logspace(0, 4.7, 100)), *range(0, 50_000, 25)} - {50_000})
        checkpoints = [tl_hub.Checkpoint(f"checkpoints/checkpoint_{s:07d}.pth", s, size) for s in steps]
        return tl_hub.TLRepo(
            repo_id, "main", config, cfg, "step", tuple(checkpoints), builtin.source, builtin.tokens_per_step,
            published.known_window(repo_id),
        )  # fmt: skip
    labels = sorted({262_144 * int(s) for s in torch.logspace(0, 4.92, 163)})
    checkpoints = [tl_hub.Checkpoint("model_init.pth", 0, size)]
    checkpoints += [tl_hub.Checkpoint(f"checkpoints/tokens_{n:012d}.pth", n, size) for n in labels]
    return tl_hub.TLRepo(
        repo_id, "main", config, cfg, "tokens", tuple(checkpoints), window=published.known_window(repo_id)
    )


def pythia_scale_repo(repo_id: str) -> tl_hub.TLRepo:
    """Pythia's 154 step branches (step_revisions.pythia_steps), fp16 files of the preset's shape (EleutherAI/pythia
    README's table: 14m 6 x 128, 4 heads; 70m 6 x 512, 8 heads; MLP 4x; 50,304 embedding rows)."""
    from icl_core.model.config import parameter_count
    from icl_core.model.neox import config_from_hf
    from icl_core.storage.step_revisions import pythia_steps

    width, heads = {"EleutherAI/pythia-14m": (128, 4), "EleutherAI/pythia-70m": (512, 8)}[repo_id]
    config = {"hidden_size": width, "num_attention_heads": heads, "intermediate_size": 4 * width}
    config |= {"num_hidden_layers": 6, "max_position_embeddings": 2048, "vocab_size": 50304}
    cfg = config_from_hf(config, repo_id)
    size = 2 * parameter_count(cfg)
    checkpoints = tuple(tl_hub.Checkpoint("model.safetensors", s, size, revision=f"step{s}") for s in pythia_steps())
    return tl_hub.TLRepo(
        repo_id, "main", config, cfg, "step", checkpoints, "config.json", published.PYTHIA_TOKENS_PER_STEP,
        published.known_window(repo_id),
    )  # fmt: skip


@pytest.mark.parametrize("repo_id", list(published.PRESETS))
def test_each_presets_default_import_fits_the_caps_and_is_dense_where_the_change_is(repo_id: str) -> None:
    repo = real_scale_repo(repo_id)
    n = tl_hub.default_count(repo)
    chosen = tl_hub.choose(repo, n)
    fits = int(hub.DEFAULT_MAX_TOTAL_MB * 1e6 // tl_hub.snapshot_bytes(repo.model_config))
    assert len(chosen) == n >= min(16, fits) and n >= 12, "enough checkpoints to see the change, or all the cap holds"
    assert repo.kept_bytes(chosen) <= hub.DEFAULT_MAX_TOTAL_MB * 1e6, "what is kept fits the disk cap"
    assert all(c.size <= tl_hub.DEFAULT_MAX_CHECKPOINT_MB * 1e6 for c in chosen), "each file fits the per-file cap"
    assert chosen[0] == repo.checkpoints[0] and chosen[-1] == repo.checkpoints[-1]
    w = repo.window
    published_inside = [c for c in repo.checkpoints if w.lo_tokens <= repo.tokens(c) <= w.hi_tokens]
    inside = [c for c in chosen if c in published_inside]
    # Half the choice inside the window, or, where the published grid is coarser there (Pythia: 6 revisions), all.
    assert len(inside) >= min(n // 2, len(published_inside)), (repo_id, len(inside), n)
    assert len(published_inside) > n // 2 or inside == published_inside
    assert len(set(chosen)) == n and chosen == sorted(chosen, key=lambda c: c.label)
    if repo_id.startswith("NeelNanda"):
        assert repo.download_bytes(chosen) > hub.DEFAULT_MAX_TOTAL_MB * 1e6, "more passes through than is kept"


def test_a_checkpoint_that_is_not_a_tensor_dict_is_refused_and_nothing_half_written_is_listed(
    fake_hub: FakeHub, tl_repo
) -> None:
    files = dict(fake_hub.files(REPO))
    files[f"checkpoints/tokens_{TOKENS[1]:012d}.pth"] = pth({"model": {"nested": torch.zeros(1)}})
    fake_hub.add_repo(REPO, files)
    repo = tl_hub.list_repo(REPO)
    with pytest.raises(CheckpointError, match=f"tokens_{TOKENS[1]:012d}.pth.*flat dict of tensors"):
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
    fake_hub.add_repo("someone/no-config", {k: v for k, v in fake_hub.files(REPO).items() if k != "config.json"})
    with pytest.raises(HubError, match="no config.json, and it is not a run whose config is known"):
        tl_hub.list_repo("someone/no-config")
    repo = tl_hub.list_repo(REPO)
    monkeypatch.setattr(tl_hub.hub, "cap_mb", lambda env, default: 0.00001 if "FILE" in env else default)
    with pytest.raises(HubError, match="over the .* limit for one file"):
        tl_hub.import_checkpoints(repo, repo.checkpoints[:2])
    monkeypatch.setattr(tl_hub.hub, "cap_mb", lambda env, default: 0.02 if "TOTAL" in env else default)
    with pytest.raises(HubError, match="would keep .* on disk, over the 0.02 MB limit"):
        tl_hub.import_checkpoints(repo, repo.checkpoints[:2])
    assert not tl_hub.run_dir_for(repo).exists()


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
    assert all(not s.metrics.recorded for s in list_snapshots(run_dir))
    seen = []
    assert evaluate_run(run_dir, eval_examples=8, progress=lambda i, n: seen.append((i, n))) == 2
    assert seen == [(1, 2), (2, 2)]
    snaps = list_snapshots(run_dir)
    for s in snaps:
        m = s.metrics
        assert len(m.loss_curve) == 1023 and len(m.pca_losses) == 8
        assert len(m.prefix_matching) == 2 and len(m.prefix_matching[0]) == 4
        assert m.icl_examples >= 128 and m.icl_score_se > 0, "a 1024-token context reaches token 500"
    tok = load_tokenizer(repo.model_config.tokenizer, run_dir)
    prose = data.prose_icl_examples(tok)  # the prose set in its own tokens: whole windows that do not overlap
    assert prose is not None and all(s.metrics.icl_examples_prose == len(prose) for s in snaps)
    assert all(s.metrics.icl_score_prose is not None and s.metrics.icl_score_prose_se > 0 for s in snaps)
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
    bad = f"checkpoints/tokens_{TOKENS[3]:012d}.pth"
    good = files[bad]
    files[bad] = pth({"bad": {"nested": torch.zeros(1)}})
    fake_hub.add_repo(REPO, files)
    with pytest.raises(CheckpointError):  # the first attempt converts checkpoint 1, then fails on checkpoint 3
        tl_hub.import_checkpoints(repo, [repo.checkpoints[1], repo.checkpoints[3]])
    assert staging.exists()
    files[bad] = good
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


def test_the_import_estimate_counts_every_evaluation_set_a_checkpoint_gets() -> None:
    """The prose windows in the model's tokens and the repeated-token set (256 examples) are evaluated on every
    imported checkpoint with >= 502 tokens of context; the estimate the Models page shows counts them, and none of
    the ICL sets below that context."""
    from dataclasses import replace

    from icl_core import data
    from icl_core.analysis import evaluation as ev
    from icl_core.model.config import ModelConfig

    cfg = ModelConfig(n_layers=2, n_heads=8, d_model=512, d_head=64, n_ctx=1024, d_vocab=48262)
    n_eval, n_icl = ev.example_counts(cfg, ev.DEFAULT_EVAL_EXAMPLES, ev.DEFAULT_ICL_EXAMPLES)
    per_loss, per_icl = ev._flops_per_example(cfg)
    icl_s = (n_icl + data.TYPICAL_BPE_PROSE_WINDOWS + data.REPEATED_ICL_EXAMPLES) * per_icl / ev.EVAL_FLOPS_PER_S
    expected = n_eval * per_loss / ev.EVAL_FLOPS_PER_S + icl_s + ev.SNAPSHOT_OVERHEAD_S
    assert ev.estimated_seconds(cfg, 3) == pytest.approx(3 * expected)
    short = replace(cfg, n_ctx=256)
    per_loss_short, _ = ev._flops_per_example(short)
    n_eval_short, _ = ev.example_counts(short, ev.DEFAULT_EVAL_EXAMPLES, ev.DEFAULT_ICL_EXAMPLES)
    no_icl = n_eval_short * per_loss_short / ev.EVAL_FLOPS_PER_S + ev.SNAPSHOT_OVERHEAD_S
    assert ev.estimated_seconds(short, 1) == pytest.approx(no_icl)


def test_step_labels_go_on_the_tokens_axis_with_the_tokens_per_step_given_or_known(
    fake_hub: FakeHub, tl_repo, timaeus_repo
) -> None:
    """A repo in Hoogland et al.'s naming with a config.json of its own (another repository in the same format):
    its tokens per step is unknown until given; timaeus' own is known, and a given one overrides it."""
    from conftest import open_page

    files = {"config.json": fake_hub.files(REPO)["config.json"]}
    for step, n in zip([0, 100, 1000], TOKENS, strict=False):
        files[f"checkpoints/checkpoint_{step:07d}.pth"] = fake_hub.files(REPO)[
            "model_init.pth" if n == 0 else f"checkpoints/tokens_{n:012d}.pth"
        ]
    fake_hub.add_repo("someone/L2-steps", files)
    repo = tl_hub.list_repo("someone/L2-steps")
    assert repo.unit == "step" and [c.label for c in repo.checkpoints] == [0, 100, 1000] and not repo.tokens_per_step
    unknown = tl_hub.import_checkpoints(repo, list(repo.checkpoints))
    assert [s.tokens_seen for s in list_snapshots(unknown)] == [0, 0, 0]
    name = next(r.name for r in discover_runs() if r.path == unknown)
    at = open_page("pages/phase_change.py", run=name)
    assert any("tokens per step" in w.value for w in at.warning), "the empty charts are explained"
    run_dir = tl_hub.import_checkpoints(repo, list(repo.checkpoints), tokens_per_step=51_200)
    assert [s.tokens_seen for s in list_snapshots(run_dir)] == [0, 5_120_000, 51_200_000]
    at = open_page("pages/phase_change.py", run=name)
    assert not any("tokens per step" in w.value for w in at.warning)

    timaeus = tl_hub.list_repo(TIMAEUS_REPO)
    chosen = [timaeus.checkpoints[0], timaeus.checkpoints[1]]
    overridden = tl_hub.import_checkpoints(timaeus, chosen, tokens_per_step=51_200)
    assert [s.tokens_seen for s in list_snapshots(overridden)] == [0, 100 * 51_200]


def test_a_run_with_induction_heads_in_neel_nandas_layout_shows_its_phase_change(fake_hub: FakeHub) -> None:
    """Neel Nanda's layout around a model that really forms induction heads (our shipped attn2's snapshots saved as
    his training code would save them, byte tokens): imported and evaluated like a published run, the Phase
    change page finds the same change as on the shipped run and draws its curves."""
    from conftest import open_page
    from tl_fixtures import as_neel_checkpoint, byte_tokenizer_json, neel_files

    from icl_core.analysis.evaluation import evaluate_snapshot
    from icl_core.analysis.phase import phase_window
    from icl_core.storage.runs import SHIPPED_DIR
    from icl_core.storage.snapshots import list_snapshots as snapshots_of

    shipped = snapshots_of(SHIPPED_DIR / "attn2")
    by_tokens = {s.tokens_seen: s for s in shipped}
    picked = [c.label for c in tl_hub.pick_log_spaced([tl_hub.Checkpoint("", t, 0) for t in by_tokens], 12)]
    states = {t: as_neel_checkpoint(by_tokens[t]) for t in picked}
    config = neel_config(
        n_layers=2, d_model=64, d_mlp=256, d_head=16, n_heads=4, n_ctx=512, d_vocab=257, normalization=None,
        tokenizer_name="test/bytes", batch_size_per_device=8, n_devices=1, batch_size=8,
    )  # fmt: skip
    assert config["tokens_per_step"] == 4096 and all(t % 4096 == 0 for t in picked)

    class Saved(torch.nn.Module):  # neel_files takes modules: hand it the state dicts as they are
        def __init__(self, state: dict) -> None:
            super().__init__()
            self._state = state

        def state_dict(self, *args, **kwargs) -> dict:
            return {**self._state, "unembed.b_U": torch.zeros(257)}

    fake_hub.add_repo("someone/Attn_Only_2L_bytes", neel_files({t: Saved(s) for t, s in states.items()}, config))
    fake_hub.add_repo("test/bytes", {"tokenizer.json": byte_tokenizer_json()})
    repo = tl_hub.list_repo("someone/Attn_Only_2L_bytes")
    assert [c.label for c in repo.checkpoints] == picked
    run_dir = tl_hub.import_checkpoints(repo, list(repo.checkpoints), on_snapshot=evaluate_snapshot)
    imported = snapshots_of(run_dir)
    assert all(s.metrics.icl_score is not None for s in imported)
    window, reference = phase_window(imported), phase_window(shipped)
    assert window is not None and reference is not None
    start, end = by_tokens_step(imported, window.start_step), by_tokens_step(imported, window.end_step)
    ref_start = next(s.tokens_seen for s in shipped if s.step == reference.start_step)
    ref_end = next(s.tokens_seen for s in shipped if s.step == reference.end_step)
    assert start <= ref_end and end >= ref_start, "the same change, found from the imported run's own metrics"
    assert imported[-1].metrics.icl_score < imported[0].metrics.icl_score - 0.1
    name = next(r.name for r in discover_runs() if r.path == run_dir)
    at = open_page("pages/phase_change.py", run=name)
    assert not at.exception and not at.error
    assert any("phase change" in s.value.lower() for s in at.success), [s.value for s in at.success]
    assert len(at.get("vega_lite_chart")) >= 3, "ICL score, induction scores and loss curves drawn"


def by_tokens_step(snaps, step: int) -> int:
    return next(s.tokens_seen for s in snaps if s.step == step)


def test_the_command_line_imports_and_evaluates_the_default_selection(
    fake_hub: FakeHub, tl_repo, capsys: pytest.CaptureFixture
) -> None:
    assert import_cli.main([REPO, "--yes"]) == 0
    out = capsys.readouterr().out
    repo = tl_hub.list_repo(REPO)
    assert f"{tl_hub.default_count(repo)} of {len(repo.checkpoints)} checkpoints" in out and "keeps" in out
    snaps = list_snapshots(tl_hub.run_dir_for(repo))
    assert [s.tokens_seen for s in snaps] == TOKENS, "the default: every checkpoint of a repo this small"
    assert all(s.metrics.icl_score is not None for s in snaps), "evaluated as it streamed"
    assert import_cli.main(["nobody/missing-repo", "--yes"]) == 1
    assert "error:" in capsys.readouterr().err
