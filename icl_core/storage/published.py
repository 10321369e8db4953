"""What is known about the field's published runs over training, each fact with its source.

Three families (formats: ../shared/notes/hub-models.md):
- Neel Nanda's `NeelNanda/Attn_Only_{1..4}L512W_C4_Code`, written by neelnanda-io/solu_project
  `solu/training/train_model_ddp.py`: a `config.json` (the training code's whole settings dict, `json.dump(cfg)`),
  `model_init.pth`, `checkpoints/tokens_{N:012d}.pth` labelled by tokens seen.
- Hoogland et al.'s `timaeus/L{n}W256-3m-rr`: no `config.json` at all. The official loader, georgeyw/lang
  `src/lang/timaeus/tetrahedron.py`, hard-codes the model (MODEL_CFG below); the training settings are
  timaeus-research/icl `src/icl/language/config.py` and `sweeps/language/training-runs/tetrahedron-3m.yaml`.

- EleutherAI's Pythia (`EleutherAI/pythia-14m`, ...: GPT-NeoX with MLPs), one branch per step `step0` ... `step143000`
  (EleutherAI/pythia README), read by storage/step_revisions.py and model/hf_format.py.

Where the phase change is known to happen in a run lets the default choice of checkpoints be dense there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KnownWindow:
    """Tokens seen between which a published run's induction heads are known to form, and who measured it."""

    lo_tokens: int
    hi_tokens: int
    source: str


@dataclass(frozen=True)
class BuiltinConfig:
    """A config for repos that ship none: TransformerLens config fields, as their authors' loader sets them."""

    tl_config: dict[str, Any]
    tokens_per_step: int
    source: str


# ckkissane's induction-heads notebook on NeelNanda/Attn_Only_2L512W_C4_Code: the best induction head scores
# 0.01 at 308M tokens, 0.17 at 528M, 0.63 at 748M, 0.75 at 1.63B; the ICL score goes from -0.22 at 528M to -0.43
# at 1.63B. Measured on the 2-layer run only; the 1-, 3- and 4-layer runs share its data and schedule, so their
# defaults are dense over the same range (for 1 layer: where a 2-layer model changes, for comparison).
NEEL_WINDOW = KnownWindow(
    300_000_000, 1_600_000_000, "ckkissane's induction-heads notebook on the 2-layer run (0.3B-1.6B tokens)"
)
# Hoogland et al. 2024 (stages LM4-LM5 of L2W256): the ICL score forms between steps ~8.5k and ~17.5k, i.e.
# 0.87B-1.79B tokens at 102,400 tokens a step.
TIMAEUS_TOKENS_PER_STEP = 100 * 1024  # batch 100 x context 1024 (timaeus-research/icl src/icl/language/config.py)
TIMAEUS_WINDOW = KnownWindow(
    8_500 * TIMAEUS_TOKENS_PER_STEP,
    17_500 * TIMAEUS_TOKENS_PER_STEP,
    "Hoogland et al. 2024, stages LM4-LM5 (steps 8.5k-17.5k)",
)

# Pythia: 1,024 sequences of 2,048 tokens a step (EleutherAI/pythia README). Olsson et al. 2022 place the phase change
# at roughly 1-3B tokens in their small models and 2.5-5B in the largest; Tigges et al. 2024 (arXiv 2407.10827) report
# that Pythia's induction heads form at similar token counts across sizes (their step range was not readable on this
# machine, so it is not what this window is built from). The window is Olsson et al.'s 1-5B tokens widened about 2x
# each way, to the published steps 256 and 4,000 (0.54B-8.4B tokens): on Pythia's grid (256, 512, 1000, 2000, 3000,
# 4000) a default import takes every revision inside it.
PYTHIA_TOKENS_PER_STEP = 1024 * 2048
PYTHIA_WINDOW = KnownWindow(
    256 * PYTHIA_TOKENS_PER_STEP,
    4_000 * PYTHIA_TOKENS_PER_STEP,
    "Olsson et al. 2022's 1-5B tokens, widened 2x: Pythia steps 256-4,000",
)

# Hoogland et al. 2024 (TMLR: "Loss Landscape Degeneracy and Stagewise Development in Transformers"), the language
# model timaeus/L2W256-3m-rr: the training step at which each stage LM1..LM5 ends, at critical points of its LLC.
# From the paper's table as published at https://timaeus.co/research/2024-02-04-developmental-landscape.
TIMAEUS_STAGE_ENDS = {"LM1": 900, "LM2": 6_500, "LM3": 8_500, "LM4": 17_000, "LM5": 50_000}


