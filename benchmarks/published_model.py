"""Speed and memory on a model of the published runs' size: Neel Nanda's attention-only 2-layer model
(512 wide, 8 heads of 64, context 1024, 48,262-token vocabulary, LayerNorm and biases), random weights.

Measures, on this machine's CPU threads:
- a forward pass with every attention pattern captured, on 256 tokens (target < 300 ms), beside a plain-torch
  reference forward of the same shapes in the same process (fused attention, no hooks), as a ratio;
- the metrics stored for one checkpoint (analysis.evaluation.evaluate with evaluate_run's example counts; target
  < 30 s), and the one-off tokenizing of the held-out text that every evaluation process does first;
- the model cache: three such models loaded under a 500 MB budget (each holds ~200 MB of weights).

No download: the tokenizer is a BPE tokenizer trained here on the held-out stdlib text (its vocabulary is smaller
than the model's, which changes which tokens appear but not the cost, set by the model's 48k-wide unembedding).

Run: .venv/bin/python benchmarks/published_model.py [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import timed  # noqa: E402

from icl_core import (
    data,  # noqa: E402
    stdlib_text,
)
from icl_core.analysis import metrics  # noqa: E402
from icl_core.analysis.evaluation import (  # noqa: E402
    DEFAULT_EVAL_EXAMPLES,
    DEFAULT_ICL_EXAMPLES,
    EvalData,
    evaluate,
    example_counts,
)
from icl_core.analysis.metrics import attention_patterns  # noqa: E402
from icl_core.model.config import ModelConfig, TrainConfig  # noqa: E402
from icl_core.model.tokenizer import BPETokenizer  # noqa: E402
from icl_core.model.transformer import AttnOnlyTransformer  # noqa: E402
from icl_core.storage.model_cache import ModelCache  # noqa: E402

NEEL_2L = ModelConfig(
    n_layers=2, n_heads=8, d_model=512, d_head=64, n_ctx=1024, d_vocab=48262, positional="learned",
    normalization="LN", biases=True, tokenizer="bench/stdlib-bpe",
)  # fmt: skip


def random_model(seed: int) -> AttnOnlyTransformer:
    torch.manual_seed(seed)
    model = AttnOnlyTransformer(NEEL_2L).eval()
    with torch.no_grad():
        model.W_U.normal_(0, 0.02)  # a trained model's logits are not ~0: keep softmax work realistic
    return model


def reference_forward(model: AttnOnlyTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The same forward in plain torch: no hook points, fused attention, LayerNorm and biases as the model's."""
    x = model.W_E[tokens] + model.W_pos[: tokens.shape[1]]
    for b in model.blocks:
        h = F.layer_norm(x, x.shape[-1:], b.ln1.w, b.ln1.b, eps=1e-5)
        q = torch.einsum("bpd,hde->bhpe", h, b.W_Q) + b.b_Q[None, :, None]
        k = torch.einsum("bpd,hde->bhpe", h, b.W_K) + b.b_K[None, :, None]
        v = torch.einsum("bpd,hde->bhpe", h, b.W_V) + b.b_V[None, :, None]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + torch.einsum("bhpe,hed->bpd", z, b.W_O) + b.b_O
    x = F.layer_norm(x, x.shape[-1:], model.ln_final.w, model.ln_final.b, eps=1e-5)
    return x @ model.W_U + model.b_U


def train_tokenizer(folder: Path, vocab: int) -> BPETokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # as GPT-NeoX's tokenizer.json
    tok.decoder = decoders.ByteLevel()
    text = stdlib_text.corpus("heldout").tobytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<unk>"], show_progress=False)
    tok.train_from_iterator(lines, trainer)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return BPETokenizer(path, NEEL_2L.tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model = random_model(0)
    mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    print(f"model: 2 layers x 8 heads, d_model 512, vocab 48,262, context 1024, LN + biases: {mb:.0f} MB of weights")
    tokens = torch.randint(0, NEEL_2L.d_vocab, (1, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attention_patterns(model, tokens)
        reference_forward(model, tokens)
        ours = timed(lambda: attention_patterns(model, tokens), 10)
        ref = timed(lambda: reference_forward(model, tokens), 10)
    ours_ms, ref_ms = 1000 * statistics.median(ours), 1000 * statistics.median(ref)
    print(
        f"forward + every attention pattern, 256 tokens: median {ours_ms:.0f} ms (target < 300 ms); "
        f"plain-torch forward without capture {ref_ms:.0f} ms; ratio {ours_ms / ref_ms:.2f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        tokenizer = train_tokenizer(Path(tmp), vocab=8000)
        took = time.perf_counter() - t
        print(f"(a {tokenizer.vocab_size:,}-token BPE tokenizer trained on the held-out text: {took:.0f} s)")
        model.tokenizer = tokenizer
        t = time.perf_counter()
        data.tokenized_heldout(tokenizer)
        tokenize_s = time.perf_counter() - t
        n_tokens = len(data.tokenized_heldout(tokenizer))
        print(f"tokenizing the held-out text once per evaluation process: {tokenize_s:.1f} s ({n_tokens:,} tokens)")
        n_eval, n_icl = example_counts(NEEL_2L, DEFAULT_EVAL_EXAMPLES, DEFAULT_ICL_EXAMPLES)
        cfg = TrainConfig(run_name="bench", model=NEEL_2L, eval_examples=n_eval, icl_examples=n_icl)
        t = time.perf_counter()
        ev = EvalData.for_config(cfg, tokenizer)
        setup_s = time.perf_counter() - t
        t = time.perf_counter()
        out = evaluate(model, ev)
        eval_s = time.perf_counter() - t
        # The loss-curve part against plain torch: the same examples, forward and log-softmax, 2 at a time.
        with torch.no_grad():
            t = time.perf_counter()
            metrics.per_token_losses(model, ev.heldout)
            ours_loss_s = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(0, len(ev.heldout), 2):
                torch.log_softmax(reference_forward(model, ev.heldout[i : i + 2]), dim=-1)
            ref_loss_s = time.perf_counter() - t
    print(
        f"metrics for one checkpoint ({cfg.eval_examples} x {NEEL_2L.n_ctx}-token examples for the loss curve "
        f"and PCA, {cfg.icl_examples} for the ICL score, probes): {eval_s:.1f} s (target < 30 s); "
        f"evaluation data built once per run: {setup_s:.1f} s; ICL score {out['icl_score']:+.3f} "
        f"± {out['icl_score_se']:.3f} (random weights: ~0)"
    )
    print(
        f"  of which the loss curve's per-token losses: {ours_loss_s:.1f} s, against {ref_loss_s:.1f} s for a "
        f"plain-torch forward and log-softmax of the same examples: ratio {ours_loss_s / ref_loss_s:.2f}"
    )

    cache = ModelCache(max_bytes=500_000_000)
    for seed in range(3):
        cache.get(seed, lambda s=seed: random_model(s))
    print(
        f"model cache, 3 models of {mb:.0f} MB under a 500 MB budget: {len(cache)} kept, "
        f"{cache.nbytes / 1e6:.0f} MB held (the least recently used are evicted)"
    )
    assert math.isfinite(out["heldout_loss"])


if __name__ == "__main__":
    main()
