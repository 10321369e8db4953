"""Training loop (nanoGPT-plain): AdamW, warmup + cosine LR, log-spaced snapshots, resumable, DDP-ready.

Usage:
    python -m icl_core.training.train configs/attn2.json --out-dir runs
    torchrun --standalone --nproc_per_node=2 -m icl_core.training.train configs/attn2.json --out-dir runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icl_core import data, evalset, proseset, stdlib_text
from icl_core.analysis.evaluation import EvalData, evaluate
from icl_core.errors import CheckpointError, ICLError
from icl_core.model.config import TrainConfig, load_train_config
from icl_core.model.transformer import AttnOnlyTransformer, per_token_loss
from icl_core.storage.lock import run_writer_lock
from icl_core.storage.snapshots import (
    TRAIN_LOG,
    list_snapshots,
    write_manifest,
    write_snapshot,
)
from icl_core.training.resume import (
    has_resume_state,
    load_resume_state,
    remove_stale_temp_files,
    save_resume_state,
    truncate_log,
)


def snapshot_steps(total_steps: int, n_snapshots: int, dense: tuple[int, int, int] = (0, 0, 0)) -> list[int]:
    """n_snapshots steps from 0 to total_steps, log-spaced (as in Olsson et al.), step 0 included; plus
    dense = (count, from_step, to_step) more, log-spaced between two steps (through a phase change)."""
    n = min(n_snapshots, total_steps + 1)
    k = n - 1
    while True:
        steps = sorted({0, *np.unique(np.round(np.geomspace(1, total_steps, k)).astype(int)).tolist()})
        if len(steps) >= n or k > 10 * n:
            break
        k += 1
    count, lo, hi = dense
    hi = min(hi, total_steps)  # the part of the dense range that fits in the run
    if count <= 0 or not 0 < lo < hi:
        return steps
    target = len(steps) + min(count, hi - lo + 1)
    k = count
    while True:
        extra = np.round(np.geomspace(lo, hi, k)).astype(int).tolist()
        merged = sorted(set(steps) | set(extra))
        if len(merged) >= target or k > 10 * count:
            return merged
        k += 1


def schedule_of(cfg: TrainConfig) -> list[int]:
    return snapshot_steps(
        cfg.total_steps, cfg.n_snapshots, (cfg.n_dense_snapshots, cfg.dense_from_step, cfg.dense_to_step)
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        # The shipped runs: a cosine decaying through the phase change would slow it and blur where it ends.
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class _Session:
    """Everything one training process holds between steps."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    world: int
    rank: int
    own_group: bool  # this call created the process group, so it destroys it
    model: AttnOnlyTransformer
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # data RNG: same on every rank, so every rank draws the same global batch
    step: int = 0
    tokens: int = 0
    recent: list[float] = field(default_factory=list)  # the last log_every step losses
    start: float = 0.0  # wall-clock origin, shifted back by the time spent before a resume

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def save_resume(self) -> None:
        save_resume_state(
            self.run_dir,
            self.model,
            self.optimizer,
            self.gen,
            self.step,
            self.tokens,
            time.time() - self.start,
            self.recent,
        )