def published_stage_boundaries(repo_id: str) -> list[tuple[str, int]]:
    """(label, tokens seen) of each published stage boundary of an imported run's source repo ([] if none)."""
    if repo_id != "timaeus/L2W256-3m-rr":
        return []
    stages = list(TIMAEUS_STAGE_ENDS.items())
    # LM5 ends where training does: not a boundary.
    return [
        (f"{a} | {b} (Hoogland et al.)", end * TIMAEUS_TOKENS_PER_STEP)
        for (a, end), (b, _) in zip(stages, stages[1:], strict=False)
    ]


@dataclass(frozen=True)
class PublishedRun:
    repo_id: str
    description: str  # what is and is not known, for the preset list
    window: KnownWindow | None


_NEEL = (
    "{n} layer{s}, 8 heads of 64, 512 wide, LayerNorm; trained on C4 and code (~22B tokens); ~160 checkpoints of "
    "~200 MB (fp32) labelled by tokens seen"
)
_TIMAEUS = (
    "2 layers, 8 heads of 32, 256 wide, LayerNorm, shortformer positions; Hoogland et al. 2024; trained on a "
    "DSIR-filtered Pile subset (timaeus/dsir-pile-10m) with a 5k TinyStories tokenizer; 50,000 steps of 102,400 "
    "tokens; ~2,100 checkpoints of ~14 MB labelled by step. The repo has no config: the model's is its authors' "
    "loader's (cited), and the tokenizer's start token is not checked here"
)
_PYTHIA = (
    "EleutherAI's Pythia: {shape}, an MLP in every layer, rotary positions; trained on the Pile (300B tokens, "
    "143,000 steps of 2,097,152 tokens); 154 checkpoints, one branch each (step0 ... step143000), fp16"
)
PRESETS: dict[str, PublishedRun] = {
    **{
        f"NeelNanda/Attn_Only_{n}L512W_C4_Code": PublishedRun(
            f"NeelNanda/Attn_Only_{n}L512W_C4_Code", _NEEL.format(n=n, s="" if n == 1 else "s"), NEEL_WINDOW
        )
        for n in (1, 2, 3, 4)
    },
    "timaeus/L2W256-3m-rr": PublishedRun("timaeus/L2W256-3m-rr", _TIMAEUS, TIMAEUS_WINDOW),
    **{
        f"EleutherAI/pythia-{size}": PublishedRun(
            f"EleutherAI/pythia-{size}", _PYTHIA.format(shape=shape), PYTHIA_WINDOW
        )
        for size, shape in (("14m", "6 layers, 4 heads of 32, 128 wide"), ("70m", "6 layers, 8 heads of 64, 512 wide"))
    },
}

# georgeyw/lang src/lang/timaeus/tetrahedron.py, MODEL_CFG: n_layers is set from the repo name (L{n}W256-3m-rr).
_TIMAEUS_REPO = re.compile(r"^timaeus/L(\d+)W256-3m-rr$")


def builtin_config(repo_id: str) -> BuiltinConfig | None:
    """The config of a repo that ships no config.json, if it is one whose authors' loader we have read."""
    m = _TIMAEUS_REPO.match(repo_id)
    if not m:
        return None
    tl_config = {
        "n_layers": int(m.group(1)),
        "d_model": 256,
        "d_head": 32,
        "n_heads": 8,
        "n_ctx": 1024,
        "d_vocab": 5000,
        "tokenizer_name": "georgeyw/TinyStories-tokenizer-5k",
        "normalization_type": "LN",
        "attn_only": True,
        "positional_embedding_type": "shortformer",
    }
    source = "georgeyw/lang src/lang/timaeus/tetrahedron.py (MODEL_CFG); timaeus-research/icl (102,400 tokens a step)"
    return BuiltinConfig(tl_config, TIMAEUS_TOKENS_PER_STEP, source)


def known_window(repo_id: str) -> KnownWindow | None:
    preset = PRESETS.get(repo_id)
    if preset is not None:
        return preset.window
    if _PYTHIA_REPO.match(repo_id):
        return PYTHIA_WINDOW
    return TIMAEUS_WINDOW if _TIMAEUS_REPO.match(repo_id) else None


_PYTHIA_REPO = re.compile(r"^EleutherAI/pythia-[\w.-]+$")  # every size, -deduped, and the tests' pythia-tiny
