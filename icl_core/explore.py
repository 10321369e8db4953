"""Computations behind the explorer's pages, as pure functions of runs, snapshots, models and text.

No Streamlit here: the pages (and ui/) cache and display what these functions return, and tests can
call them directly.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icl_core import data, metrics
from icl_core.ablation import Head, ablation_hooks, head_output_means, record_patterns
from icl_core.config import ICL_EARLY_TOKEN, ICL_LATE_TOKEN
from icl_core.errors import ICLError, InputTextError
from icl_core.model import AttnOnlyTransformer, per_token_loss
from icl_core.pca import PCA_MIN_STEP, PCAResult, joint_pca
from icl_core.phase import MIN_DROP_NATS, MIN_INDUCTION_RISE, PhaseWindow, detect_run_phase_change
from icl_core.runs import RunRef
from icl_core.snapshots import MANIFEST, SnapshotInfo, list_snapshots, read_manifest, read_run_config
from icl_core.tokenizer import BOS, encode, token_labels
from icl_core.train import TRAIN_LOG

EXTRA_RUNS_ENV = "ICL_EXTRA_RUNS_DIRS"

# ---------------------------------------------------------------------------------------------
# Runs and snapshots


def extra_run_refs(env_value: str | None = None) -> list[RunRef]:
    """Runs named by ICL_EXTRA_RUNS_DIRS (os.pathsep-separated): each entry a run folder or a folder of runs."""
    raw = os.environ.get(EXTRA_RUNS_ENV, "") if env_value is None else env_value
    refs: list[RunRef] = []
    for entry in (p for p in raw.split(os.pathsep) if p.strip()):
        root = Path(entry.strip()).expanduser()
        if (root / MANIFEST).is_file():
            refs.append(RunRef(root.name, root, "extra"))
        elif root.is_dir():
            refs.extend(RunRef(c.name, c, "extra") for c in sorted(root.iterdir()) if (c / MANIFEST).is_file())
    return refs


def fmt_tokens(n: int) -> str:
    """Token counts as a teacher reads them: 8.54M, 655k."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def head_name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def all_heads(n_layers: int, n_heads: int) -> list[Head]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def min_induction_layer(n_layers: int) -> int:
    """Induction heads need an earlier layer to compose with; a 1-layer model can only have them via smeared keys."""
    return 1 if n_layers > 1 else 0


def read_train_log(run_dir: Path) -> list[dict[str, float]]:
    """The run's training log (step, tokens, loss, ...); lines cut by a crash are skipped."""
    path = Path(run_dir) / TRAIN_LOG
    rows: list[dict[str, float]] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("step", "tokens", "loss")):
            rows.append(entry)
    return rows


