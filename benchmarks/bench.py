"""Speed figures for the README: forward with attention capture, PCA over shipped snapshots, training.

Run: .venv/bin/python benchmarks/bench.py   (set OMP_NUM_THREADS/taskset to emulate a 2-core CPU)
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from icl_core import (
    data,  # noqa: E402
    stdlib_text,
)
from icl_core.analysis.metrics import attention_patterns  # noqa: E402
from icl_core.analysis.pca import joint_pca  # noqa: E402
from icl_core.model.transformer import AttnOnlyTransformer, per_token_loss  # noqa: E402
from icl_core.storage.runs import discover_runs  # noqa: E402
from icl_core.storage.snapshots import list_snapshots, load_model, read_run_config  # noqa: E402

logging.getLogger("streamlit").setLevel(logging.ERROR)  # ui.analyses. st.cache_* warn that no app is running
from ui.server import APP_TORCH_THREADS  # noqa: E402


def cpu_reference_ms(repeats: int = 5) -> float:
    """Median time of a fixed pure-Python loop: how fast this machine is right now, printed beside the figures.

    The same benchmark ran 3x slower on another 2-core machine, and this one's speed drifts by up to ~2x from
    hour to hour; a figure means something only next to a reference measured in the same run.
    """

    def loop() -> int:
        total = 0
        for i in range(3_000_000):
            total += i * i
        return total

    return 1000 * statistics.median(timed(loop, repeats))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU reference (pure-Python loop, bench.cpu_reference_ms): {cpu_reference_ms():.0f} ms")
    shipped = [r for r in discover_runs() if r.source == "shipped"]
    two_layer = next(
        r
        for r in shipped
        if read_run_config(r.path).model.n_layers == 2 and not read_run_config(r.path).model.smeared_keys
    )
    model = load_model(list_snapshots(two_layer.path)[-1])
    tokens = data.heldout_examples(1, 512)
    threads = torch.get_num_threads()
    torch.set_num_threads(APP_TORCH_THREADS)  # as the app server runs its forwards
    with torch.no_grad():
        attention_patterns(model, tokens)  # warm-up
        times = timed(lambda: attention_patterns(model, tokens), 20)
    torch.set_num_threads(threads)
    print(
        f"forward + all attention patterns, 512 tokens, {two_layer.name}, {APP_TORCH_THREADS} thread (the app's): "
        f"median {1000 * statistics.median(times):.1f} ms"
    )

    def pca_end_to_end():
        vectors = {
            r.name: [(s.step, np.asarray(s.metrics.pca_losses)) for s in list_snapshots(r.path)] for r in shipped
        }
        return joint_pca(vectors)

    times = timed(pca_end_to_end, 5)
    n = sum(len(list_snapshots(r.path)) for r in shipped)
    print(
        f"per-token-loss PCA over {n} snapshots of {len(shipped)} runs (read + fit): "
        f"median {1000 * statistics.median(times):.0f} ms"
    )

    cfg = read_run_config(two_layer.path)
    torch.manual_seed(0)
    train_model = AttnOnlyTransformer(cfg.model)
    opt = torch.optim.AdamW(train_model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    corpus = stdlib_text.corpus("train")

    def step():
        batch = data.sample_batch(corpus, cfg.batch_size, cfg.model.n_ctx, gen)
        loss = per_token_loss(train_model(batch), batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = timed(step, 10)
    tokens_per_step = cfg.batch_size * cfg.model.n_ctx
    print(f"training throughput ({cfg.run_name} config): {tokens_per_step / statistics.median(times):,.0f} tokens/s")


if __name__ == "__main__":
    main()
