import pytest
import torch
from safetensors.torch import load_file

from icl_core import stdlib_text
from icl_core.model.config import train_config_from_dict
from icl_core.storage.snapshots import list_snapshots
from icl_core.training.train import snapshot_steps, train

TINY = {
    "model": {"n_layers": 2, "n_heads": 2, "d_model": 16, "d_head": 8, "n_ctx": 64, "smeared_keys": True},
    "compute_icl_score": False,
    "batch_size": 2,
    "total_steps": 12,
    "n_snapshots": 5,
    "eval_examples": 4,
    "log_every": 4,
}


def test_snapshot_steps_are_log_spaced_from_zero():
    steps = snapshot_steps(3000, 48)
    assert steps[0] == 0 and steps[-1] == 3000 and len(steps) >= 48
    assert steps == sorted(set(steps))
    late = torch.tensor(steps[20:], dtype=torch.float64)
    ratios = late[1:] / late[:-1]
    assert float(ratios.max() / ratios.min()) < 1.2, "a constant ratio between later snapshots"
    assert snapshot_steps(3, 10) == [0, 1, 2, 3]


def test_training_is_deterministic_given_the_seed(tmp_path):
    cfg = train_config_from_dict({**TINY, "run_name": "a"})
    assert train(cfg, tmp_path / "a") == "finished"
    assert train(train_config_from_dict({**TINY, "run_name": "b"}), tmp_path / "b") == "finished"
    assert train(train_config_from_dict({**TINY, "run_name": "c", "seed": 1}), tmp_path / "c") == "finished"
    snaps = {name: list_snapshots(tmp_path / name) for name in "abc"}
    assert [s.step for s in snaps["a"]] == snapshot_steps(12, 5)
    last = {name: load_file(s[-1].weights_path) for name, s in snaps.items()}
    assert all(torch.equal(last["a"][k], last["b"][k]) for k in last["a"])
    assert not all(torch.equal(last["a"][k], last["c"][k]) for k in last["a"]), "another seed, another model"
    metrics = snaps["a"][-1].metrics
    stored = ("train_loss", "heldout_loss", "loss_curve", "pca_losses", "prefix_matching", "smear")
    assert all(getattr(metrics, k) is not None for k in stored)
    assert metrics.icl_score is None  # not asked for: the context is too short
    assert snaps["a"][-1].metrics.heldout_loss < snaps["a"][0].metrics.heldout_loss, "it learns something"


def test_dense_snapshots_are_added_between_the_two_steps():
    base = snapshot_steps(12288, 52)
    dense = snapshot_steps(12288, 52, (16, 1000, 4000))
    added = sorted(set(dense) - set(base))
    assert set(base) <= set(dense) and len(dense) == len(base) + 16
    assert all(1000 <= s <= 4000 for s in added)
    assert snapshot_steps(400, 10, (16, 1000, 4000)) == snapshot_steps(400, 10), "a range past the run adds nothing"
    clipped = set(snapshot_steps(2000, 10, (8, 1000, 4000))) - set(snapshot_steps(2000, 10))
    assert clipped and all(1000 <= s <= 2000 for s in clipped)


def test_constant_schedule_holds_the_rate_after_warmup():
    from icl_core.training.train import lr_at

    cfg = train_config_from_dict({**TINY, "run_name": "s", "lr": 0.01, "warmup_steps": 4, "lr_schedule": "constant"})
    assert lr_at(0, cfg) == pytest.approx(0.0025)
    assert lr_at(4, cfg) == lr_at(11, cfg) == 0.01
    cosine = train_config_from_dict({**TINY, "run_name": "c", "lr": 0.01, "warmup_steps": 4})
    assert lr_at(11, cosine) < 0.005, "the default schedule still decays"


# The smallest run whose context reaches the ICL score's token 500.
ICL_RUN = {
    "model": {"n_layers": 1, "n_heads": 2, "d_model": 16, "d_head": 8, "n_ctx": 512},
    "batch_size": 2,
    "total_steps": 2,
    "n_snapshots": 2,
    "eval_examples": 4,
    "icl_examples": 40,
}


def test_a_run_records_its_icl_score_with_its_standard_error_and_data_hashes(tmp_path):
    from icl_core import data, evalset, proseset
    from icl_core.storage.snapshots import read_manifest

    cfg = train_config_from_dict({**ICL_RUN, "run_name": "icl"})
    assert train(cfg, tmp_path / "icl") == "finished"
    m = list_snapshots(tmp_path / "icl")[-1].metrics
    assert m.icl_examples == 40 and m.icl_score_se > 0
    assert m.icl_examples_prose == proseset.N_EXAMPLES and m.icl_score_prose_se > 0
    assert m.icl_score_prose != m.icl_score  # another set of examples, not a copy
    manifest = read_manifest(tmp_path / "icl")
    assert manifest["eval_set_sha256"] == evalset.load().sha256
    assert manifest["prose_set_sha256"] == proseset.load().sha256
    assert manifest["train_corpus_sha256"] == stdlib_text.corpus_sha256("train")
    assert data.provenance_notes(manifest) == []
    other = {**manifest, "eval_set_sha256": "0" * 64, "train_corpus_sha256": "1" * 64, "prose_set_sha256": "2" * 64}
    assert len(data.provenance_notes(other)) == 3


def test_runs_trained_before_the_prose_set_get_its_scores_added(tmp_path):
    import json

    from icl_core import proseset
    from icl_core.analysis.evaluation import add_prose_scores
    from icl_core.storage.snapshots import read_manifest

    cfg = train_config_from_dict({**ICL_RUN, "run_name": "old"})
    run = tmp_path / "old"
    assert train(cfg, run) == "finished"
    stored = {s.step: s.metrics.icl_score_prose for s in list_snapshots(run)}
    for snap in list_snapshots(run):  # as a run trained before the prose set existed
        meta = json.loads(snap.meta_path.read_text())
        for key in ("icl_score_prose", "icl_score_prose_se", "icl_examples_prose"):
            del meta["metrics"][key]
        snap.meta_path.write_text(json.dumps(meta))
    manifest = read_manifest(run)
    del manifest["prose_set_sha256"]
    (run / "run.json").write_text(json.dumps(manifest))
    assert add_prose_scores(run, say=lambda _: None) == len(stored)
    again = {s.step: s.metrics.icl_score_prose for s in list_snapshots(run)}
    assert again == pytest.approx(stored, abs=1e-6)
    assert read_manifest(run)["prose_set_sha256"] == proseset.load().sha256
    assert add_prose_scores(run, say=lambda _: None) == 0  # nothing left to do
