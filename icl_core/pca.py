"""Per-token-loss PCA (Olsson et al. 2022): one loss vector per snapshot, reduced jointly to 2-D."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA

from icl_core.metrics import per_token_losses
from icl_core.model import AttnOnlyTransformer

PCA_POSITION_SEED = 4321
# Snapshots before this step are left out of the fit by default: in the first few dozen steps every
# model collapses from uniform predictions (loss 5.5 -> 3 nats), a change so large that it would
# take both components and hide the later, smaller turn at the phase change.
PCA_MIN_STEP = 30


def token_positions(n_examples: int, n_ctx: int, seed: int = PCA_POSITION_SEED) -> torch.Tensor:
    """One random loss position per example, the same for every model and snapshot."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_ctx - 1, (n_examples,), generator=gen)


def select_positions(losses: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """From per-token losses (n_examples, n_ctx - 1), the loss at each example's chosen position."""
    return losses.gather(1, positions[:, None]).squeeze(1)


def loss_vector(model: AttnOnlyTransformer, examples: torch.Tensor) -> torch.Tensor:
    losses = per_token_losses(model, examples)
    return select_positions(losses, token_positions(len(examples), examples.shape[1]))


@dataclass
class PCAResult:
    coords: dict[str, np.ndarray]  # run name -> (n_snapshots, 2), in step order
    steps: dict[str, list[int]]
    explained_variance_ratio: np.ndarray
    components: np.ndarray


def joint_pca(vectors: dict[str, list[tuple[int, np.ndarray]]], n_components: int = 2) -> PCAResult:
    """Fit one PCA on all snapshots of all runs; vectors: run -> [(step, loss vector)]."""
    names = sorted(vectors)
    lengths = {len(v) for name in names for _, v in vectors[name]}
    if len(lengths) != 1:
        raise ValueError(
            f"loss vectors have different lengths {sorted(lengths)}: runs were evaluated on different examples"
        )
    stacked = np.stack(
        [np.asarray(v, dtype=np.float64) for name in names for _, v in sorted(vectors[name], key=lambda sv: sv[0])]
    )
    pca = PCA(n_components=n_components, svd_solver="full")
    flat = pca.fit_transform(stacked)
    # PCA's sign is arbitrary; fix it so the first snapshot of the first run has negative coordinates.
    signs = np.where(flat[0] > 0, -1.0, 1.0)
    flat = flat * signs
    coords, steps, i = {}, {}, 0
    for name in names:
        ordered = sorted(vectors[name], key=lambda sv: sv[0])
        coords[name] = flat[i : i + len(ordered)]
        steps[name] = [s for s, _ in ordered]
        i += len(ordered)
    return PCAResult(coords, steps, pca.explained_variance_ratio_, pca.components_ * signs[:, None])


def turn_strengths(trajectory: np.ndarray, k: int = 2) -> np.ndarray:
    """How sharply the trajectory turns at each point i (k <= i < n - k), as angle x distance.

    The angle is between the displacement over the k snapshots before i and over the k after;
    weighting it by the shorter displacement keeps the jitter of a converged run (tiny moves in
    random directions) from counting as a turn. Entry j belongs to point j + k.
    """
    before = trajectory[k:-k] - trajectory[: -2 * k]
    after = trajectory[2 * k :] - trajectory[k:-k]
    nb, na = np.linalg.norm(before, axis=1), np.linalg.norm(after, axis=1)
    cos = (before * after).sum(1) / np.maximum(nb * na, 1e-12)
    return np.arccos(np.clip(cos, -1.0, 1.0)) * np.minimum(nb, na)
