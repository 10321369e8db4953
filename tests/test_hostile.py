"""Hostile or careless input on a shared server: each case reproduces a way the app broke, and checks the fix.

Configs that could never train or would exhaust the server, malformed snapshot metrics, Markdown in link
parameters, two writers on one run folder, oversized or nested files in a Hub repo, over-long run names,
foreign digits in a link, and server paths in messages. (The first click after a server start is checked
in the browser, tests/test_browser.py.)
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, open_page
from fake_hub import FakeHub, make_tiny_run

from icl_core import data
from icl_core.errors import CheckpointError, ConfigError, HubError
from icl_core.model.config import LIMITS, TrainConfig, train_config_from_dict
from icl_core.storage import hub
from icl_core.storage.lock import run_writer_lock
from icl_core.storage.runs import EXTRA_RUNS_ENV
from icl_core.storage.snapshot_metrics import metrics_problem, parse_metrics
from icl_core.storage.snapshots import TRAIN_LOG, list_snapshots, scan_snapshots
from icl_core.tasks import jobs
from icl_core.training.train import train
from ui import state

TINY = TrainConfig(
    run_name="hostile",
    compute_icl_score=False,
    total_steps=2,
    n_snapshots=2,
    eval_examples=2,
    batch_size=2,
    log_every=1,
    device="cpu",
).to_dict()
TINY["model"] = {"n_layers": 1, "n_heads": 1, "d_model": 8, "d_head": 4, "n_ctx": 32}


def with_(**changes: object) -> dict:
    cfg = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        if key.startswith("model_"):
            cfg["model"][key.removeprefix("model_")] = value
        else:
            cfg[key] = value
    return cfg


# -- 1, 2, 7: configs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"lr": math.nan}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"weight_decay": math.nan}, "weight_decay"),
        ({"grad_clip": math.inf}, "grad_clip"),
        ({"seed": 2**70}, "seed"),
        ({"seed": -1}, "seed"),
        ({"model_d_vocab": 10}, "d_vocab"),
        ({"warmup_steps": True}, "warmup_steps"),
        ({"model_n_layers": 10**7}, "n_layers"),
        ({"model_n_ctx": 8192}, "n_ctx"),
        ({"eval_examples": 10**6}, "eval_examples"),
        ({"batch_size": 10**5}, "batch_size"),
        ({"n_snapshots": 10**5}, "n_snapshots"),
        ({"model_d_model": 1024, "model_n_layers": 12, "model_n_heads": 32, "model_d_head": 256}, "parameters"),
        ({"batch_size": 512, "model_n_ctx": 2048, "model_d_model": 512}, "GiB"),
        ({"eval_examples": 20_000, "model_n_ctx": 2048}, "evaluate"),
        ({"model_n_ctx": 2}, "n_ctx"),
        ({"run_name": "r" * 300}, "run_name"),
        ({"run_name": ".hidden"}, "run_name"),
    ],
)
def test_configs_that_cannot_train_are_refused_before_a_process_starts(
    changes: dict, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        jobs.submit_job(with_(**changes))
    assert named in str(err.value), err.value
    assert len(str(err.value)) < 400  # a 300-character name is not echoed in full
    assert jobs.list_jobs() == [] and not (tmp_path / "runs").exists()


def test_the_runnable_check_builds_no_evaluation_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server used to build (and cache) every submitted config's held-out set in its own memory."""
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    big = with_(eval_examples=LIMITS.eval_examples // 2, model_n_ctx=1024)
    caches = (data._byte_heldout, data.tokenizer_examples)
    before = [c.cache_info() for c in caches]
    jobs._check_runnable(train_config_from_dict(big), 1)
    assert [c.cache_info() for c in caches] == before


def test_train_page_refuses_a_300_character_run_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    at = open_page("pages/train.py")
    at.text_input(key="train_run_name").set_value("!" + "x" * 299)  # a paste: the field keeps 64 characters
    at.button(key="train_submit").click().run()
    assert not at.exception, at.exception
    assert any("run_name must" in e.value for e in at.error)
    assert len(at.text_input(key="train_run_name").value) <= 64
    assert jobs.list_jobs() == []


# -- 3: malformed metrics ------------------------------------------------------------------------------------


@pytest.fixture
def damaged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_tiny_run(tmp_path_factory.mktemp("damaged") / "damaged")
    return run


BAD_METRICS = [
    ("prefix_matching", [[0.1, 0.2]]),
    ("previous_token", [1]),
    ("copying", "high"),
    ("icl_score", "low"),
    ("loss_curve", [1.0, 2.0]),
    ("pca_losses", []),
]


@pytest.mark.parametrize(("name", "value"), BAD_METRICS)
def test_a_snapshot_with_malformed_metrics_is_skipped_and_named(damaged_run: Path, name: str, value: object) -> None:
    meta_path = sorted(damaged_run.glob("step_*.json"))[1]
    meta = json.loads(meta_path.read_text())
    meta["metrics"][name] = value
    meta_path.write_text(json.dumps(meta))
    scan = scan_snapshots(damaged_run)
    assert len(scan.snapshots) == 2 and len(scan.skipped) == 1
    assert meta_path.name in scan.skipped[0] and f"metrics.{name}" in scan.skipped[0]
    with pytest.raises(CheckpointError, match=f"metrics.{name}"):
        list_snapshots(damaged_run)  # training and the Hub download refuse such a run outright


def test_heads_in_the_json_that_disagree_with_the_weights(damaged_run: Path) -> None:
    meta_path = sorted(damaged_run.glob("step_*.json"))[0]
    meta = json.loads(meta_path.read_text())
    meta["model"]["n_heads"] = 4  # the metrics (and the weights) have 1 head
    meta_path.write_text(json.dumps(meta))
    assert "1 x 4 numbers" in scan_snapshots(damaged_run).skipped[0]


def test_pages_show_a_run_with_one_bad_snapshot(
    damaged_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta_path = sorted(damaged_run.glob("step_*.json"))[1]
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["prefix_matching"] = [[0.1, 0.2]]
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(EXTRA_RUNS_ENV, str(damaged_run))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = open_page(None, run="damaged")
    assert any("left out" in w.value and meta_path.stem in w.value for w in at.sidebar.warning)
    for page in ("pages/attention.py", "pages/phase_change.py", "pages/ablation.py", "pages/circuits.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
    assert at.session_state[state.SELECTION_KEY].steps == [s.step for s in scan_snapshots(damaged_run).snapshots]


def test_fuzzed_metrics_either_are_refused_or_serve_every_summary() -> None:
    """Seeded random metric dicts: metrics_problem names a problem, or every consumer of stored metrics copes."""
    import random

    from icl_core.analysis.pca import pca_table
    from icl_core.analysis.phase import best_induction_head, phase_window
    from icl_core.analysis.summary import head_score_rows, summary_rows
    from icl_core.model.config import ModelConfig
    from icl_core.storage.snapshots import SnapshotInfo

    rng = random.Random(13)
    cfg = ModelConfig(n_layers=2, n_heads=2, n_ctx=8)
    atoms = [None, 0, -1.5, 1e308, math.nan, "x", True, [], {}, [1.0], [[0.5, 0.5], [0.5, 0.5]], [[1, 2, 3]]]
    refused = 0
    for _ in range(300):
        metrics = {k: rng.choice(atoms) for k in rng.sample(
            ["prefix_matching", "previous_token", "copying", "icl_score", "heldout_loss", "loss_curve", "pca_losses"],
            rng.randint(0, 7),
        )}  # fmt: skip
        problem = metrics_problem(metrics, cfg)
        if problem:
            refused += 1
            assert problem.startswith("metrics.") and any(k in problem for k in metrics), problem
            continue
        snaps = [SnapshotInfo(Path("."), s, 1000 * s, cfg, parse_metrics(metrics, cfg)) for s in (0, 40, 80, 120)]
        summary_rows(snaps)
        [head_score_rows(s) for s in snaps]
        phase_window(snaps)
        best_induction_head(snaps[-1])
        pca_table({"r": snaps})
    assert 0 < refused < 300


# -- 4, 9: links ------------------------------------------------------------------------------------------------


@pytest.fixture
def shipped_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv(EXTRA_RUNS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    "params",
    [
        {"run": "![x](http://host/x.png)"},
        {"run": "[Click to re-login](http://evil.example/login)"},
        {"run": "<img src=x onerror=alert(1)> www.evil.example :red[alarm] $x^2$"},
        {"run": "attn2", "step": "[a](http://evil.example)"},
    ],
)
def test_link_parameters_cannot_inject_markdown(params: dict, shipped_only: None) -> None:
    at = open_page(params=params)
    text = " ".join(w.value for w in at.warning)
    assert text, "a bad link must warn"
    for live in ("](", "![", "<img", "http://", "www.evil", ":red[", "$x"):
        assert not re.search(r"(?<!\\)" + re.escape(live), text), (live, text)  # only escaped, if at all


def test_a_long_link_value_is_cut_and_a_bad_preset_is_escaped(shipped_only: None) -> None:
    at = open_page("pages/attention.py", params={"run": "r" * 500, "preset": "![p](http://h/p.png)"})
    warnings = [w.value for w in at.warning]
    run_warning = next(w for w in warnings if "rrrr" in w)
    assert "r" * 81 not in run_warning and "…" in run_warning
    preset_warning = next(w for w in warnings if "preset" in w)
    assert "](" not in preset_warning and "![" not in preset_warning


def test_foreign_digits_in_a_link_step_are_not_a_step(shipped_only: None) -> None:
    at = open_page(params={"run": "attn2", "step": "٣"})
    assert any("not a number" in w.value for w in at.warning)
    assert at.session_state[state.SELECTION_KEY].step == at.session_state[state.SELECTION_KEY].steps[-1]


def test_messages_show_paths_relative_to_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICL_DATA_DIR", str(tmp_path))
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "step_000001.json").write_text("{oops")
    with pytest.raises(CheckpointError) as err:
        list_snapshots(run)
    assert str(err.value).startswith("runs/r/step_000001.json: not valid JSON")
    assert str(tmp_path) not in str(err.value)


# -- 5: one writer per run ---------------------------------------------------------------------------------------


def test_a_second_writer_on_a_run_folder_is_refused(tmp_path: Path) -> None:
    cfg = train_config_from_dict(with_(run_name="locked"))
    run = tmp_path / "locked"
    with run_writer_lock(run):
        with pytest.raises(CheckpointError, match="another process .* is writing this run"):
            train(cfg, run)
        # The command line says so in one line and exits 1 (a separate process, as a user would run it).
        config = tmp_path / "c.json"
        config.write_text(json.dumps(with_(run_name="locked")))
        cli = subprocess.run(
            [sys.executable, "-m", "icl_core.training.train", str(config), "--out-dir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 1 and "is writing this run" in cli.stderr and "Traceback" not in cli.stderr
        assert not (run / TRAIN_LOG).exists() and not list(run.glob("step_*"))
    assert train(cfg, run) == "finished"  # the lock goes with its holder


# -- 6: Hub downloads ------------------------------------------------------------------------------------------


def test_hub_download_fetches_only_top_level_paired_files(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    fake_hub.add_run(
        "alice/odd",
        tiny_run_dir,
        extra={
            "step_999999.safetensors": b"\0" * 3000,  # weights with no snapshot JSON: nobody's
            "step_x/evil.json": b"{}",  # matched step_*.json as a pattern, but sits in a folder
            "step_000001.json/evil.safetensors": b"x",
            "model.bin": b"pickle",
        },
    )
    path = hub.download_run("alice/odd")
    for name in ("step_999999.safetensors", "evil.json", "evil.safetensors", "model.bin"):
        assert not fake_hub.fetched(name), name
    assert not (path / "step_x").exists() and not (path / "step_999999.safetensors").exists()
    assert len(list_snapshots(path)) == 3


def test_hub_download_refuses_oversized_files_before_fetching(
    fake_hub: FakeHub, tiny_run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tiny_run_dir.parent / "big"
    shutil.copytree(tiny_run_dir, big)
    first = sorted(big.glob("step_*.safetensors"))[0]
    first.write_bytes(first.read_bytes() + b"\0" * 1_100_000)  # over 1 MB (the file is not even valid)
    fake_hub.add_run("alice/big", big)
    monkeypatch.setenv(hub.MAX_FILE_MB_ENV, "1")
    with pytest.raises(HubError, match=f"{first.name} is 1.1 MB, over the 1 MB limit"):
        hub.download_run("alice/big")
    assert not any("/resolve/" in p for _, p in fake_hub.requests)
    monkeypatch.setenv(hub.MAX_FILE_MB_ENV, "100")
    monkeypatch.setenv(hub.MAX_TOTAL_MB_ENV, "1")
    with pytest.raises(HubError, match="over the 1 MB limit for a download"):
        hub.download_run("alice/big")
    assert hub.hub_runs() == []


def test_hub_download_refuses_malformed_metrics(fake_hub: FakeHub, tiny_run_dir: Path) -> None:
    meta = json.loads((tiny_run_dir / "step_000001.json").read_text())
    meta["metrics"]["prefix_matching"] = [[0.1, 0.2]]
    fake_hub.add_run("alice/badmetrics", tiny_run_dir, extra={"step_000001.json": json.dumps(meta).encode()})
    with pytest.raises(HubError, match=r"step_000001.json is unusable: metrics.prefix_matching"):
        hub.download_run("alice/badmetrics")
    assert hub.hub_runs() == []


# -- fuzz: links, typed text, configs ---------------------------------------------------------------------------

MEMORY_BOUND_MB = 3000  # peak RSS of this test process (the app's models are small; a leak or a blow-up is not)


def _fuzz_strings(rng, n: int) -> list[str]:
    pieces = ["attn2", "attn1", "3000", "-1", "٣", "1e9", "![x](http://h/x.png)", "[a](http://b)", "<b>", ":red[x]",
              "$$", "\n", "%00", "\u202e", "🙂", "x" * 700, "", " ", "0x10", "Repeated random tokens"]  # fmt: skip
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 3))) for _ in range(n)]


def test_fuzzed_links_and_text_never_reach_the_page_as_a_traceback(shipped_only: None) -> None:
    import random
    import resource

    rng = random.Random(7)
    values = _fuzz_strings(rng, 24)
    for i in range(6):
        params = {k: values[(4 * i + j) % len(values)] for j, k in enumerate(("run", "step", "text", "preset"))}
        at = open_page("pages/attention.py", params=params)
        for text in values[i::6][:2]:
            at.text_area(key="attn_text").set_value(text).run()
            assert not at.exception, (params, text, at.exception)
        for w in [*at.warning, *at.error]:
            assert "](" not in w.value and "http://" not in w.value, (params, w.value)
        at.switch_page("pages/ablation.py").run()
        assert not at.exception, (params, at.exception)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < MEMORY_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"


def test_fuzzed_configs_are_valid_and_bounded_or_refused_by_name() -> None:
    import random

    from icl_core.model.config import estimate_memory_bytes, parameter_count

    rng = random.Random(11)
    values = [0, 1, 3, 64, 501, 4096, 10**7, 2**70, -3, 0.5, math.nan, math.inf, True, None, "8", [], {}]
    fields = ["batch_size", "total_steps", "lr", "weight_decay", "grad_clip", "seed", "warmup_steps", "n_snapshots",
              "eval_examples", "log_every", "resume_every"]  # fmt: skip
    model_fields = ["n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab"]
    accepted = 0
    for _ in range(400):
        cfg = json.loads(json.dumps(TINY))
        changed = []
        for name in rng.sample(fields, rng.randint(0, 3)):
            cfg[name] = rng.choice(values)
            changed.append(name)
        for name in rng.sample(model_fields, rng.randint(0, 2)):
            cfg["model"][name] = rng.choice(values)
            changed.append(name)
        try:
            parsed = train_config_from_dict(cfg)
            jobs._check_runnable(parsed, 1)
        except ConfigError as exc:
            message = str(exc)
            assert any(name in message for name in changed) or "GiB" in message or "parameters" in message, (
                cfg,
                message,
            )
            continue
        accepted += 1
        assert parameter_count(parsed.model) <= LIMITS.max_parameters
        assert estimate_memory_bytes(parsed) <= LIMITS.max_memory_bytes
    assert 0 < accepted < 400
