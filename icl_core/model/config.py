"""Model and training configuration as plain dataclasses, with strict (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from icl_core.errors import ConfigError

# Token index pair used by the ICL score (Olsson et al. 2022): loss(500) - loss(50).
ICL_LATE_TOKEN = 500
ICL_EARLY_TOKEN = 50
ICL_FORMULA = f"loss({ICL_LATE_TOKEN}) − loss({ICL_EARLY_TOKEN})"  # how every page writes it

BYTE_VOCAB = 257  # 256 bytes + a start-of-sequence token: the smallest vocabulary our tokenizer needs
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds
MAX_RUN_NAME = 64  # characters: a run name is a folder name and a label in the run picker
BYTES_TOKENIZER = "bytes"
# "rotary": GPT-NeoX's rotary embeddings inside attention (model/neox.py), nothing added to the residual stream.
POSITIONALS = ("learned", "sinusoidal", "shortformer", "rotary")
ModelFamily = Literal["attn-only", "gpt-neox"]
MODEL_FAMILIES: tuple[str, ...] = get_args(ModelFamily)
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


def spec(
    label: str | None = None,
    help: str | None = None,
    step: float | None = None,
    low: int | None = None,
    high: int | None = None,
) -> dict[str, Any]:
    """A field's metadata, its one home: the Train form's label, help and step, and an integer's bounds, which
    validate() enforces and the form states."""
    return {
        k: v for k, v in {"label": label, "help": help, "step": step, "low": low, "high": high}.items() if v is not None
    }


FieldKind = Literal["int", "float", "bool", "choice"]


@dataclass(frozen=True)
class FormField:
    """What the Train form draws for one config field (form_field)."""

    name: str
    label: str
    kind: FieldKind
    help: str | None = None
    step: float | None = None
    low: int | None = None
    high: int | None = None
    options: tuple[str, ...] = ()


def form_field(cls: type, name: str) -> FormField:
    """The field's label, help, step, bounds and options, as declared on the dataclass (spec, TRAIN_CHOICES)."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = found.metadata
    annotation = get_type_hints(cls)[name]
    options = tuple(get_args(annotation)) if name in TRAIN_CHOICES else ()
    kinds: dict[type, FieldKind] = {int: "int", float: "float", bool: "bool"}
    kind: FieldKind = "choice" if options else kinds[annotation]
    return FormField(
        name,
        meta.get("label", name),
        kind,
        meta.get("help"),
        meta.get("step"),
        meta.get("low"),
        meta.get("high"),
        options,
    )


def _check_bounds(cfg: object, prefix: str = "") -> None:
    """Every integer field that declares its bounds (spec's low and high), checked."""
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        if "low" in f.metadata:
            _check_int(f"{prefix}{f.name}", getattr(cfg, f.name), f.metadata["low"], f.metadata["high"])


@dataclass(frozen=True)
class ModelConfig:
    """An attention-only transformer (no MLPs), as in Elhage et al. 2021; or, with family "gpt-neox", a Pythia-style
    model with MLPs (imported only: model/neox.py)."""

    n_layers: int = field(default=2, metadata=spec("Layers", step=1, low=1, high=LIMITS.n_layers))
    n_heads: int = field(default=4, metadata=spec("Heads", step=1, low=1, high=LIMITS.n_heads))
    d_model: int = field(default=64, metadata=spec("d_model", step=8, low=1, high=LIMITS.d_model))
    d_head: int = field(default=16, metadata=spec("d_head", step=4, low=1, high=LIMITS.d_head))
    n_ctx: int = field(default=512, metadata=spec("Context (n_ctx)", step=64, low=1, high=LIMITS.n_ctx))
    d_vocab: int = field(default=BYTE_VOCAB, metadata=spec(low=1, high=LIMITS.d_vocab))  # 256 bytes + a start token
    smeared_keys: bool = field(
        default=False, metadata=spec("Smeared keys", "Olsson et al.'s smeared-key architecture.")
    )
    # "learned" or "sinusoidal": added to the residual stream; "shortformer" (learned): added only to the
    # query and key inputs of every layer, as in TransformerLens's shortformer models (Hoogland et al.'s).
    positional: str = "learned"
    # TransformerLens-format models (the field's published checkpoints) have a LayerNorm before every
    # attention layer and the unembedding, and biases; our own runs have neither, so circuits are exact.
    normalization: str = "none"  # "none" or "LN"
    biases: bool = False  # b_Q, b_K, b_V (per head), b_O (per layer), b_U
    # "bytes" (ours: 256 bytes + a start token) or the Hub repo of a tokenizer.json (TransformerLens models).
    tokenizer: str = BYTES_TOKENIZER
    # "attn-only" (model/transformer.py) or "gpt-neox" (model/neox.py: LN, biases, rotary positions and an MLP per
    # layer, the two added in parallel or one after the other); the fields below are gpt-neox's only.
    family: ModelFamily = "attn-only"
    d_mlp: int = field(default=0, metadata=spec(low=0, high=4 * LIMITS.d_model))
    rotary_dim: int = field(default=0, metadata=spec(low=0, high=LIMITS.d_head))  # each head's rotated dims
    rotary_base: float = 10_000.0
    parallel_residual: bool = False

    @property
    def has_mlps(self) -> bool:
        return self.family == "gpt-neox"

    def validate(self) -> None:
        _check_bounds(self, "model.")
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
        for name in ("smeared_keys", "biases", "parallel_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model.{name} must be true or false, got {getattr(self, name)!r}")
        self._validate_family()

    def _validate_family(self) -> None:
        if self.family not in MODEL_FAMILIES:
            raise ConfigError(f"model.family must be one of {', '.join(MODEL_FAMILIES)}, got {self.family!r}")
        rotary = self.positional == "rotary"
        if self.family == "attn-only":
            if rotary or self.d_mlp or self.rotary_dim or self.parallel_residual:
                raise ConfigError("model: rotary positions, d_mlp, rotary_dim and parallel_residual are gpt-neox's")
            return
        if not (rotary and self.normalization == "LN" and self.d_mlp > 0) or self.smeared_keys:
            raise ConfigError("model: a gpt-neox model has rotary positions, LayerNorm, d_mlp > 0 and no smeared keys")
        if self.rotary_dim % 2 or self.rotary_dim > self.d_head or self.d_head * self.n_heads != self.d_model:
            raise ConfigError(
                f"model: rotary_dim {self.rotary_dim} must be even and at most d_head, and d_head x n_heads = d_model"
            )
        base = self.rotary_base
        if not isinstance(base, (int, float)) or isinstance(base, bool) or base <= 1:
            raise ConfigError(f"model.rotary_base must be a number above 1, got {self.rotary_base!r}")


