"""What an on-demand analysis will cost, stated before a visitor starts it (a button says "about N s").

Each estimate counts the work of the naive method, one full forward pass per ablated head (plus the clean one)
at the lengths the analysis uses, in floating-point operations, and divides it by a rate fitted per analysis:
the analyses take shortcuts (a head's removal propagated linearly instead of a second pass, sequences cut after
the last position they need), so each does a steady fraction of that work, and the fitted "rate" folds it in.
benchmarks/analysis_cost.py fits the rates on the shipped 2-layer run and prints every estimate beside its
measurement for the 1-, 2- and 3-layer runs and a wider model (within 2x there; README, "On-demand analyses").
Timings differ between machines (up to 3x) and with what else the server runs: the figure is a rough guide.
"""

from __future__ import annotations

from icl_core.model.config import ICL_LATE_TOKEN, ModelConfig

# Naive-method FLOPs per second each analysis reaches on two cores: fitted by benchmarks/analysis_cost.py on the
# shipped attn2 run (a machine whose CPU reference was 126 ms).
ABLATION_TABLE_RATE = 6.2e10
PHASE_ATTRIBUTION_RATE = 1.3e11
OVER_TRAINING_RATE = 2.0e11
CIRCUITS_RATE = 2.5e9  # the OV circuits' d_vocab x d_vocab products, where they matter (a large vocabulary)
LLC_RATE = 4.2e10  # SGLD's forward-and-backward FLOPs (3x a forward) per second: benchmarks/llc_cost.py
# Per snapshot loaded from disk and prepared, whatever its size (measured by the same script).
SNAPSHOT_OVERHEAD_S = 0.035

# The example counts the analyses use (icl_core.analysis.attribution's defaults).
ABLATION_TABLE_EXAMPLES, ABLATION_TABLE_REPEATS, REPEAT_LEN = 128, 16, 100
PHASE_ATTRIBUTION_EXAMPLES, OVER_TRAINING_EXAMPLES = 128, 64


def forward_flops(model: ModelConfig, length: int, unembedded: int | None = None) -> float:
    """One example's forward pass over `length` tokens, `unembedded` of them (default all) through W_U."""
    # The Q, K, V and O projections and, in a model with MLPs, its two MLP matrices (2 FLOPs a multiply-add).
    per_token = model.n_layers * (8 * model.d_model**2 + 4 * model.d_model * model.d_mlp)
    attention = model.n_layers * 4 * model.d_model * length // 2  # scores and mixing, causal: half the square
    unembed = 2 * model.d_model * model.d_vocab * (length if unembedded is None else unembedded)
    return float(length * (per_token + attention) + unembed)


def _passes(model: ModelConfig) -> int:
    return 1 + model.n_layers * model.n_heads  # clean, then each head ablated alone


def ablation_table_seconds(model: ModelConfig) -> float:
    """Every head ablated alone at one snapshot: ICL windows on held-out text, second copies of repeated tokens."""
    icl_len = min(model.n_ctx, ICL_LATE_TOKEN + 32)
    flops = ABLATION_TABLE_EXAMPLES * forward_flops(model, icl_len) + ABLATION_TABLE_REPEATS * forward_flops(
        model, min(model.n_ctx, 2 * REPEAT_LEN + 1)
    )
    return _passes(model) * flops / ABLATION_TABLE_RATE + SNAPSHOT_OVERHEAD_S


def phase_attribution_seconds(model: ModelConfig) -> float:
    """The attribution of the phase change: every head ablated at the window's end, on the stored examples."""
    flops = PHASE_ATTRIBUTION_EXAMPLES * forward_flops(model, model.n_ctx)
    return _passes(model) * flops / PHASE_ATTRIBUTION_RATE + 2 * SNAPSHOT_OVERHEAD_S


def attribution_over_training_seconds(model: ModelConfig, n_snapshots: int) -> float:
    flops = OVER_TRAINING_EXAMPLES * forward_flops(model, model.n_ctx)
    return n_snapshots * (_passes(model) * flops / OVER_TRAINING_RATE + SNAPSHOT_OVERHEAD_S)


def circuits_over_training_seconds(model: ModelConfig, n_snapshots: int) -> float:
    """Composition scores and copying scores from the weights of every snapshot: the vocabulary-sized OV
    circuits (d_vocab x d_vocab per head) dominate for a large vocabulary, the fixed costs for ours."""
    heads = model.n_layers * model.n_heads
    flops = heads * (2 * model.d_vocab**2 * model.d_head + 4 * model.d_vocab * model.d_model * model.d_head)
    return n_snapshots * (flops / CIRCUITS_RATE + SNAPSHOT_OVERHEAD_S)


def llc_seconds(
    model: ModelConfig, n_snapshots: int, n_chains: int, n_steps: int, batch_size: int, n_heads: int = 0
) -> float:
    """The LLC at every snapshot (icl_core.analysis.llc): each chain's steps are a forward and a backward pass
    over a batch, plus one forward per step for the loss at the snapshot's weights. With n_heads, each head's
    refined LLC: the same work once per head (the restriction saves no compute)."""
    batch = batch_size * forward_flops(model, model.n_ctx)
    per_estimate = (n_chains * 3 + 1) * n_steps * batch / LLC_RATE
    return n_snapshots * (max(n_heads, 1) * per_estimate + SNAPSHOT_OVERHEAD_S)


def say_seconds(seconds: float) -> str:
    """'about 3 s', 'about 4 min': how a button states a cost."""
    if seconds < 1:
        return "under a second"
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"
