"""On-disk layout of runs and snapshots, with atomic writes and strict loading.

    <run>/run.json                      manifest: format, run name, train config, how it was made
    <run>/step_000123.safetensors       weights (fp32 while training, fp16 when shipped)
    <run>/step_000123.json              model config + step, tokens seen, metrics

A snapshot exists once its JSON is on disk: the weights are written (atomically) first, so a crash
never leaves a visible snapshot without complete weights.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from icl_core.errors import CheckpointError, ConfigError
from icl_core.model.config import ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from icl_core.model.tokenizer import load_tokenizer
from icl_core.model.transformer import AttnOnlyTransformer

RUN_FORMAT = "icl-explorer-run"
RUN_FORMAT_VERSION = 1
MANIFEST = "run.json"
TRAIN_LOG = "train_log.jsonl"  # one JSON line per logged training step, appended by the training loop
_SNAPSHOT_RE = re.compile(r"^step_(\d{6,})\.json$")


def snapshot_stem(step: int) -> str:
    return f"step_{step:06d}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + os.replace, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(path, "file is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, f"not valid JSON ({exc})") from exc


@dataclass
class SnapshotInfo:
    run_dir: Path
    step: int
    tokens_seen: int
    model_config: ModelConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    non_finite: tuple[str, ...] = ()  # stored metrics left out of `metrics` because they hold NaN or inf

    @property
    def weights_path(self) -> Path:
        return self.run_dir / f"{snapshot_stem(self.step)}.safetensors"

    @property
    def meta_path(self) -> Path:
        return self.run_dir / f"{snapshot_stem(self.step)}.json"


def write_snapshot(
    run_dir: Path,
    model: AttnOnlyTransformer,
    step: int,
    tokens_seen: int,
    metrics: dict[str, Any],
    dtype: torch.dtype = torch.float32,
) -> SnapshotInfo:
    stem = snapshot_stem(step)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    atomic_save_tensors(run_dir / f"{stem}.safetensors", state, metadata={"step": str(step)})
    meta = {
        "step": step,
        "tokens_seen": tokens_seen,
        "model": model.cfg.__dict__.copy(),
        "metrics": metrics,
    }
    atomic_write_json(run_dir / f"{stem}.json", meta)
    return SnapshotInfo(run_dir, step, tokens_seen, model.cfg, metrics)


def write_manifest(run_dir: Path, config: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    manifest = {
        "format": RUN_FORMAT,
        "version": RUN_FORMAT_VERSION,
        "run_name": config.run_name,
        "config": config.to_dict(),
    }
    manifest.update(extra or {})
    atomic_write_json(run_dir / MANIFEST, manifest)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(run_dir, "run folder does not exist")
    manifest = read_json(run_dir / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise CheckpointError(run_dir / MANIFEST, f"not an {RUN_FORMAT} manifest")
    return manifest


def read_run_config(run_dir: Path) -> TrainConfig:
    manifest = read_manifest(run_dir)
    try:
        return train_config_from_dict(manifest.get("config", {}), where=str(Path(run_dir) / MANIFEST), check_size=False)
    except ConfigError as exc:
        raise CheckpointError(Path(run_dir) / MANIFEST, str(exc)) from exc


def list_snapshots(run_dir: Path) -> list[SnapshotInfo]:
    """Every complete snapshot of a run, by step. Raises CheckpointError for the first unusable one."""
    scan = scan_snapshots(run_dir)
    if scan.errors:
        raise scan.errors[0]
    return scan.snapshots


@dataclass(frozen=True)
class SnapshotScan:
    snapshots: list[SnapshotInfo]  # the usable ones, by step
    errors: list[CheckpointError]  # one per snapshot left out, naming its file and why

    @property
    def skipped(self) -> list[str]:
        return [str(e) for e in self.errors]

    @property
    def notes(self) -> list[str]:
        """One line per snapshot kept with metrics left out (NaN or inf): those figures show as n/a."""
        return [
            f"step {s.step}: {', '.join(s.non_finite)} stored with NaN or inf values, shown as n/a"
            for s in self.snapshots
            if s.non_finite
        ]


def scan_snapshots(run_dir: Path) -> SnapshotScan:
    """The run's usable snapshots, and why each other one was left out (the app shows a run with bad steps)."""
    run_dir = Path(run_dir)
    infos, errors = [], []
    for path in sorted(run_dir.iterdir()) if run_dir.is_dir() else []:
        if _SNAPSHOT_RE.match(path.name):
            try:
                _refuse_link(path)
                _refuse_link(path.with_suffix(".safetensors"))
                infos.append(read_snapshot_info(path))
            except CheckpointError as exc:
                errors.append(exc)
    return SnapshotScan(sorted(infos, key=lambda s: s.step), errors)


