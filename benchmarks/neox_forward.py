"""Speed of a forward pass with every attention pattern captured on a Pythia-sized GPT-NeoX model (issue 33 target
for pythia-14m: < 100 ms on 256 tokens), random weights, beside the CPU reference of bench.py in the same process.

Shapes from the pythia README (../shared/notes/hub-models.md §4): pythia-14m 6 layers × 128 (4 heads of 32),
MLP 512, 50,304-row embedding; pythia-70m 6 × 512 (8 heads of 64), MLP 2,048. Rotary on 25% of each head's dims,
parallel residual.

Run: .venv/bin/python benchmarks/neox_forward.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import cpu_reference_ms, timed  # noqa: E402

from icl_core.model.neox import NeoXConfig, NeoXTransformer  # noqa: E402

PYTHIA = {
    "pythia-14m": NeoXConfig(n_layers=6, d_model=128, n_heads=4, d_mlp=512, n_ctx=2048, d_vocab=50304, rotary_dim=8),
    "pythia-70m": NeoXConfig(n_layers=6, d_model=512, n_heads=8, d_mlp=2048, n_ctx=2048, d_vocab=50304, rotary_dim=16),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    reference = cpu_reference_ms()
    print(f"CPU reference (bench.cpu_reference_ms): {reference:.0f} ms")
    tokens = torch.randint(0, 50_000, (1, 256), generator=torch.Generator().manual_seed(0))
    for name, cfg in PYTHIA.items():
        torch.manual_seed(0)
        model = NeoXTransformer(cfg).eval()
        with torch.no_grad():
            model.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern"))  # warm-up
            times = timed(lambda m=model: m.run_with_cache(tokens, names=lambda n: n.endswith("hook_pattern")), 20)
        median = 1000 * statistics.median(times)
        target = "  (target < 100 ms)" if name == "pythia-14m" else ""
        ratio = median / reference
        print(f"{name}: forward with patterns, 256 tokens: median {median:.1f} ms ({ratio:.2f}x the reference){target}")


if __name__ == "__main__":
    main()
