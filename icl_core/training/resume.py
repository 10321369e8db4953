"""A run's resume state: everything that makes resumed training continue exactly as if uninterrupted (weights,
optimizer moments, the data generator, the running loss window), written atomically beside its snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from icl_core.errors import CheckpointError
from icl_core.storage.snapshots import atomic_save_tensors, atomic_write_json, read_json

RESUME_WEIGHTS = "resume.safetensors"
RESUME_META = "resume.json"


def save_resume_state(
    run_dir: Path,
    model,
    optimizer,
    gen: torch.Generator,
    step: int,
    tokens: int,
    elapsed: float,
    recent: list[float] | None = None,
) -> None:
    """Weights, optimizer moments, data RNG and the running loss window at `step`, so resumed training
    (and its logged losses) match uninterrupted training."""
    tensors = {f"model.{k}": v.float() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for idx, st in opt_state["state"].items():
        for key, val in st.items():
            tensors[f"optim.{idx}.{key}"] = (
                torch.as_tensor(val, dtype=torch.float32).reshape(-1) if key == "step" else val
            )
    tensors["rng.data"] = gen.get_state()
    meta = {
        "step": step,
        "tokens_seen": tokens,
        "elapsed_s": elapsed,
        "recent_losses": list(recent or []),
        "param_groups": opt_state["param_groups"],
    }
    # The meta also rides inside the weights file: a kill between the two writes must not pair new
    # weights with an old step. resume.json is kept for people and tools that read the folder.
    atomic_save_tensors(run_dir / RESUME_WEIGHTS, tensors, metadata={"resume": json.dumps(meta)})
    atomic_write_json(run_dir / RESUME_META, meta)


def has_resume_state(run_dir: Path) -> bool:
    return (run_dir / RESUME_WEIGHTS).exists() or (run_dir / RESUME_META).exists()


def load_resume_state(run_dir: Path, model, optimizer, gen: torch.Generator) -> tuple[int, int, float, list[float]]:
    try:
        with safe_open(run_dir / RESUME_WEIGHTS, framework="pt") as f:
            embedded = (f.metadata() or {}).get("resume")
        tensors = load_file(run_dir / RESUME_WEIGHTS)
    except Exception as exc:  # safetensors raises several types for a damaged or missing file
        raise CheckpointError(run_dir / RESUME_WEIGHTS, f"resume state is unreadable ({exc})") from exc
    meta = json.loads(embedded) if embedded else read_json(run_dir / RESUME_META)
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = val.reshape(()) if name == "step" else val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    gen.set_state(tensors["rng.data"])
    recent = [float(x) for x in meta.get("recent_losses", [])]
    return int(meta["step"]), int(meta["tokens_seen"]), float(meta.get("elapsed_s", 0.0)), recent


def remove_stale_temp_files(run_dir: Path) -> None:
    # Atomic writes killed mid-way (SIGKILL skips their cleanup) leave hidden .tmp files behind.
    for path in run_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)


def truncate_log(path: Path, max_step: int) -> None:
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = []
        for ln in lines:
            try:
                if json.loads(ln)["step"] <= max_step:
                    keep.append(ln)
            except (json.JSONDecodeError, KeyError):
                break  # a line cut by a crash: drop it and the rest
        path.write_text("".join(ln + "\n" for ln in keep))