def _setup(cfg: TrainConfig, run_dir: Path, resume: bool) -> _Session:
    """Process group (under torchrun), model, optimizer and data RNG, restored from a resume state if any."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    device = pick_device(cfg.device)
    own_group = False
    if world > 1:
        import torch.distributed as dist

        if cfg.batch_size % world:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            own_group = True

    torch.manual_seed(cfg.seed)
    model = AttnOnlyTransformer(cfg.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, tokens, elapsed_before = 0, 0, 0.0
    recent: list[float] = []
    if resume and has_resume_state(run_dir):
        step, tokens, elapsed_before, recent = load_resume_state(run_dir, model, optimizer, gen)
    elif any(run_dir.glob("step_*.json")):
        # Every rank checks, so no rank is left waiting in a collective for one that gave up.
        raise CheckpointError(run_dir, "run folder already has snapshots: resume it or choose a new run name")

    ddp_model: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Session(
        cfg,
        run_dir,
        device,
        world,
        rank,
        own_group,
        model,
        ddp_model,
        optimizer,
        gen,
        step,
        tokens,
        recent,
        start=time.time() - elapsed_before,
    )


def _write_snapshot(ses: _Session, ev: EvalData, snapshot_dtype: torch.dtype) -> None:
    # Resume state first: a kill while the snapshot is written then resumes at this step and
    # writes the snapshot again, instead of finding snapshots with no state to continue from.
    ses.save_resume()
    snap_metrics = evaluate(ses.model, ev)
    snap_metrics["train_loss"] = float(np.mean(ses.recent)) if ses.recent else snap_metrics["heldout_loss"]
    write_snapshot(ses.run_dir, ses.model, ses.step, ses.tokens, snap_metrics, dtype=snapshot_dtype)


def _train_step(ses: _Session, train_data: np.ndarray) -> None:
    cfg = ses.cfg
    batch = data.sample_batch(train_data, cfg.batch_size, cfg.model.n_ctx, ses.gen)
    local = batch[ses.rank :: ses.world].to(ses.device)  # every rank draws the same global batch, takes its share
    for group in ses.optimizer.param_groups:
        group["lr"] = lr_at(ses.step, cfg)
    loss = per_token_loss(ses.ddp_model(local), local).mean()
    ses.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(ses.model.parameters(), cfg.grad_clip)
    ses.optimizer.step()
    ses.step += 1
    ses.tokens += batch.numel()
    loss_value = loss.detach()
    if ses.world > 1:
        import torch.distributed as dist

        dist.all_reduce(loss_value)
        loss_value /= ses.world
    ses.recent = (ses.recent + [float(loss_value)])[-cfg.log_every :]


def _log_step(ses: _Session, log_path: Path, n_snapshots: int, progress: ProgressFn | None) -> None:
    cfg = ses.cfg
    elapsed = time.time() - ses.start
    entry = {
        "step": ses.step,
        "tokens": ses.tokens,
        "loss": float(np.mean(ses.recent)),
        "lr": lr_at(ses.step - 1, cfg),
        "elapsed_s": round(elapsed, 2),
    }
    with log_path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    if progress is not None:
        rate = ses.step / max(elapsed, 1e-9)
        progress(
            {
                **entry,
                "total_steps": cfg.total_steps,
                "eta_s": (cfg.total_steps - ses.step) / max(rate, 1e-9),
                "snapshots": n_snapshots,
            }
        )


def _teardown(ses: _Session) -> None:
    if ses.world == 1:
        return
    import gc

    import torch.distributed as dist

    dist.barrier()
    # DDP's reducer holds the process group and gloo work objects; left to interpreter shutdown,
    # gloo's threads can outlive Python and abort the process (SIGABRT) after a good run.
    ses.ddp_model = ses.model
    gc.collect()
    if ses.own_group:
        dist.destroy_process_group()


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    command: str | None = None,
) -> str:
    """Train (or resume) a run into run_dir. Returns 'finished' or 'cancelled'."""
    cfg.validate()
    run_dir = Path(run_dir)
    # Only rank 0 writes, so only it holds the run folder's writer lock.
    lock = run_writer_lock(run_dir) if int(os.environ.get("RANK", 0)) == 0 else contextlib.nullcontext()
    with lock:
        return _train(cfg, run_dir, resume, progress, should_stop, command)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
    command: str | None,
) -> str:
    ses = _setup(cfg, run_dir, resume)
    schedule = schedule_of(cfg)
    done = {s.step for s in list_snapshots(run_dir)} if run_dir.exists() else set()
    train_data = stdlib_text.corpus("train")
    ev = EvalData.for_config(cfg) if ses.is_main else None
    log_path = run_dir / TRAIN_LOG
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    if ses.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
        truncate_log(log_path, ses.step)
        write_manifest(
            run_dir, cfg, _provenance(command, ses.device, ses.world, "running", time.time() - ses.start, schedule)
        )
    snapshot_dtype = torch.float16 if cfg.snapshot_dtype == "float16" else torch.float32
    status = "finished"
    ses.model.train()

    while True:
        if ses.is_main and ses.step in schedule and ses.step not in done:
            assert ev is not None  # the main process builds it
            _write_snapshot(ses, ev, snapshot_dtype)
            done.add(ses.step)
        if ses.step >= cfg.total_steps:
            break
        if _stop_requested(should_stop, ses.world, ses.device):
            status = "cancelled"
            if ses.is_main:
                ses.save_resume()
            break
        _train_step(ses, train_data)
        if ses.is_main and (ses.step % cfg.log_every == 0 or ses.step == cfg.total_steps):
            _log_step(ses, log_path, len(done), progress)
        if ses.is_main and ses.step % cfg.resume_every == 0 and ses.step not in schedule:
            ses.save_resume()

    if ses.is_main:
        write_manifest(
            run_dir, cfg, _provenance(command, ses.device, ses.world, status, time.time() - ses.start, schedule)
        )
    _teardown(ses)
    return status


def _stop_requested(should_stop: Callable[[], bool] | None, world: int, device: torch.device) -> bool:
    """Rank 0's answer, shared with every rank: ranks that stopped at different steps would deadlock."""
    if should_stop is None:
        return False
    if world == 1:
        return bool(should_stop())
    import torch.distributed as dist

    flag = torch.zeros(1, dtype=torch.int32, device=device)
    if dist.get_rank() == 0:
        flag += int(bool(should_stop()))
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _provenance(
    command: str, device: torch.device, world: int, status: str, wall: float, schedule: list[int]
) -> dict[str, Any]:
    return {
        "status": status,
        "command": command,
        "wall_clock_s": round(wall, 1),
        "device": f"{device.type} x{world}",
        "snapshot_steps": schedule,
        "torch": torch.__version__,
        "python": platform.python_version(),
        # What the stored metrics were computed on, and what the model was trained on: the app compares both.
        "eval_set_sha256": evalset.load().sha256,
        "prose_set_sha256": proseset.load().sha256,
        "train_corpus_sha256": stdlib_text.corpus_sha256("train"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train an attention-only transformer and write log-spaced snapshots.")
    parser.add_argument("config", help="JSON train config (see configs/)")
    parser.add_argument("--out-dir", default="runs", help="parent folder; the run goes to OUT_DIR/<run_name>")
    parser.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config)
    except ICLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run_dir = Path(args.out_dir) / cfg.run_name

    def report(p: dict[str, Any]) -> None:
        print(
            f"step {p['step']}/{p['total_steps']} loss {p['loss']:.3f} tokens {p['tokens']} eta {p['eta_s']:.0f}s",
            flush=True,
        )

    command = " ".join(
        ["python -m icl_core.training.train", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))]
    )
    try:
        status = train(cfg, run_dir, resume=not args.no_resume, progress=report, command=command)
    except ICLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"{status}: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
