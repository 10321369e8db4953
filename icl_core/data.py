"""What models see: training batches, the held-out examples and probes in a model's tokens.

The training text itself (the standard library's source, split by file) is icl_core.stdlib_text's.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from icl_core import evalset, proseset
from icl_core.model.config import ICL_LATE_TOKEN
from icl_core.model.tokenizer import BOS, BYTES, Tokenizer
from icl_core.stdlib_text import corpus, corpus_sha256


def sample_batch(
    data: np.ndarray, batch_size: int, n_ctx: int, generator: torch.Generator, bos: int = BOS
) -> torch.Tensor:
    """Random windows of n_ctx - 1 tokens (bytes, or another tokenizer's ids), each with `bos` prepended:
    shape (batch, n_ctx)."""
    starts = torch.randint(0, len(data) - n_ctx, (batch_size,), generator=generator).numpy()
    windows = np.stack([data[s : s + n_ctx - 1] for s in starts]).astype(np.int64)
    batch = torch.from_numpy(windows)
    return torch.cat([torch.full((batch_size, 1), bos, dtype=torch.long), batch], dim=1)


DEFAULT_HELDOUT_SEED = 1234  # the standard held-out batch: the shipped set's first rows, in order


def heldout_examples(
    n_examples: int, n_ctx: int = 512, seed: int = DEFAULT_HELDOUT_SEED, tokenizer: Tokenizer = BYTES
) -> torch.Tensor:
    """Fixed held-out examples (start token + n_ctx - 1 tokens): the same for every model, snapshot and machine.

    Byte-level models read the shipped evaluation set (icl_core/evalset.py): the default seed takes its first
    n_examples rows, other seeds a seeded choice of rows. Only requests the set cannot serve (longer
    contexts, more rows) sample this machine's stdlib held-out split instead. A model with another tokenizer
    reads that split in its own tokens (tokenizer_examples).
    """
    if tokenizer != BYTES:
        return tokenizer_examples(tokenizer, n_examples, n_ctx, seed)
    return _byte_heldout(n_examples, n_ctx, seed)


def heldout_draw(n_examples: int, n_ctx: int, tokenizer: Tokenizer = BYTES) -> str:
    """Which draw heldout_examples makes for a request: two requests with the same draw, context and tokenizer
    agree on their common first rows (heldout_examples(n)[:k] == heldout_examples(k)), so what is measured
    on them (the PCA's loss vectors) can be cut to a common count and compared."""
    return "evaluation set rows" if tokenizer == BYTES and _evalset_serves(n_examples, n_ctx) else "sampled windows"


def _evalset_serves(n_examples: int, n_ctx: int) -> bool:
    n_rows, width = evalset.load().examples.shape
    return n_ctx - 1 <= width and n_examples <= n_rows


@functools.lru_cache(maxsize=8)
def _byte_heldout(n_examples: int, n_ctx: int, seed: int) -> torch.Tensor:
    ev = evalset.load()
    n_rows = ev.examples.shape[0]
    if not _evalset_serves(n_examples, n_ctx):
        gen = torch.Generator().manual_seed(seed)
        return sample_batch(corpus("heldout"), n_examples, n_ctx, gen)
    if seed == DEFAULT_HELDOUT_SEED:
        rows = np.arange(n_examples)
    else:
        rows = np.sort(np.random.default_rng(seed).permutation(n_rows)[:n_examples])
    body = torch.from_numpy(ev.examples[rows, : n_ctx - 1].astype(np.int64))
    return torch.cat([torch.full((n_examples, 1), BOS, dtype=torch.long), body], dim=1)


@functools.lru_cache(maxsize=2)
def prose_examples(n_ctx: int = 512) -> torch.Tensor | None:
    """Every window of the shipped prose set (icl_core/proseset.py), start token first, in bytes; None if the
    context is longer than its windows."""
    ps = proseset.load()
    if n_ctx - 1 > ps.examples.shape[1]:
        return None
    body = torch.from_numpy(ps.examples[:, : n_ctx - 1].astype(np.int64))
    return torch.cat([torch.full((len(body), 1), BOS, dtype=torch.long), body], dim=1)


MIN_PROSE_WINDOWS = 16  # fewer windows than this in a tokenizer's tokens: no prose score (its s.e. would swamp it)
# What an import's cost estimate assumes before the tokenizer is fetched: an 8,000-token BPE gives 77, GPT-NeoX's
# would give ~50 (README, "Prose in a BPE model's own tokens").
TYPICAL_BPE_PROSE_WINDOWS = 80


def prose_icl_examples(tokenizer: Tokenizer = BYTES) -> torch.Tensor | None:
    """The prose set's examples for the ICL score (ICL_LATE_TOKEN + 2 tokens each), in the model's tokens: the
    2,048 byte windows; or, for another tokenizer, the windows prose_token_examples cuts (far fewer: a BPE token is
    ~4 bytes). None when the set cannot serve that tokenizer."""
    n_ctx = ICL_LATE_TOKEN + 2
    return prose_examples(n_ctx) if tokenizer == BYTES else prose_token_examples(tokenizer, n_ctx)


@functools.lru_cache(maxsize=4)
def prose_token_examples(tokenizer: Tokenizer, n_ctx: int) -> torch.Tensor | None:
    """The prose set in another tokenizer's tokens: each of its stretches (proseset.stretches) tokenized and cut
    into windows of n_ctx - 1 tokens that do not overlap (overlapping ones would share examples and understate the
    s.e.), start token first; None when fewer than MIN_PROSE_WINDOWS fit."""
    windows = []
    for stretch in proseset.stretches(proseset.load()):
        ids = tokenizer.encode(stretch.decode("utf-8", errors="replace")).tokens[1:]  # without the start token
        windows += [ids[i : i + n_ctx - 1] for i in range(0, len(ids) - n_ctx + 2, n_ctx - 1)]
    if len(windows) < MIN_PROSE_WINDOWS:
        return None
    body = torch.stack(windows).long()
    return torch.cat([torch.full((len(body), 1), tokenizer.bos, dtype=torch.long), body], dim=1)


def probe_tokens(tokenizer: Tokenizer = BYTES) -> list[int]:
    """Tokens for random-repeat probes: the middle of the tokenizer's frequency ranking.

    Olsson et al. exclude the most and least common tokens. For bytes this is the shipped pool (evalset.build
    drew it from the training text's byte ranks); for another tokenizer, tokenizer_probe_pool.
    """
    if tokenizer != BYTES:
        return tokenizer_probe_pool(tokenizer)
    return evalset.load().probe_pool.tolist()


@functools.lru_cache(maxsize=2)
def repeated_random_tokens(
    n_sequences: int = 10,
    seq_len: int = 25,
    n_repeats: int = 4,
    seed: int = 0,
    tokenizer: Tokenizer = BYTES,
) -> torch.Tensor:
    """Random token sequences repeated n_repeats times with the start token prepended: (n, 1 + seq_len * n_repeats).

    Tokens come from the tokenizer's probe pool (probe_tokens)."""
    pool_t = torch.tensor(probe_tokens(tokenizer))
    bos = tokenizer.bos
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(pool_t), (n_sequences, seq_len), generator=gen)
    seqs = pool_t[idx].repeat(1, n_repeats)
    return torch.cat([torch.full((n_sequences, 1), bos, dtype=torch.long), seqs], dim=1)


# The probe recipes: every caller that measures "the same probe" draws it here, with these seeds.
REPEATED_ICL_SEED = 11  # the ICL score's third evaluation set: random tokens repeated (repeated_icl_examples)
REPEATED_ICL_EXAMPLES = 256
PROBE_SEQ_LEN = 25  # Olsson et al.'s prefix-matching probe: 25 random tokens ...
PROBE_REPEATS = 4  # ... repeated 4 times after a start token
REPEAT_TWICE_SEED = 7  # random tokens then the same again: the ablation probes (page and table)
MEAN_REFERENCE_SEED = 77  # held-out batch defining mean ablation (not a batch anything is measured on)
LIVE_HELDOUT_SEED = 2024  # small held-out batch of the live ablation page


def repeated_icl_examples(n_ctx: int, tokenizer: Tokenizer = BYTES) -> torch.Tensor:
    """The ICL score's evaluation set that no training data can hold: a start token, then 251 random tokens from
    the probe pool twice, cut to n_ctx. Token 50 falls in the first copy, where nothing in the context predicts it;
    token 500 in the second, where the same token followed the same prefix 251 tokens earlier. So loss(500) -
    loss(50) here is in-context learning by copying alone, and a model cannot have memorised it (a trained
    model's text scores can be, where its training data held the held-out text)."""
    seq_len = ICL_LATE_TOKEN // 2 + 1
    return repeated_random_tokens(REPEATED_ICL_EXAMPLES, seq_len, 2, REPEATED_ICL_SEED, tokenizer)[:, :n_ctx]


def prefix_matching_probe_shape(n_ctx: int) -> tuple[int, int]:
    """(sequence length, repeats) of the prefix-matching probe for a context of n_ctx tokens.

    The paper's probe (25 tokens x 4) needs 101 positions; shorter contexts get a shorter probe, down to
    1 token repeated twice after the start token (n_ctx 3).
    """
    if n_ctx < 3:
        raise ValueError(f"a context of {n_ctx} tokens is too short for the prefix-matching probe (3 at least)")
    seq_len = min(PROBE_SEQ_LEN, (n_ctx - 1) // 2)
    return seq_len, min(PROBE_REPEATS, (n_ctx - 1) // seq_len)


def prefix_matching_probe(n_ctx: int, tokenizer: Tokenizer = BYTES) -> tuple[torch.Tensor, int]:
    """The prefix-matching probe and the length of the sequence it repeats."""
    seq_len, n_repeats = prefix_matching_probe_shape(n_ctx)
    return repeated_random_tokens(seq_len=seq_len, n_repeats=n_repeats, tokenizer=tokenizer), seq_len


# -- held-out data for models with another tokenizer (TransformerLens-format runs from the Hub) -------------------


@functools.lru_cache(maxsize=2)
def tokenized_heldout(tokenizer: Tokenizer) -> np.ndarray:
    """The stdlib held-out split (Python source, on every machine) in that tokenizer's tokens, files concatenated."""
    text = corpus("heldout").tobytes().decode("utf-8", errors="replace")
    ids = tokenizer.encode(text).tokens[1:]  # without the start token encode() prepends
    return ids.numpy().astype(np.int64)


@functools.lru_cache(maxsize=8)
def tokenizer_examples(
    tokenizer: Tokenizer, n_examples: int, n_ctx: int, seed: int = DEFAULT_HELDOUT_SEED
) -> torch.Tensor:
    """Fixed held-out windows of n_ctx - 1 tokens in that tokenizer, its start token first."""
    ids = tokenized_heldout(tokenizer)
    if len(ids) <= n_ctx:
        raise ValueError(f"the held-out text is only {len(ids)} tokens in this tokenizer; {n_ctx} are needed")
    return sample_batch(ids, n_examples, n_ctx, torch.Generator().manual_seed(seed), bos=tokenizer.bos)


@functools.lru_cache(maxsize=4)
def frequency_ranking(tokenizer: Tokenizer) -> tuple[int, ...]:
    """Another tokenizer's tokens that occur in the held-out text, most frequent first (the start token left out)."""
    counts = np.bincount(tokenized_heldout(tokenizer))
    return tuple(int(t) for t in np.argsort(-counts, kind="stable") if counts[t] > 0 and t != tokenizer.bos)


@functools.lru_cache(maxsize=4)
def tokenizer_probe_pool(tokenizer: Tokenizer, n_tokens: int = 60) -> list[int]:
    """Random-probe tokens for another tokenizer: the middle of its frequency ranking on the held-out text
    (the n_tokens around the median rank)."""
    ranked = frequency_ranking(tokenizer)
    middle = max(0, len(ranked) // 2 - n_tokens // 2)
    return list(ranked[middle : middle + n_tokens])


def repeated_twice(
    n_ctx: int, n_sequences: int, half_len: int, tokenizer: Tokenizer = BYTES
) -> tuple[torch.Tensor, int]:
    """Random tokens followed by the same tokens again (half_len each, cut to fit n_ctx), and the half length."""
    half = max(2, min(half_len, (n_ctx - 1) // 2))
    tokens = repeated_random_tokens(
        n_sequences=n_sequences, seq_len=half, n_repeats=2, seed=REPEAT_TWICE_SEED, tokenizer=tokenizer
    )
    return tokens, half


def mean_reference(n_ctx: int, n_examples: int = 16, tokenizer: Tokenizer = BYTES) -> torch.Tensor:
    """Held-out batch whose head outputs define mean ablation; not the batch we measure on."""
    return heldout_examples(n_examples, n_ctx, seed=MEAN_REFERENCE_SEED, tokenizer=tokenizer)


def provenance_notes(manifest: dict) -> list[str]:
    """How a run's recorded data differs from this machine's: the evaluation set its stored metrics were computed
    on, and the stdlib text it was trained on. Empty when both match (or the run recorded neither)."""
    notes = []
    recorded_eval = manifest.get("eval_set_sha256")
    if recorded_eval and recorded_eval != evalset.load().sha256:
        notes.append("stored metrics used another evaluation set than this app's: live numbers may differ from them")
    recorded_prose = manifest.get("prose_set_sha256")
    if recorded_prose and recorded_prose != proseset.load().sha256:
        notes.append("stored prose scores used another prose set than this app's: live numbers may differ from them")
    recorded_train = manifest.get("train_corpus_sha256")
    if recorded_train and recorded_train != corpus_sha256("train"):
        notes.append("trained on another Python's standard library: retraining here will not reproduce it exactly")
    return notes