LrSchedule = Literal["cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
SnapshotDtype = Literal["float32", "float16"]
# A choice field's options, once: validation, the Train form's selectboxes and their help all read them here.
TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "lr_schedule": get_args(LrSchedule),
    "device": get_args(Device),
    "snapshot_dtype": get_args(SnapshotDtype),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; with the same seed a run is reproducible."""

    run_name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = field(default=0, metadata=spec("Seed", step=1, low=0, high=MAX_SEED))
    batch_size: int = field(default=16, metadata=spec("Batch size", step=1, low=1, high=LIMITS.batch_size))
    total_steps: int = field(default=2000, metadata=spec("Steps", step=100, low=1, high=LIMITS.total_steps))
    lr: float = field(default=3e-3, metadata=spec("Learning rate", step=1e-4))
    lr_schedule: LrSchedule = field(
        default="cosine",
        metadata=spec("LR schedule", "after warmup: cosine decay to 10% of the rate (the shipped runs), or constant"),
    )
    weight_decay: float = field(default=0.05, metadata=spec("Weight decay", step=0.01))
    warmup_steps: int = field(default=50, metadata=spec("Warmup steps", step=10, low=0, high=LIMITS.warmup_steps))
    grad_clip: float = field(default=1.0, metadata=spec("Gradient clip (0: off)", step=0.1))
    n_snapshots: int = field(
        default=36,
        metadata=spec("Snapshots", "log-spaced, step 0 and the last step included", 1, 2, LIMITS.n_snapshots),
    )
    n_dense_snapshots: int = field(
        default=0,
        metadata=spec(
            "Extra snapshots", "log-spaced between the two steps on the right: denser through a phase change", 4, 0,
            LIMITS.n_snapshots,
        ),
    )  # fmt: skip
    # Not bounded by total_steps: a preset's dense range stays valid when a visitor shortens the run (the schedule
    # keeps the part that fits).
    dense_from_step: int = field(default=0, metadata=spec("… from step", step=100, low=0, high=LIMITS.total_steps))
    dense_to_step: int = field(default=0, metadata=spec("… to step", step=100, low=0, high=LIMITS.total_steps))
    eval_examples: int = field(
        default=64,
        metadata=spec(
            "Eval examples", "held-out sequences for the in-context loss curve and the PCA vector", 8, 1,
            LIMITS.eval_examples,
        ),
    )  # fmt: skip
    icl_examples: int = field(
        default=1024,
        metadata=spec(
            "ICL examples",
            "held-out sequences for each snapshot's ICL score: its standard error shrinks as 1/√n (about 0.09 nats "
            "at 1024, 0.03 at 8192, the shipped runs' value)",
            256, 1, LIMITS.icl_examples,
        ),
    )  # fmt: skip
    compute_icl_score: bool = field(
        default=True, metadata=spec(f"Compute the ICL score (needs n_ctx > {ICL_LATE_TOKEN})")
    )
    device: Device = field(default="auto", metadata=spec("Device", "auto: a GPU when present."))
    snapshot_dtype: SnapshotDtype = field(
        default="float32", metadata=spec("Snapshot dtype", "float16 halves the size of the run.")
    )
    log_every: int = field(default=10, metadata=spec("Log every (steps)", step=1, low=1, high=LIMITS.log_every))
    resume_every: int = field(
        default=200,
        metadata=spec("Resume state every (steps)", "besides one at every snapshot", 50, 1, LIMITS.resume_every),
    )

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
        _check_bounds(self)
        if self.n_dense_snapshots and not 0 < self.dense_from_step < self.dense_to_step:
            raise ConfigError("dense snapshots need 0 < dense_from_step < dense_to_step")
        for name, options in TRAIN_CHOICES.items():
            if getattr(self, name) not in options:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, options))}, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number (finite), got {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be positive")
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
    if m.has_mlps:  # model/neox.py: attention with biases, two LayerNorms and an MLP per layer; untied unembedding
        attn = 4 * m.n_heads * m.d_model * m.d_head + 3 * m.n_heads * m.d_head + m.d_model
        mlp = 2 * m.d_model * m.d_mlp + m.d_mlp + m.d_model
        return 2 * m.d_vocab * m.d_model + m.n_layers * (attn + mlp + 4 * m.d_model) + 2 * m.d_model
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
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer of at least {low:,} and")
        raise ConfigError(f"{name} must be {kind} of at most {high:,}, got {repr(value)[:40]}")


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