def _finite(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def summary_rows(snaps: Sequence[SnapshotInfo]) -> list[dict[str, Any]]:
    """One row per snapshot: step, tokens seen, losses, ICL score, strongest induction (prefix-matching) score."""
    rows = []
    for s in snaps:
        m = s.metrics
        pm = m.get("prefix_matching")
        best = None
        if isinstance(pm, list) and pm:
            first = min_induction_layer(len(pm))
            values = [float(v) for layer in pm[first:] for v in layer]
            best = max(values) if values else None
        rows.append(
            {
                "step": s.step,
                "tokens": s.tokens_seen,
                "train_loss": _finite(m.get("train_loss")),
                "heldout_loss": _finite(m.get("heldout_loss")),
                "icl_score": _finite(m.get("icl_score")),
                "max_prefix_matching": best,
            }
        )
    return rows


def head_score_rows(snap: SnapshotInfo) -> list[dict[str, Any]]:
    """Long table of stored per-head scores: head, layer, metric, value, tokens (for charts over training)."""
    rows = []
    for metric in ("prefix_matching", "previous_token", "copying"):
        grid = snap.metrics.get(metric)
        if not isinstance(grid, list):
            continue
        for layer, values in enumerate(grid):
            for head, value in enumerate(values):
                rows.append(
                    {
                        "head": head_name((layer, head)),
                        "layer": layer,
                        "metric": metric,
                        "value": _finite(value),
                        "step": snap.step,
                        "tokens": snap.tokens_seen,
                    }
                )
    return rows


def phase_window(snaps: Sequence[SnapshotInfo]) -> PhaseWindow | None:
    """The phase change located from the stored head scores (or ICL scores when those are missing), or None."""
    usable = [s for s in snaps if _finite(s.metrics.get("icl_score")) is not None or s.metrics.get("prefix_matching")]
    if len(usable) < 3:
        return None
    return detect_run_phase_change(
        [s.step for s in usable],
        [_finite(s.metrics.get("icl_score")) for s in usable],
        [s.metrics.get("prefix_matching") for s in usable],
    )


def describe_phase_change(window: PhaseWindow | None, snaps: Sequence[SnapshotInfo]) -> str:
    """One sentence on the run's phase change (or its absence) that says which signal located it."""
    tokens = {s.step: s.tokens_seen for s in snaps}
    fmt = fmt_tokens
    if window is None:
        if any(s.metrics.get("prefix_matching") for s in snaps):
            return (
                f"no phase change detected: no head's induction (prefix-matching) score ever rises by "
                f"{MIN_INDUCTION_RISE} or more, so no induction head forms"
            )
        if any(_finite(s.metrics.get("icl_score")) is not None for s in snaps):
            return f"no phase change detected: the ICL score never falls by {MIN_DROP_NATS} nats or more"
        return "no phase change detected: this run recorded neither head scores nor ICL scores"
    if window.signal == "prefix_matching":
        what = f"the best induction (prefix-matching) score rises by {window.drop:.2f}"
    else:
        what = f"the ICL score falls by {window.drop:.2f} nats"
    icl = f"; the ICL score changes by {window.icl_change:+.2f} nats across it" if window.icl_change is not None else ""
    return (
        f"phase change between step {window.start_step:,} and step {window.end_step:,} "
        f"({fmt(tokens.get(window.start_step, 0))} to {fmt(tokens.get(window.end_step, 0))} tokens seen), "
        f"steepest at step {window.center_step:,}: {what}{icl}"
    )


INDUCTION_ONSET_SCORE = 0.3


def induction_onset(snaps: Sequence[SnapshotInfo], threshold: float = INDUCTION_ONSET_SCORE) -> tuple[int, Head] | None:
    """First snapshot from which some head (layer >= 1 in deep models) keeps a prefix-matching score above threshold.

    A second witness of the phase change besides the ICL score: "induction heads form". Requiring the
    score to stay above the threshold at the next snapshot too ignores single-snapshot blips.
    """
    above: list[Head | None] = []
    for s in snaps:
        pm = s.metrics.get("prefix_matching")
        heads = induction_heads(pm, threshold) if isinstance(pm, list) and pm else []
        above.append(heads[0] if heads else None)
    for i, head in enumerate(above):
        if head is not None and (i + 1 == len(above) or above[i + 1] is not None):
            return snaps[i].step, head
    return None


def nearest_step(steps: Sequence[int], wanted: int) -> int:
    """The available step closest to `wanted` (steps must be non-empty)."""
    return min(steps, key=lambda s: (abs(s - wanted), s))


def nearest_by_tokens(tokens: Sequence[int], wanted: int) -> int:
    """Index of the snapshot closest in log(tokens seen): runs with different schedules line up by training progress."""

    def dist(t: int) -> float:
        return abs(math.log1p(t) - math.log1p(max(wanted, 0)))

    return min(range(len(tokens)), key=lambda i: dist(tokens[i]))


def phase_status(window: PhaseWindow | None, step: int) -> str:
    if window is None:
        return "no phase change"
    if step < window.start_step:
        return "before the phase change"
    if step <= window.end_step:
        return "during the phase change"
    return "after the phase change"


# ---------------------------------------------------------------------------------------------
# Per-token-loss PCA over all runs


@dataclass
class PCATable:
    rows: list[dict[str, Any]]  # run, step, tokens, pc1, pc2, order, icl_score
    explained: tuple[float, float]
    skipped: dict[str, str]  # run -> why it is not in the plane


def pca_table(
    per_run: dict[str, Sequence[SnapshotInfo]], focus_run: str | None = None, min_step: int = PCA_MIN_STEP
) -> PCATable | None:
    """Joint PCA of the stored per-token-loss vectors of every compatible run, snapshots from min_step on.

    Runs are compatible when they were evaluated on the same held-out examples and positions, i.e. the
    same number of examples and the same context; the group holding `focus_run` wins, else the largest.
    """
    groups: dict[tuple[int, int], dict[str, list[tuple[int, np.ndarray]]]] = {}
    skipped: dict[str, str] = {}
    tokens: dict[tuple[str, int], int] = {}
    icl: dict[tuple[str, int], float | None] = {}
    for name, snaps in per_run.items():
        vecs = []
        for s in snaps:
            if s.step < min_step:
                continue
            v = s.metrics.get("pca_losses")
            if isinstance(v, list) and v:
                arr = np.asarray(v, dtype=np.float64)
                if np.isfinite(arr).all():
                    vecs.append((s.step, arr))
                    tokens[(name, s.step)] = s.tokens_seen
                    icl[(name, s.step)] = _finite(s.metrics.get("icl_score"))
        if len(vecs) < 1:
            skipped[name] = "no per-token losses stored"
            continue
        lengths = {len(v) for _, v in vecs}
        if len(lengths) != 1:
            skipped[name] = "snapshots were evaluated on different examples"
            continue
        key = (lengths.pop(), snaps[0].model_config.n_ctx)
        groups.setdefault(key, {})[name] = vecs
    if not groups:
        return None
    focus_key = next((k for k, g in groups.items() if focus_run in g), None)
    key = focus_key or max(groups, key=lambda k: (sum(len(v) for v in groups[k].values()), k))
    for other, g in groups.items():
        if other != key:
            for name in g:
                skipped[name] = (
                    f"evaluated on {other[0]} held-out examples (context {other[1]}), "
                    f"not {key[0]} (context {key[1]}): not comparable"
                )
    chosen = groups[key]
    if sum(len(v) for v in chosen.values()) < 2:
        return None
    result: PCAResult = joint_pca(chosen)
    rows = []
    for name in sorted(result.coords):
        for order, (step, xy) in enumerate(zip(result.steps[name], result.coords[name], strict=True)):
            rows.append(
                {
                    "run": name,
                    "step": int(step),
                    "tokens": int(tokens[(name, step)]),
                    "pc1": float(xy[0]),
                    "pc2": float(xy[1]),
                    "order": order,
                    "icl_score": icl[(name, step)],
                }
            )
    ratio = result.explained_variance_ratio
    return PCATable(rows, (float(ratio[0]), float(ratio[1]) if len(ratio) > 1 else 0.0), skipped)


def highlighted_pca_rows(table: PCATable, focus_run: str, step: int, tokens: int | None = None) -> list[dict[str, Any]]:
    """Per run, the point matching the selection: the focus run's own step, the others' nearest in tokens seen.

    A step that is not in the plane (before the PCA's first step) is matched by `tokens` on every run,
    the focus run included, so the rings still show roughly where the selection lies.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in table.rows:
        by_run.setdefault(row["run"], []).append(row)
    focus = next((r for r in by_run.get(focus_run, []) if r["step"] == step), None)
    wanted_tokens = focus["tokens"] if focus else tokens
    out = []
    for name, rows in by_run.items():
        if focus is not None and name == focus_run:
            out.append({**focus, "focus": True})
        elif wanted_tokens is not None:
            nearest = rows[nearest_by_tokens([r["tokens"] for r in rows], wanted_tokens)]
            out.append({**nearest, "focus": name == focus_run})
    return out


# ---------------------------------------------------------------------------------------------
# Text input


PRESETS: dict[str, str] = {
    "Repeated random tokens": "",  # filled by preset_text: depends on the probe-token pool
    "Repeated English sentence": "Alice keeps green tea in a blue tin. Alice keeps green tea in a blue tin.",
    "Code with a repeated identifier": "def area(w, h):\n    rect_size = w * h\n    return rect_size\n",
    "Fuzzy repeat (case-flipped)": "",  # A then A with every letter's case flipped
}
_FUZZY_SOURCE = "Never odd or even, said Bob. "


def preset_text(name: str, seed: int = 0) -> str:
    """The text of a preset sequence; 'Repeated random tokens' follows the prefix-matching probe (25 tokens x 2)."""
    if name not in PRESETS:
        raise InputTextError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if name == "Repeated random tokens":
        pool = [t for t in data.probe_tokens() if 33 <= t < 127]  # printable, so the text box shows it
        rng = random.Random(seed)
        chunk = "".join(chr(rng.choice(pool)) for _ in range(25))
        return chunk * 2
    if name == "Fuzzy repeat (case-flipped)":
        return _FUZZY_SOURCE + _FUZZY_SOURCE.swapcase()
    return PRESETS[name]


@dataclass(frozen=True)
class TextInput:
    tokens: torch.Tensor  # 1-D, BOS first, at most n_ctx long
    notes: tuple[str, ...]  # what the user should know (truncation, multi-byte characters)


def prepare_text(text: str, n_ctx: int) -> TextInput:
    """Encode typed text for a model; InputTextError for empty text, notes for truncation and non-ASCII."""
    if not text or not text.strip():
        raise InputTextError("The text is empty: type at least one character, or pick a preset.")
    enc = encode(text, n_ctx=n_ctx)
    notes = []
    if enc.truncated:
        total = len(text.encode("utf-8")) + 1
        notes.append(
            f"The text is {total} tokens (with the start token) but the model's context is {n_ctx}: "
            f"only the first {n_ctx} tokens are used."
        )
    if enc.non_ascii_chars:
        notes.append(
            f"{enc.non_ascii_chars} non-ASCII character(s) became several byte tokens each "
            "(the model reads UTF-8 bytes); they show as \\xNN labels."
        )
    return TextInput(enc.tokens, tuple(notes))


@dataclass
class TextAnalysis:
    tokens: np.ndarray  # (n,) int
    labels: list[str]
    patterns: np.ndarray  # (layer, head, query, key) float32
    losses: np.ndarray  # (n - 1,): loss of predicting token i + 1 at position i
    top_ids: np.ndarray  # (n, k) next-token predictions at each position
    top_probs: np.ndarray  # (n, k)
    targets: np.ndarray  # (query, key) bool: induction targets
    text_prefix_matching: np.ndarray  # (layer, head): attention on induction targets, NaN if nothing repeats


def top_k(logits: torch.Tensor, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Top-k token ids and probabilities at every position of (pos, vocab) logits."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return ids.numpy(), values.numpy()


def text_prefix_matching(patterns: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per head, mean attention on induction targets over the queries that have any (NaN if none do).

    Unlike the probe score, typed text may repeat little, so queries with nothing to match are left out.
    """
    has = targets.any(axis=1)
    if not has.any():
        return np.full(patterns.shape[:2], np.nan)
    mass = (patterns * targets[None, None]).sum(-1)  # (layer, head, query)
    return mass[..., has].mean(-1)


@torch.no_grad()
def analyze_tokens(model: AttnOnlyTransformer, tokens: torch.Tensor, k: int = 5) -> TextAnalysis:
    """One forward pass with attention capture: patterns, per-token loss, top-k predictions, induction targets."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    logits, patterns = metrics.attention_patterns(model, tokens)
    ids, probs = top_k(logits[0], k)
    targets = metrics.induction_targets(tokens)[0].numpy()
    pats = patterns[0].float().numpy()
    losses = per_token_loss(logits, tokens)[0].numpy() if tokens.shape[1] > 1 else np.zeros(0, dtype=np.float32)
    return TextAnalysis(
        tokens=tokens[0].numpy(),
        labels=token_labels(tokens[0]),
        patterns=pats,
        losses=losses,
        top_ids=ids,
        top_probs=probs,
        targets=targets,
        text_prefix_matching=text_prefix_matching(pats, targets),
    )


def top_attended(analysis: TextAnalysis, query: int, n: int = 3) -> list[dict[str, Any]]:
    """For each head, the n keys the query attends to most, flagging induction targets and the previous token."""
    rows = []
    n_layers, n_heads = analysis.patterns.shape[:2]
    for layer in range(n_layers):
        for head in range(n_heads):
            weights = analysis.patterns[layer, head, query, : query + 1]
            order = np.argsort(-weights, kind="stable")[:n]
            on_targets = float(weights[analysis.targets[query, : query + 1]].sum())
            rows.append(
                {
                    "head": head_name((layer, head)),
                    "on_induction_targets": on_targets,
                    "on_previous_token": float(weights[query - 1]) if query > 0 else 0.0,
                    "top": [(int(k), analysis.labels[k], float(weights[k])) for k in order],
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Ablation


@dataclass(frozen=True)
class AblationProbes:
    repeated: torch.Tensor  # (n, 1 + 2 * half_len): random tokens, then the same tokens again
    half_len: int
    heldout: torch.Tensor  # (m, n_ctx): held-out text, for the in-context loss curve and ICL score


def make_probes(n_ctx: int, n_repeated: int = 8, half_len: int = 100, n_heldout: int = 16) -> AblationProbes:
    """Small fixed batches, so an ablation can be measured live (a fraction of a second on a CPU)."""
    half = max(2, min(half_len, (n_ctx - 1) // 2))
    repeated = data.repeated_random_tokens(n_sequences=n_repeated, seq_len=half, n_repeats=2, seed=7)
    heldout = data.heldout_examples(n_heldout, n_ctx, seed=2024)
    return AblationProbes(repeated, half, heldout)


def mean_reference(n_ctx: int, n_examples: int = 16) -> torch.Tensor:
    """Held-out batch whose head outputs define mean ablation; not the batch we measure on."""
    return data.heldout_examples(n_examples, n_ctx, seed=77)


def compute_head_means(model: AttnOnlyTransformer, reference: torch.Tensor) -> dict[int, torch.Tensor]:
    return head_output_means(model, reference)


ICL_WINDOW = 10  # tokens either side of 50 and 500 averaged by the live ICL estimate


def windowed_icl_score(curve: np.ndarray, half_window: int = ICL_WINDOW) -> float | None:
    """loss(≈500) − loss(≈50), each a mean over ±half_window positions: a steadier estimate on a small batch."""
    if len(curve) <= ICL_LATE_TOKEN:
        return None
    late = curve[max(ICL_LATE_TOKEN - half_window, 0) : ICL_LATE_TOKEN + half_window + 1]
    early = curve[max(ICL_EARLY_TOKEN - half_window, 0) : ICL_EARLY_TOKEN + half_window + 1]
    return float(late.mean() - early.mean())


@dataclass(frozen=True)
class CleanPatterns:
    """Patterns of layers >= 1 on the ablation probes, recorded once per snapshot (fp16 halves the memory)."""

    repeated: dict[int, torch.Tensor]
    heldout: dict[int, torch.Tensor]


def record_probe_patterns(model: AttnOnlyTransformer, probes: AblationProbes, chunk: int = 8) -> CleanPatterns:
    layers = list(range(1, model.cfg.n_layers))

    def rec(tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        parts = [
            record_patterns(model, tokens[i : i + chunk], layers, torch.float16) for i in range(0, len(tokens), chunk)
        ]
        return {layer: torch.cat([p[layer] for p in parts]) for layer in layers}

    return CleanPatterns(rec(probes.repeated), rec(probes.heldout)) if layers else CleanPatterns({}, {})


@torch.no_grad()
def ablated_losses(
    model: AttnOnlyTransformer,
    tokens: torch.Tensor,
    heads: Sequence[Head],
    mode: str = "zero",
    means: dict[int, torch.Tensor] | None = None,
    clean: dict[int, torch.Tensor] | None = None,
    chunk: int = 8,
) -> torch.Tensor:
    """Per-token losses (batch, pos - 1) with `heads` ablated, in chunks to bound pattern memory."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    out = []
    for i in range(0, len(tokens), chunk):
        part = tokens[i : i + chunk]
        part_clean = {layer: p[i : i + chunk] for layer, p in clean.items()} if clean else None
        logits = model.run_with_hooks(part, ablation_hooks(model, part, heads, mode, means, part_clean))
        out.append(per_token_loss(logits, part))
    return torch.cat(out)


@dataclass(frozen=True)
class AblationEffect:
    first_half_loss: float  # repeated random tokens, first copy (cannot be predicted from context)
    second_half_loss: float  # second copy: an induction head predicts it from the first
    icl_score: float | None  # windowed estimate on the small held-out batch
    loss_curve: np.ndarray  # mean loss at each context position on the held-out batch


def ablation_effect(
    model: AttnOnlyTransformer,
    heads: Sequence[Head],
    mode: str,
    probes: AblationProbes,
    means: dict[int, torch.Tensor] | None = None,
    clean: CleanPatterns | None = None,
) -> AblationEffect:
    """Loss on repeated random tokens (first vs second copy) and on held-out text with `heads` ablated."""
    rep = ablated_losses(model, probes.repeated, heads, mode, means, clean.repeated if clean else None)
    h = probes.half_len
    # Loss index t predicts token t + 1; index h predicts the first token of the copy, which no head can know.
    first = float(rep[:, 1:h].mean())
    second = float(rep[:, h + 1 :].mean())
    curve = ablated_losses(model, probes.heldout, heads, mode, means, clean.heldout if clean else None)
    curve = curve.mean(0).numpy()
    return AblationEffect(first, second, windowed_icl_score(curve), curve)


def induction_heads(prefix_matching: Sequence[Sequence[float]], threshold: float = 0.3) -> list[Head]:
    """Heads in layers >= 1 (any layer of a 1-layer model) scoring above the threshold, best first."""
    first = min_induction_layer(len(prefix_matching))
    found = [
        ((layer, head), float(v))
        for layer, values in enumerate(prefix_matching)
        if layer >= first
        for head, v in enumerate(values)
        if _finite(v) is not None and float(v) > threshold
    ]
    return [h for h, _ in sorted(found, key=lambda hv: -hv[1])]


def random_other_head(n_layers: int, n_heads: int, exclude: Sequence[Head], seed: int = 0) -> Head | None:
    """A head not in `exclude`, drawn with a seed (so a button press is reproducible), or None if none is left."""
    excluded = {(int(a), int(b)) for a, b in exclude}
    choices = [h for h in all_heads(n_layers, n_heads) if h not in excluded]
    if not choices:
        return None
    return random.Random(seed).choice(choices)


def prediction_rows(
    tokens: torch.Tensor, clean_logits: torch.Tensor, ablated_logits_: torch.Tensor, last: int = 40
) -> list[dict[str, Any]]:
    """For the last `last` positions: the next token, and the clean vs ablated top prediction and loss."""
    toks = tokens.reshape(-1)
    clean = torch.log_softmax(clean_logits.reshape(len(toks), -1).float(), -1)
    abl = torch.log_softmax(ablated_logits_.reshape(len(toks), -1).float(), -1)
    rows = []
    for pos in range(max(0, len(toks) - 1 - last), len(toks) - 1):
        nxt = int(toks[pos + 1])
        c_top, a_top = int(clean[pos].argmax()), int(abl[pos].argmax())
        rows.append(
            {
                "position": pos,
                "token": token_labels([int(toks[pos])])[0],
                "next": token_labels([nxt])[0],
                "clean_top": token_labels([c_top])[0],
                "clean_p": float(clean[pos, c_top].exp()),
                "clean_loss": float(-clean[pos, nxt]),
                "ablated_top": token_labels([a_top])[0],
                "ablated_p": float(abl[pos, a_top].exp()),
                "ablated_loss": float(-abl[pos, nxt]),
                "repeat": bool((toks[:pos] == toks[pos]).any()) and int(toks[pos]) != BOS,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Run overview (Models page)


def run_overview(ref: RunRef, snaps: Sequence[SnapshotInfo] | None = None) -> dict[str, Any]:
    """One row describing a run: config, progress and final metrics; an 'error' entry if it cannot be read."""
    row: dict[str, Any] = {"run": ref.name, "source": ref.source, "path": str(ref.path), "error": ""}
    try:
        manifest = read_manifest(ref.path)
        cfg = read_run_config(ref.path)
        snaps = list(snaps) if snaps is not None else list_snapshots(ref.path)
    except ICLError as exc:
        row["error"] = str(exc)
        return row
    m = cfg.model
    row.update(
        {
            "layers": m.n_layers,
            "heads": m.n_heads,
            "d_model": m.d_model,
            "context": m.n_ctx,
            "smeared keys": m.smeared_keys,
            "status": str(manifest.get("status", "")),
            "snapshots": len(snaps),
            "planned steps": cfg.total_steps,
        }
    )
    if not snaps:
        row["error"] = "no snapshots yet"
        return row
    last = summary_rows(snaps[-1:])[0]
    window = phase_window(snaps)
    tokens = {s.step: s.tokens_seen for s in snaps}
    row.update(
        {
            "last step": last["step"],
            "tokens seen": last["tokens"],
            "train loss": last["train_loss"],
            "held-out loss": last["heldout_loss"],
            "ICL score": last["icl_score"],
            "best induction score": last["max_prefix_matching"],
            "phase change at (tokens)": tokens[window.center_step] if window else None,
        }
    )
    return row
