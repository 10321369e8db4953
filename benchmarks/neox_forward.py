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

from icl_core.model.neox import NeoXTransformer, config_from_hf  # noqa: E402

# pythia-14m's and -70m's config.json keys that set the shape (EleutherAI/pythia README's table; the rest default).
_SHAPE = {"max_position_embeddings": 2048, "vocab_size": 50304, "num_hidden_layers": 6}
PYTHIA = {
    "pythia-14m": config_from_hf(
        {**_SHAPE, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}, "EleutherAI/pythia-14m"
    ),
    "pythia-70m": config_from_hf(
        {**_SHAPE, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048}, "EleutherAI/pythia-70m"
    ),
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
