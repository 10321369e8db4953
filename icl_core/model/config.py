"""Model and training configuration as plain dataclasses, with strict (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icl_core.errors import ConfigError

# Token index pair used by the ICL score (Olsson et al. 2022): loss(500) - loss(50).
ICL_LATE_TOKEN = 500
ICL_EARLY_TOKEN = 50


@dataclass(frozen=True)
class ModelConfig:
    """An attention-only transformer (no MLPs), as in Elhage et al. 2021."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    n_ctx: int = 512
    d_vocab: int = 257  # 256 bytes + a start-of-sequence token
    smeared_keys: bool = False
    positional: str = "learned"  # "learned" or "sinusoidal", added to the residual stream

    def validate(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.positional not in ("learned", "sinusoidal"):
            raise ConfigError(f"model.positional must be 'learned' or 'sinusoidal', got {self.positional!r}")
        if not isinstance(self.smeared_keys, bool):
            raise ConfigError(f"model.smeared_keys must be true or false, got {self.smeared_keys!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; with the same seed a run is reproducible."""

    run_name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    batch_size: int = 16
    total_steps: int = 2000
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    n_snapshots: int = 36  # log-spaced, step 0 and the last step included
    eval_examples: int = 64  # held-out sequences for the in-context loss curve and ICL score
    compute_icl_score: bool = True
    device: str = "auto"  # "auto", "cpu" or "cuda"
    snapshot_dtype: str = "float32"  # "float16" halves the size of shipped runs
    log_every: int = 10
    resume_every: int = 200  # steps between resume states, besides every snapshot

    def validate(self) -> None:
        self.model.validate()
        if not self.run_name or not all(c.isalnum() or c in "-_." for c in self.run_name):
            raise ConfigError(
                f"run_name must be non-empty and use only letters, digits, '-', '_', '.': {self.run_name!r}"
            )
        for name in ("batch_size", "total_steps", "n_snapshots", "eval_examples", "log_every", "resume_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.snapshot_dtype not in ("float32", "float16"):
            raise ConfigError(f"snapshot_dtype must be 'float32' or 'float16', got {self.snapshot_dtype!r}")
        if self.n_snapshots < 2:
            raise ConfigError("n_snapshots must be at least 2 (step 0 and the last step)")
        if self.compute_icl_score and self.model.n_ctx <= ICL_LATE_TOKEN:
            raise ConfigError(
                f"model.n_ctx must be at least {ICL_LATE_TOKEN + 1} to measure the ICL score "
                f"(loss at token {ICL_LATE_TOKEN}); got {self.model.n_ctx}. "
                "Raise n_ctx or set compute_icl_score to false."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _strict_fields(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    return dict(data)


def model_config_from_dict(data: dict[str, Any], where: str = "model config") -> ModelConfig:
    cfg = ModelConfig(**_strict_fields(ModelConfig, data, where))
    cfg.validate()
    return cfg


def train_config_from_dict(data: dict[str, Any], where: str = "train config") -> TrainConfig:
    fields = _strict_fields(TrainConfig, data, where)
    if "model" in fields:
        fields["model"] = model_config_from_dict(fields["model"], f"{where}: model")
    try:
        cfg = TrainConfig(**fields)
    except TypeError as exc:  # pragma: no cover - _strict_fields catches unknown keys
        raise ConfigError(f"{where}: {exc}") from exc
    cfg.validate()
    return cfg


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return train_config_from_dict(data, where=str(path))
