import json

import pytest

from icl_core.errors import ConfigError
from icl_core.model.config import ModelConfig, TrainConfig, load_train_config, train_config_from_dict


def test_round_trip_through_dict():
    cfg = TrainConfig(run_name="x", model=ModelConfig(n_layers=1, smeared_keys=True), seed=3)
    assert train_config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"bogus": 1}, "unknown config key(s) bogus"),
        ({"model": {"n_heads": -1}}, "model.n_heads must be a positive integer"),
        ({"model": {"d_model": 0}}, "model.d_model must be a positive integer"),
        ({"model": {"n_ctx": 256}}, "n_ctx must be at least 501"),
        ({"model": {"wings": 2}}, "unknown config key(s) wings"),
        ({"lr": -1.0}, "lr must be a non-negative number"),
        ({"run_name": "../evil"}, "run_name must be non-empty"),
        ({"device": "tpu"}, "device must be"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(patch, message):
    with pytest.raises(ConfigError, match=None) as err:
        train_config_from_dict(patch)
    assert message in str(err.value)


def test_short_context_is_fine_without_icl_score():
    cfg = train_config_from_dict({"model": {"n_ctx": 64}, "compute_icl_score": False})
    assert cfg.model.n_ctx == 64


def test_load_train_config_names_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="c.json: not valid JSON"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.json")
    path.write_text(json.dumps({"run_name": "ok", "total_steps": 5}))
    assert load_train_config(path).total_steps == 5
