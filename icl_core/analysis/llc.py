"""The local learning coefficient (LLC) of a snapshot, estimated with SGLD (Lau et al. 2023), step for step as
devinterp 2.0.1 does it (`slt/llc.py`, `slt/sampling.py`, `slt/sampler.py`, `optim/sgmcmc.py`, read from its
wheel); tests/test_llc.py checks the two agree within the chains' spread. devinterp itself is a test-only
dependency: at run time it would pull `datasets`, `transformers`, `xarray` and `zarr` into the Space (README).

One chain, from the snapshot's weights w0, for each step t:
    loss_t = the batch's mean per-token loss at w_t             (recorded before the update)
    w     -= eps/2 * (n_beta * grad loss_t + gamma * (w - w0))   (only where the mask is 1)
    w     += sqrt(eps) * N(0, 1)                                 (only where the mask is 1)
LLC per chain = n_beta * (mean_t loss_t - init_loss), init_loss the loss at w0 on the very batches the chains
visit (devinterp's num_init_loss_batches = num_draws): a harder or easier batch then moves both terms alike.

A refined LLC (Wang et al. 2024) restricts the update to one head's weights: `head_mask`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from icl_core.data import prose_examples, sample_batch, tokenizer_examples
from icl_core.heads import Head
from icl_core.model.tokenizer import BYTES, Tokenizer
from icl_core.model.transformer import per_token_loss
from icl_core.stdlib_text import corpus

LLC_DATA_SEED = 31_337  # the windows every estimate samples from: the training corpus, not the held-out set
Progress = Callable[[int, int], None]
Masks = Mapping[str, torch.Tensor | None]  # parameter name -> mask (None: the whole parameter)


@dataclass(frozen=True)
class SGLDSettings:
    """What an estimate depends on; stored with it. Defaults: benchmarks/llc_calibration.py's choice."""

    epsilon: float = 3e-5  # step size (devinterp's lr)
    n_beta: float = 1000.0  # inverse temperature n*beta
    gamma: float = 3000.0  # localization: pull towards w0 (epsilon * gamma < 2, or a chain diverges)
    n_chains: int = 4
    n_steps: int = 100  # one draw per step, no burn-in (devinterp's num_steps_bw_draws=1, num_burnin_steps=0)
    batch_size: int = 4
    n_windows: int = 1024  # the data set: this many windows of n_ctx tokens of the training corpus
    seed: int = 100  # chain c uses seed + c (devinterp's init_seed)

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


DEFAULT_SETTINGS = SGLDSettings()


@dataclass(frozen=True)
class LLCEstimate:
    """One snapshot's estimate: mean and spread over chains, and every chain's loss trace (the diagnostics)."""

    per_chain: tuple[float, ...]
    init_trace: tuple[float, ...]  # the loss at w0 on each step's batch (every chain visits the same batches)
    loss_trace: tuple[tuple[float, ...], ...]  # chains x steps
    settings: SGLDSettings = field(default_factory=SGLDSettings)

    @property
    def init_loss(self) -> float:
        return float(np.mean(self.init_trace))

    def excess_trace(self, chain: int) -> np.ndarray:
        """A chain's loss above w0's on the same batch, step by step: what the LLC averages (times n_beta), freed
        of how hard each batch is, so a chain that has settled shows a flat line."""
        trace = np.asarray(self.loss_trace[chain])
        return trace - np.asarray(self.init_trace[: len(trace)])

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_chain))

    @property
    def std(self) -> float:
        """The chains' standard deviation (ddof 0, as devinterp's llc_std)."""
        return float(np.std(self.per_chain))

    def to_dict(self) -> dict[str, object]:
        return {
            "per_chain": list(self.per_chain),
            "init_trace": list(self.init_trace),
            "loss_trace": [list(t) for t in self.loss_trace],
            "settings": self.settings.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> LLCEstimate:
        trace, settings, per_chain, init = d["loss_trace"], d["settings"], d["per_chain"], d["init_trace"]
        if not (isinstance(trace, list) and isinstance(settings, dict) and isinstance(per_chain, list)):
            raise ValueError("not an LLC estimate")
        if not isinstance(init, list):
            raise ValueError("not an LLC estimate")
        return cls(
            tuple(float(x) for x in per_chain),
            tuple(float(x) for x in init),
            tuple(tuple(float(x) for x in t) for t in trace),
            SGLDSettings(**settings),
        )


def llc_windows(n_ctx: int, n_windows: int, seed: int = LLC_DATA_SEED, tokenizer: Tokenizer = BYTES) -> torch.Tensor:
    """(n_windows, n_ctx) windows of the training corpus, each after a start token: our runs' training
    distribution. A model with another tokenizer (an imported run) gets the standard library's held-out text in
    its tokens instead: the nearest text every machine has, not what it was trained on (the page says so)."""
    if tokenizer != BYTES:
        return tokenizer_examples(tokenizer, n_windows, n_ctx, seed)
    gen = torch.Generator().manual_seed(seed)
    return sample_batch(corpus("train"), n_windows, n_ctx, gen)


def prose_windows(n_ctx: int, n_windows: int, seed: int = LLC_DATA_SEED) -> torch.Tensor:
    """(n_windows, n_ctx) windows of the shipped prose set (English the runs never trained on): the second data
    set an LLC claim is checked on, since the estimate depends on the data."""
    prose = prose_examples(n_ctx)
    if prose is None or len(prose) < n_windows:
        raise ValueError(f"the prose set has no {n_windows} windows of {n_ctx} tokens")
    rows = torch.randperm(len(prose), generator=torch.Generator().manual_seed(seed))[:n_windows]
    return prose[rows.sort().values]


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The batch's mean next-token loss (as devinterp's lm_loss.compute_per_token_loss, then its mean)."""
    return per_token_loss(model(tokens), tokens).mean()


def head_mask(model: nn.Module, head: Head) -> dict[str, torch.Tensor | None]:
    """The parameters of one head (its rows of W_Q, W_K, W_V, W_O, biases and smearing): the refined LLC's
    restriction, as devinterp's create_param_masks(model, "l{layer}h{head}")."""
    layer, index = head
    masks: dict[str, torch.Tensor | None] = {}
    prefix = f"blocks.{layer}."
    for name, param in model.named_parameters():
        if not name.startswith(prefix) or name == f"{prefix}b_O" or "." in name.removeprefix(prefix):
            continue  # b_O is the layer's, not a head's; LayerNorm weights (blocks.l.ln.w) are the layer's
        mask = torch.zeros_like(param, dtype=torch.bool)
        mask[index] = True  # every per-head parameter is stacked over heads in its first dimension
        masks[name] = mask
    if not masks:
        raise ValueError(f"the model has no head {layer}.{index}")
    return masks


