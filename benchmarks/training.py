"""Training speed: our training step against a minimal plain-torch reference, and the 2-layer phase change
reproduced from scratch.

Run: .venv/bin/python benchmarks/training.py [--phase-change] [--threads 2]

Absolute figures differ between machines (3x between two 2-core machines), so the reference step (plain
torch, the same shapes, batch and fused attention, no hooks, no logging, no data sampling) runs in the same
process and our throughput is printed as a ratio to it (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from icl_core import data, stdlib_text  # noqa: E402
from icl_core.analysis import metrics  # noqa: E402
from icl_core.analysis.phase import best_induction_score, phase_window  # noqa: E402
from icl_core.model.config import TrainConfig, load_train_config  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, read_manifest  # noqa: E402
from icl_core.training.train import _setup, _train_step  # noqa: E402

SHIPPED = ROOT / "checkpoints"


class Reference(nn.Module):
    """The same attention-only transformer written as plainly as torch allows: the speed to match."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        m = cfg.model
        self.h, self.dh = m.n_heads, m.d_head
        self.embed = nn.Parameter(torch.randn(m.d_vocab, m.d_model) * 0.5)
        self.qkv = nn.ParameterList(
            nn.Parameter(torch.randn(m.d_model, 3 * m.n_heads * m.d_head) * 0.1) for _ in range(m.n_layers)
        )
        self.out = nn.ParameterList(
            nn.Parameter(torch.randn(m.n_heads * m.d_head, m.d_model) * 0.1) for _ in range(m.n_layers)
        )
        self.unembed = nn.Parameter(torch.randn(m.d_model, m.d_vocab) * 0.01)
        self.register_buffer("pos", torch.randn(m.n_ctx, m.d_model))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n = tokens.shape
        x = self.embed[tokens] + self.pos[:n]
        for qkv, out in zip(self.qkv, self.out, strict=True):
            q, k, v = (x @ qkv).view(b, n, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + z.transpose(1, 2).reshape(b, n, -1) @ out
        return x @ self.unembed


def _tokens_per_s(step, tokens_per_step: int, repeats: int) -> float:
    for _ in range(3):
        step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return tokens_per_step / statistics.median(times)


def throughput(cfg: TrainConfig, repeats: int = 30) -> tuple[float, float]:
    """(ours, reference) training tokens per second on cfg's model and batch."""
    torch.manual_seed(0)
    ref = Reference(cfg)
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.lr)
    batch = data.sample_batch(
        stdlib_text.corpus("train"), cfg.batch_size, cfg.model.n_ctx, torch.Generator().manual_seed(0)
    )

    def ref_step() -> None:
        logits = ref(batch)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ses = _setup(cfg, Path("/nonexistent-benchmark-run"), resume=False)
    corpus = stdlib_text.corpus("train")
    tokens_per_step = cfg.batch_size * cfg.model.n_ctx
    ours = _tokens_per_s(lambda: _train_step(ses, corpus), tokens_per_step, repeats)
    reference = _tokens_per_s(ref_step, tokens_per_step, repeats)
    return ours, reference


def reproduce_phase_change(cfg: TrainConfig, shipped_run: Path) -> dict:
    """Train cfg from scratch (no snapshots, no evaluation) through the shipped run's phase-change window:
    wall-clock to its start, steepest point and end, with the induction score reached there vs the shipped one."""
    snaps = list_snapshots(shipped_run)
    window = phase_window(snaps)
    if window is None:
        raise SystemExit(f"{shipped_run.name} has no phase change to reproduce")
    marks = {"start": window.start_step, "centre": window.center_step, "end": window.end_step}
    ses = _setup(cfg, Path("/nonexistent-benchmark-run"), resume=False)
    corpus = stdlib_text.corpus("train")
    probe, repeat_len = data.prefix_matching_probe(cfg.model.n_ctx)
    out: dict[str, dict] = {}
    start, paused = time.perf_counter(), 0.0
    for name, step in marks.items():
        while ses.step < step:
            _train_step(ses, corpus)
        t = time.perf_counter()
        ses.model.eval()
        score = best_induction_score(metrics.prefix_matching_scores(ses.model, probe, repeat_len).tolist())
        ses.model.train()
        shipped = best_induction_score(next(s for s in snaps if s.step == step).metrics.prefix_matching)
        out[name] = {
            "step": step,
            "tokens": ses.tokens,
            "wall_s": round(t - start - paused, 1),
            "induction_score": round(score, 3),
            "shipped": round(shipped, 3),
        }
        paused += time.perf_counter() - t  # the probe is not training time
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase-change", action="store_true", help="also retrain attn2 through its phase change")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for cfg_path in sorted((ROOT / "configs").glob("attn*.json")):
        cfg = load_train_config(cfg_path)
        ours, reference = throughput(cfg)
        manifest = read_manifest(SHIPPED / cfg.run_name) if (SHIPPED / cfg.run_name / "run.json").exists() else {}
        print(
            f"{cfg.run_name:14s} ours {ours:9,.0f} tokens/s · reference {reference:9,.0f} tokens/s · "
            f"ratio {ours / reference:.2f} · shipped run trained in {manifest.get('wall_clock_s', math.nan):.0f} s "
            f"({manifest.get('device', '?')}, with the snapshots' evaluation)"
        )
    if args.phase_change:
        cfg = load_train_config(ROOT / "configs" / "attn2.json")
        print("phase change from scratch:", json.dumps(reproduce_phase_change(cfg, SHIPPED / "attn2")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
