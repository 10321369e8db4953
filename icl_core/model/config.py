"""Model and training configuration as plain dataclasses, with strict (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from icl_core.errors import ConfigError

# Token index pair used by the ICL score (Olsson et al. 2022): loss(500) - loss(50).
ICL_LATE_TOKEN = 500
ICL_EARLY_TOKEN = 50
ICL_FORMULA = f"loss({ICL_LATE_TOKEN}) − loss({ICL_EARLY_TOKEN})"  # how every page writes it

BYTE_VOCAB = 257  # 256 bytes + a start-of-sequence token: the smallest vocabulary our tokenizer needs
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds
MAX_RUN_NAME = 64  # characters: a run name is a folder name and a label in the run picker
BYTES_TOKENIZER = "bytes"
POSITIONALS = ("learned", "sinusoidal", "shortformer")
NORMALIZATIONS = ("none", "LN")
LN_EPS = 1e-5  # TransformerLens's LayerNorm epsilon


@dataclass(frozen=True)
class Limits:
    """What one training job may ask for: sized for a shared 2-vCPU, 16 GB Space (one place, shown in the form).

    The memory estimate (estimate_memory_bytes) covers weights, gradients, AdamW moments and the activations of
    one training step; the real peak is within a small factor of it.
    """

    n_layers: int = 12
    n_heads: int = 32
    d_model: int = 1024
    d_head: int = 256
    n_ctx: int = 2048
    d_vocab: int = 65536
    batch_size: int = 512
    total_steps: int = 1_000_000
    n_snapshots: int = 400
    eval_examples: int = 20_000
    icl_examples: int = 20_000
    log_every: int = 100_000
    resume_every: int = 1_000_000
    warmup_steps: int = 1_000_000
    max_parameters: int = 50_000_000
    max_memory_bytes: int = 6 * 2**30
    max_eval_tokens: int = 20_000_000  # eval_examples x n_ctx: what each snapshot's evaluation reads


LIMITS = Limits()


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
    # "learned" or "sinusoidal": added to the residual stream; "shortformer" (learned): added only to the
    # query and key inputs of every layer, as in TransformerLens's shortformer models (Hoogland et al.'s).
    positional: str = "learned"
    # TransformerLens-format models (the field's published checkpoints) have a LayerNorm before every
    # attention layer and the unembedding, and biases; our own runs have neither, so circuits are exact.
    normalization: str = "none"  # "none" or "LN"
    biases: bool = False  # b_Q, b_K, b_V (per head), b_O (per layer), b_U
    # "bytes" (ours: 256 bytes + a start token) or the Hub repo of a tokenizer.json (TransformerLens models).
    tokenizer: str = BYTES_TOKENIZER

    def validate(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab"):
            _check_int(f"model.{name}", getattr(self, name), 1, getattr(LIMITS, name))
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ConfigError(f"model.tokenizer must be 'bytes' or a tokenizer repo id, got {self.tokenizer!r}")
        if self.tokenizer == BYTES_TOKENIZER and self.d_vocab < BYTE_VOCAB:
            raise ConfigError(
                f"model.d_vocab must be at least {BYTE_VOCAB} (256 bytes + a start token), got {self.d_vocab}"
            )
        if self.positional not in POSITIONALS:
            raise ConfigError(f"model.positional must be one of {', '.join(POSITIONALS)}, got {self.positional!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"model.normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )
        for name in ("smeared_keys", "biases"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model.{name} must be true or false, got {getattr(self, name)!r}")


LrSchedule = Literal["cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
SnapshotDtype = Literal["float32", "float16"]
# A choice field's options, once: validation, the Train form's selectboxes and their help all read them here.
TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule": get_args(LrSchedule),
    "device": get_args(Device),
    "snapshot_dtype": get_args(SnapshotDtype),
}


def field_help(cls: type, name: str) -> str | None:
    """A dataclass field's help text (its metadata["help"]): the Train form shows it beside the field."""
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return None if found is None else found.metadata.get("help")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; with the same seed a run is reproducible."""

    run_name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    batch_size: int = 16
    total_steps: int = 2000
    lr: float = 3e-3
    lr_schedule: LrSchedule = field(
        default="cosine",
        metadata={"help": "after warmup: cosine decay to 10% of the rate (the shipped runs), or constant"},
    )
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    n_snapshots: int = 36  # log-spaced, step 0 and the last step included
    # Extra snapshots, log-spaced between two steps: denser sampling through an expected phase change.
    n_dense_snapshots: int = 0
    dense_from_step: int = 0
    dense_to_step: int = 0
    eval_examples: int = 64  # held-out sequences for the in-context loss curve and the PCA vector
    icl_examples: int = 1024  # held-out sequences for the ICL score and its standard error (8192 in shipped runs)
    compute_icl_score: bool = True
    device: Device = field(default="auto", metadata={"help": "auto: a GPU when present."})
    snapshot_dtype: SnapshotDtype = field(default="float32", metadata={"help": "float16 halves the size of the run."})
    log_every: int = 10
    resume_every: int = 200  # steps between resume states, besides every snapshot

    def validate(self, check_size: bool = True) -> None:
        """Refuse a bad config with a message naming the field; check_size=False for a stored run's config
        (LIMITS bound what may be trained here, not what may be looked at)."""
        self.model.validate()
        if (
            not isinstance(self.run_name, str)
            or not 0 < len(self.run_name) <= MAX_RUN_NAME
            or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in self.run_name)
            or self.run_name.startswith(".")
        ):
            shown = repr(self.run_name)[:40] + ("…" if len(repr(self.run_name)) > 40 else "")
            raise ConfigError(
                f"run_name must be non-empty, at most {MAX_RUN_NAME} characters, and use only ASCII letters, "
                f"digits, '-', '_', '.' (not starting with '.'): {shown}"
            )
        for name in (
            "batch_size",
            "total_steps",
            "n_snapshots",
            "eval_examples",
            "icl_examples",
            "log_every",
            "resume_every",
        ):
            _check_int(name, getattr(self, name), 1, getattr(LIMITS, name))
        _check_int("n_dense_snapshots", self.n_dense_snapshots, 0, LIMITS.n_snapshots)
        # Not bounded by total_steps: a preset's dense range stays valid when a visitor shortens the run (the
        # schedule keeps the part that fits).
        _check_int("dense_from_step", self.dense_from_step, 0, LIMITS.total_steps)
        _check_int("dense_to_step", self.dense_to_step, 0, LIMITS.total_steps)
        if self.n_dense_snapshots and not 0 < self.dense_from_step < self.dense_to_step:
            raise ConfigError("dense snapshots need 0 < dense_from_step < dense_to_step")
        for name, options in TRAIN_CHOICES.items():
            if getattr(self, name) not in options:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}, got {getattr(self, name)!r}")
        _check_int("warmup_steps", self.warmup_steps, 0, LIMITS.warmup_steps)
        _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number (finite), got {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
        if self.n_snapshots < 2:
            raise ConfigError("n_snapshots must be at least 2 (step 0 and the last step)")
        if self.compute_icl_score and self.model.n_ctx <= ICL_LATE_TOKEN:
            raise ConfigError(
                f"model.n_ctx must be at least {ICL_LATE_TOKEN + 1} to measure the ICL score "
                f"(loss at token {ICL_LATE_TOKEN}); got {self.model.n_ctx}. "
                "Raise n_ctx or set compute_icl_score to false."
            )
        if check_size:
            self.check_size()

    def check_size(self) -> None:
        """Refuse configs too big for the server (LIMITS), before anything is built."""
        n_params = parameter_count(self.model)
        if n_params > LIMITS.max_parameters:
            raise ConfigError(f"the model has {n_params:,} parameters; the limit is {LIMITS.max_parameters:,}")
        memory = estimate_memory_bytes(self)
        if memory > LIMITS.max_memory_bytes:
            raise ConfigError(
                f"one training step needs about {memory / 2**30:.1f} GiB; the limit is "
                f"{LIMITS.max_memory_bytes / 2**30:.0f} GiB: lower batch_size, n_ctx or the model size"
            )
        eval_tokens = self.eval_examples * self.model.n_ctx + self.icl_examples * (ICL_LATE_TOKEN + 2)
        if eval_tokens > LIMITS.max_eval_tokens:
            raise ConfigError(
                f"each snapshot would evaluate {eval_tokens:,} tokens "
                f"(eval_examples x n_ctx + icl_examples x {ICL_LATE_TOKEN + 2}); "
                f"the limit is {LIMITS.max_eval_tokens:,}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parameter_count(m: ModelConfig) -> int:
    per_layer = 4 * m.n_heads * m.d_model * m.d_head + (m.n_heads if m.smeared_keys else 0)
    if m.biases:
        per_layer += 3 * m.n_heads * m.d_head + m.d_model
    if m.normalization == "LN":
        per_layer += 2 * m.d_model
    learned_pos = m.n_ctx * m.d_model if m.positional != "sinusoidal" else 0
    final = (2 * m.d_model if m.normalization == "LN" else 0) + (m.d_vocab if m.biases else 0)
    return 2 * m.d_vocab * m.d_model + learned_pos + m.n_layers * per_layer + final


def estimate_memory_bytes(cfg: TrainConfig) -> int:
    """Rough float32 peak of one training step: weights, grads and AdamW moments, plus what backward keeps."""
    m = cfg.model
    tokens = cfg.batch_size * m.n_ctx
    per_layer = tokens * (4 * m.n_heads * m.d_head + m.n_heads * m.d_model + 2 * m.d_model)  # q k v z, results, resid
    logits = 3 * tokens * m.d_vocab  # logits, log-softmax and its gradient
    # Evaluation reads attention patterns in batches of up to 64 sequences (pattern-capturing probes).
    patterns = min(64, cfg.eval_examples) * m.n_layers * m.n_heads * min(m.n_ctx, 128) ** 2
    return 4 * (4 * parameter_count(m) + 2 * m.n_layers * per_layer + logits + patterns)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        kind = "positive" if low == 1 else "non-negative" if low == 0 else f"at least {low:,}, an"
        raise ConfigError(f"{name} must be a {kind} integer of at most {high:,}, got {repr(value)[:40]}")


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


def train_config_from_dict(data: dict[str, Any], where: str = "train config", check_size: bool = True) -> TrainConfig:
    fields = _strict_fields(TrainConfig, data, where)
    if "model" in fields:
        fields["model"] = model_config_from_dict(fields["model"], f"{where}: model")
    try:
        cfg = TrainConfig(**fields)
    except TypeError as exc:  # pragma: no cover - _strict_fields catches unknown keys
        raise ConfigError(f"{where}: {exc}") from exc
    cfg.validate(check_size)
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