def _batches(n_windows: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """One shuffled pass over the windows in batches (devinterp: DataLoader(shuffle=True, drop_last=True) with a
    generator seeded by init_seed, the same order for every chain); a chain cycles through it."""
    gen = torch.Generator().manual_seed(seed)
    # torch's DataLoader draws its workers' base seed from that generator before the sampler's permutation.
    torch.empty((), dtype=torch.int64).random_(generator=gen)
    order = torch.randperm(n_windows, generator=gen)
    n_full = n_windows // batch_size
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]


def estimate_llc(
    model: nn.Module,
    windows: torch.Tensor,
    settings: SGLDSettings = DEFAULT_SETTINGS,
    masks: Masks | None = None,
    progress: Progress | None = None,
) -> LLCEstimate:
    """The LLC at the model's weights (the model is not changed: each chain samples a copy).

    masks: the parameters SGLD may move (None: all of them); progress(done, total) after each chain."""
    batches = _batches(len(windows), settings.batch_size, settings.seed)
    if not batches:
        raise ValueError(f"{len(windows)} windows make no batch of {settings.batch_size}")
    was_training = model.training
    model.train()
    with torch.no_grad():
        init = [float(_loss(model, windows[batches[i % len(batches)]])) for i in range(settings.n_steps)]
    model.train(was_training)
    traces = []
    for chain in range(settings.n_chains):
        traces.append(_chain(model, windows, batches, settings, masks, settings.seed + chain)[0])
        if progress is not None:
            progress(chain + 1, settings.n_chains)
    estimate = LLCEstimate((), tuple(init), tuple(tuple(t) for t in traces), settings)
    # A chain that diverged ends early: it is compared with w0 on the batches it did visit.
    per_chain = tuple(settings.n_beta * float(np.mean(estimate.excess_trace(c))) for c in range(len(traces)))
    return dataclasses.replace(estimate, per_chain=per_chain)


def _chain(
    model: nn.Module,
    windows: torch.Tensor,
    batches: list[torch.Tensor],
    s: SGLDSettings,
    masks: Masks | None,
    seed: int,
) -> tuple[list[float], nn.Module]:
    sampler = _copy(model)
    params = dict(sampler.named_parameters())
    chosen = {name: None for name in params} if masks is None else dict(masks)
    for name, param in params.items():
        param.requires_grad_(name in chosen)
    moving = [(params[name], None if m is None else m.to(params[name].dtype)) for name, m in chosen.items()]
    centres = [p.detach().clone() for p, _ in moving]
    noise = torch.Generator().manual_seed(seed)
    trace = []
    for step in range(s.n_steps):
        loss = _loss(sampler, windows[batches[step % len(batches)]])
        if not math.isfinite(loss.item()):
            break  # a diverged chain: its trace ends here, and the estimate says so by its length
        sampler.zero_grad(set_to_none=True)
        loss.backward()
        trace.append(loss.item())
        with torch.no_grad():
            for (p, mask), w0 in zip(moving, centres, strict=True):
                assert p.grad is not None
                drift = s.n_beta * p.grad + s.gamma * (p - w0)
                kick = torch.randn(p.shape, generator=noise, dtype=p.dtype) * math.sqrt(s.epsilon)
                update = kick - 0.5 * s.epsilon * drift
                p.add_(update if mask is None else update * mask)
    return trace, sampler


def sgld_sample(
    model: nn.Module, windows: torch.Tensor, settings: SGLDSettings, masks: Masks | None = None
) -> nn.Module:
    """Where the first chain ends: a copy of the model with SGLD's last weights (what a mask lets move)."""
    batches = _batches(len(windows), settings.batch_size, settings.seed)
    return _chain(model, windows, batches, settings, masks, settings.seed)[1]


def _copy(model: nn.Module) -> nn.Module:
    sampler = copy.deepcopy(model).float()
    sampler.train()
    return sampler
