import json

import pytest
import torch

from icl_core.errors import CheckpointError
from icl_core.model.config import ModelConfig, TrainConfig
from icl_core.model.transformer import AttnOnlyTransformer
from icl_core.storage.snapshot_metrics import MetricsError, parse_metrics
from icl_core.storage.snapshots import list_snapshots, load_model, read_run_config, write_manifest, write_snapshot

TINY = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=32)


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    model = AttnOnlyTransformer(TINY)
    write_manifest(tmp_path, TrainConfig(run_name="t", model=TINY, compute_icl_score=False))
    write_snapshot(tmp_path, model, step=0, tokens_seen=0, metrics={"train_loss": 5.0})
    write_snapshot(tmp_path, model, step=7, tokens_seen=70, metrics={"train_loss": 4.0}, dtype=torch.float16)
    return tmp_path


def test_round_trip(run_dir):
    snaps = list_snapshots(run_dir)
    assert [s.step for s in snaps] == [0, 7]
    assert snaps[1].tokens_seen == 70 and snaps[1].metrics.train_loss == 4.0
    assert read_run_config(run_dir).model == TINY
    m0, m7 = load_model(snaps[0]), load_model(snaps[1])
    tokens = torch.randint(0, 257, (1, 20))
    # fp16 shipping loses a little precision, nothing more
    assert torch.allclose(m0(tokens), m7(tokens), atol=5e-2)
    assert not list(run_dir.glob("*.tmp")), "atomic writes leave no temp files"


def test_mismatched_config_names_the_file(run_dir):
    meta_path = run_dir / "step_000007.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["d_model"] = 32
    meta_path.write_text(json.dumps(meta))
    snap = list_snapshots(run_dir)[1]
    with pytest.raises(CheckpointError, match=r"step_000007\.safetensors: weights do not match the config"):
        load_model(snap)


def test_truncated_weights(run_dir):
    path = run_dir / "step_000007.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"step_000007\.safetensors: weights file is truncated or corrupt"):
        load_model(list_snapshots(run_dir)[1])


def test_missing_weights(run_dir):
    (run_dir / "step_000000.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"step_000000\.safetensors: weights file is missing"):
        load_model(list_snapshots(run_dir)[0])


def test_unknown_config_key(run_dir):
    meta_path = run_dir / "step_000000.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["mlp"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"step_000000\.json: model: unknown config key\(s\) mlp"):
        list_snapshots(run_dir)


def test_missing_manifest_and_bad_json(tmp_path):
    with pytest.raises(CheckpointError, match=r"run\.json: file is missing"):
        read_run_config(tmp_path)
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_run_config(tmp_path)
    with pytest.raises(CheckpointError, match="run folder does not exist"):
        read_run_config(tmp_path / "nope")


def test_nan_weights_are_refused(run_dir):
    from safetensors.torch import load_file, save_file

    path = run_dir / "step_000000.safetensors"
    state = load_file(path)
    state["W_E"][0, 0] = float("nan")
    save_file(state, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(list_snapshots(run_dir)[0])


def test_stored_metrics_are_parsed_once_into_typed_values() -> None:
    cfg = ModelConfig(n_layers=2, n_heads=2, n_ctx=4)
    raw = {
        "icl_score": -0.2,
        "icl_examples": 2048,
        "prefix_matching": [[0.1, 0.2], [0.9, 0]],
        "loss_curve": [3, 2.5, 2.0],
        "copying": [[0.5, float("nan")], [0.1, 0.2]],
        "written_by_a_newer_version": {"any": "thing"},
    }
    m = parse_metrics(raw, cfg)
    assert m.prefix_matching == ((0.1, 0.2), (0.9, 0.0)) and isinstance(m.prefix_matching[1][1], float)
    assert m.loss_curve == (3.0, 2.5, 2.0) and m.icl_examples == 2048 and isinstance(m.icl_examples, int)
    assert m.copying is None and m.non_finite == ("copying",), "a NaN leaves the whole metric out, named"
    assert m.scalar("icl_score") == -0.2 and m.icl_score_se is None and m.recorded
    assert not parse_metrics({}, cfg).recorded
    with pytest.raises(KeyError):
        m.scalar("prefix_matching")  # a grid, not a scalar
    for bad, says in (
        ({"prefix_matching": [[0.1, 0.2]]}, "metrics.prefix_matching must be 2 x 2"),
        ({"loss_curve": [1.0, 2.0]}, "metrics.loss_curve must be 3 numbers"),
        ({"icl_score": "low"}, "metrics.icl_score must be a number"),
        ({"pca_losses": []}, "metrics.pca_losses must be a non-empty list"),
        ([], "metrics must be a JSON object"),
    ):
        with pytest.raises(MetricsError, match=says):
            parse_metrics(bad, cfg)
