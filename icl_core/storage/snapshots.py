"""On-disk layout of runs and snapshots, with atomic writes and strict loading.

    <run>/run.json                      manifest: format, run name, train config, how it was made
    <run>/step_000123.safetensors       weights (fp32 while training, fp16 when shipped)
    <run>/step_000123.json              model config + step, tokens seen, metrics

A snapshot exists once its JSON is on disk: the weights are written (atomically) first, so a crash
never leaves a visible snapshot without complete weights.
"""

from __future__ import annotations

import json
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
from icl_core.model.family import Model, build_model
from icl_core.model.tokenizer import load_tokenizer
from icl_core.storage.snapshot_metrics import MetricsError, SnapshotMetrics, parse_metrics, short_repr

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


def atomic_write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """`compact` for machine-read data (the stored analyses): no indentation halves the bytes the repo carries."""
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=1)
    atomic_write_bytes(path, text.encode())


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
    metrics: SnapshotMetrics = field(default_factory=SnapshotMetrics)

    @property
    def weights_path(self) -> Path:
        return self.run_dir / f"{snapshot_stem(self.step)}.safetensors"

    @property
    def meta_path(self) -> Path:
        return self.run_dir / f"{snapshot_stem(self.step)}.json"


def write_snapshot(
    run_dir: Path,
    model: Model,
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
    return SnapshotInfo(run_dir, step, tokens_seen, model.cfg, parse_metrics(metrics, model.cfg))


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
            f"step {s.step}: {', '.join(s.metrics.non_finite)} stored with NaN or inf values, shown as n/a"
            for s in self.snapshots
            if s.metrics.non_finite
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
            raise CheckpointError(meta_path, f"{name} must be a non-negative integer, got {short_repr(value)}")
    if f"step_{step:06d}.json" != meta_path.name:
        raise CheckpointError(meta_path, f"step {step} does not match the file name")
    try:
        metrics = parse_metrics(meta.get("metrics", {}), cfg)
    except MetricsError as exc:
        raise CheckpointError(meta_path, str(exc)) from exc
    return SnapshotInfo(meta_path.parent, step, tokens, cfg, metrics)


def load_model(info: SnapshotInfo, device: str | torch.device = "cpu") -> Model:
    """Load a snapshot's weights into a fresh fp32 model, checking names and shapes against its config."""
    path = info.weights_path
    if not path.exists():
        raise CheckpointError(path, "weights file is missing")
    _refuse_link(path)
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"weights file is truncated or corrupt ({exc})") from exc
    model = build_model(info.model_config)
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