def _refuse_link(path: Path) -> None:
    """A link could make the app read any file the server can read, never written into the run: refused, but for
    the HF cache's own links (a run downloaded from the Hub lives in `<repo>/snapshots/<commit>/`, each file a
    link to `<repo>/blobs/<etag>`: huggingface_hub file_download.py)."""
    if not path.is_symlink():
        return
    blobs = path.parent.resolve().parent.parent / "blobs"
    if path.resolve().parent != blobs:
        raise CheckpointError(path, "is a symbolic link: a snapshot is read only from files in its run folder")


def read_snapshot_info(meta_path: Path) -> SnapshotInfo:
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise CheckpointError(meta_path, "snapshot metadata must be a JSON object")
    missing = [k for k in ("step", "tokens_seen", "model") if k not in meta]
    if missing:
        raise CheckpointError(meta_path, f"snapshot metadata lacks {', '.join(missing)}")
    try:
        cfg = model_config_from_dict(meta["model"], where="model")
    except ConfigError as exc:
        raise CheckpointError(meta_path, str(exc)) from exc
    step, tokens = meta["step"], meta["tokens_seen"]
    for name, value in (("step", step), ("tokens_seen", tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(meta_path, f"{name} must be a non-negative integer, got {_short(value)}")
    if f"step_{step:06d}.json" != meta_path.name:
        raise CheckpointError(meta_path, f"step {step} does not match the file name")
    metrics = meta.get("metrics", {})
    problem = metrics_problem(metrics, cfg)
    if problem:
        raise CheckpointError(meta_path, problem)
    usable, dropped = _finite_metrics(metrics)
    return SnapshotInfo(meta_path.parent, step, tokens, cfg, usable, dropped)


def _finite_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The metrics without those holding a NaN or an infinity anywhere, and the names of those: a pair of them
    makes every figure drawn from the metric wrong (max() over a NaN returns whatever came first), so the
    metric is left out whole and its pages say n/a."""

    def finite(value: Any) -> bool:
        if isinstance(value, list):
            return all(finite(v) for v in value)
        return not isinstance(value, float) or math.isfinite(value)

    dropped = tuple(name for name, value in metrics.items() if not finite(value))
    return {k: v for k, v in metrics.items() if k not in dropped}, dropped


GRID_METRICS = ("prefix_matching", "previous_token", "copying")  # one number per head: layer x head
SCALAR_METRICS = (
    "heldout_loss",
    "train_loss",
    "icl_score",
    "icl_score_se",
    "icl_examples",
    "icl_score_prose",
    "icl_score_prose_se",
    "icl_examples_prose",
)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value: Any, length: int | None = None) -> bool:
    return isinstance(value, list) and (length is None or len(value) == length) and all(map(_is_number, value))


def metrics_problem(metrics: Any, cfg: ModelConfig) -> str | None:
    """Why a snapshot's stored metrics cannot be used with its model config, or None if they can.

    Every metric is optional (a run may not record the ICL score, say), but one that is there has the shape the
    pages index it with: per-head grids are n_layers x n_heads numbers, the loss curve n_ctx - 1 numbers.
    """
    if not isinstance(metrics, dict):
        return "metrics must be a JSON object"
    for name in SCALAR_METRICS:
        if name in metrics and metrics[name] is not None and not _is_number(metrics[name]):
            return f"metrics.{name} must be a number, got {_short(metrics[name])}"
    for name in GRID_METRICS + ("smear",):
        grid = metrics.get(name)
        if grid is None:
            continue
        if not (isinstance(grid, list) and len(grid) == cfg.n_layers and all(_numbers(r, cfg.n_heads) for r in grid)):
            return f"metrics.{name} must be {cfg.n_layers} x {cfg.n_heads} numbers (layers x heads), got {_short(grid)}"
    curve = metrics.get("loss_curve")
    if curve is not None and not _numbers(curve, cfg.n_ctx - 1):
        return f"metrics.loss_curve must be {cfg.n_ctx - 1} numbers (one per context position), got {_short(curve)}"
    pca = metrics.get("pca_losses")
    if pca is not None and not (_numbers(pca) and pca):
        return f"metrics.pca_losses must be a non-empty list of numbers, got {_short(pca)}"
    return None


def load_model(info: SnapshotInfo, device: str | torch.device = "cpu") -> AttnOnlyTransformer:
    """Load a snapshot's weights into a fresh fp32 model, checking names and shapes against its config."""
    path = info.weights_path
    if not path.exists():
        raise CheckpointError(path, "weights file is missing")
    _refuse_link(path)
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"weights file is truncated or corrupt ({exc})") from exc
    model = AttnOnlyTransformer(info.model_config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path, f"weights do not match the config: missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                path,
                f"weights do not match the config: {name} has shape {tuple(tensor.shape)}, "
                f"config expects {tuple(expected[name].shape)}",
            )
        if not torch.isfinite(tensor).all():
            raise CheckpointError(path, f"{name} contains NaN or infinite values")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.tokenizer = load_tokenizer(info.model_config.tokenizer, info.run_dir)
    return model.to(device).eval()
