"""Pythia's default import at its real shapes, end to end: wall clock, peak memory, disk (issue 33 targets for
pythia-14m: < 15 min and < 4 GB peak RSS on 2 cores; pythia-70m measured and stated).

Serves a repo laid out as EleutherAI's (tests/pythia_fixtures.py: 154 step branches plus main, config.json in the
Hub's 4.x form) from the local fake Hub, and runs the Models page's import as the app does: the background worker
(icl_core.tasks.imports) lists the branches, downloads, converts and evaluates the default selection one revision at
a time. Each chosen branch holds a real-size fp16 model.safetensors written by transformers' save_pretrained (random
weights; the cost does not depend on their values; the step in the file's metadata makes every branch's sha256 its
own); the other branches hold a small placeholder file (they are listed, never fetched). The tokenizer is a BPE
trained here on the held-out text (8,000 tokens, no download), smaller than GPT-NeoX's 50,277, which changes which
tokens appear but not the cost, set by the model's 50,304-row unembedding.

Run: .venv/bin/python benchmarks/pythia_import.py [--size 14m|70m] [--checkpoints N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import cpu_reference_ms  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from published_import import import_and_report, use_fake_hub  # noqa: E402
from published_model import train_tokenizer  # noqa: E402
from pythia_fixtures import GITATTRIBUTES, TINY  # noqa: E402

from icl_core.storage import step_revisions  # noqa: E402

# The keys of pythia-14m's and -70m's config.json that set their shape (EleutherAI/pythia README's table); the rest
# as tests/pythia_fixtures.py's TINY, which follows the Hub's 4.x files.
SHAPES = {
    "14m": {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512},
    "70m": {"hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
}


def weights_file(config: dict, step: int) -> bytes:
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**config)).half()
    state = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(state, str(path), metadata={"format": "pt", "step": str(step)})
        return path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="14m")
    parser.add_argument("--checkpoints", type=int, default=None, help="default: the import's own default count")
    args = parser.parse_args()
    ref_ms = cpu_reference_ms()
    print(f"CPU reference: {ref_ms:.0f} ms ({os.cpu_count()} CPUs)")
    repo_id = f"EleutherAI/pythia-{args.size}"
    config = {**TINY, "max_position_embeddings": 2048, "num_hidden_layers": 6, "vocab_size": 50304}
    config |= SHAPES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "tok").mkdir()
        train_tokenizer(tmp_path / "tok", vocab=8000)
        base = {".gitattributes": GITATTRIBUTES, "config.json": json.dumps(config).encode()}
        hub = FakeHub().start()
        for step in step_revisions.pythia_steps():
            placeholder = f"placeholder {step}".encode()
            hub.add_repo(repo_id, {**base, "model.safetensors": placeholder}, branch=f"step{step}")
        tokenizer = (tmp_path / "tok" / "tokenizer.json").read_bytes()
        hub.add_repo(repo_id, {**base, "tokenizer.json": tokenizer}, branch="main")
        use_fake_hub(hub, tmp_path)
        from icl_core.storage import tl_hub

        repo = tl_hub.list_repo(repo_id)
        n = args.checkpoints or tl_hub.default_count(repo)
        one = b""
        for c in tl_hub.choose(repo, n):  # the real-size files, on the branches the import will fetch
            one = weights_file(config, c.label)
            hub.add_repo(repo_id, {**base, "model.safetensors": one}, branch=c.revision or "main")
        repo = tl_hub.list_repo(repo_id)  # again: the chosen branches' real sizes
        run_dir = import_and_report(repo, n, hub, ref_ms, "revision", len(one))
        last = json.loads(sorted(run_dir.glob("step_*.json"))[-1].read_text())["metrics"]
        print(
            f"  evaluated on {last.get('icl_examples')} ICL examples, a loss curve of {len(last['loss_curve'])} tokens"
        )


if __name__ == "__main__":
    main()
