"""A published run's default import at its real shapes, end to end: wall clock, peak memory, disk.

Serves a repo laid out as Neel Nanda's 2-layer run (tests/tl_fixtures.py: the ~50-key config, model_init.pth,
~160 checkpoints/tokens_{N:012d}.pth of 208 MB each, fp32, 48,262-token vocabulary, no b_U) from the local fake Hub,
and runs the Models page's import as the app does: the background worker process (icl_core.tasks.imports), which
lists, downloads, converts to fp16 and evaluates the default selection one checkpoint at a time. Every checkpoint
holds the same random weights (the cost of a checkpoint does not depend on its values); the tokenizer is a BPE
tokenizer trained here on the held-out text (no download), smaller than the real one, which changes which tokens
appear but not the cost, set by the model's 48k-wide unembedding.

Reports, with a CPU reference measured in the same run (timings differ up to 3x between machines):
- wall clock of the whole import (target < 15 min on 2 cores), and per checkpoint;
- the worker's peak RSS (target < 4 GB) and the HF cache's peak size (one checkpoint at a time);
- disk kept by the imported run against the cap, and icl_core.analysis.evaluation.estimated_seconds' estimate;
- the fp16 copy's effect on the logits against the fp32 checkpoint (what keeping fp16 costs).

Run: .venv/bin/python benchmarks/published_import.py [--checkpoints N]   (about 10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import cpu_reference_ms  # noqa: E402
from fake_hub import FakeHub  # noqa: E402
from published_model import train_tokenizer  # noqa: E402
from tl_fixtures import neel_config, pth  # noqa: E402

from icl_core.model.tl_format import convert_state_dict, expected_shapes, model_config_from_tl  # noqa: E402
from icl_core.model.transformer import AttnOnlyTransformer  # noqa: E402

REPO = "NeelNanda/Attn_Only_2L512W_C4_Code"


def random_checkpoint(cfg) -> dict[str, torch.Tensor]:
    """A checkpoint of the real shapes, as Neel Nanda's code saves it (TransformerLens names, no b_U)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in expected_shapes(cfg).items():
        scale = 0.5 if name.endswith((".b", "b_Q", "b_K", "b_V", "b_O")) else 0.1 if "embed" in name else 0.04
        state[name] = torch.randn(shape, generator=gen) * scale + (1.0 if name.endswith(".w") else 0.0)
    return state


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def fake_files(config: dict, checkpoint: bytes) -> dict[str, bytes]:
    """The repo's files: ~160 checkpoints labelled log-spaced from one step's tokens to 2.2e10, as the real run's
    (hub-models.md)."""
    labels = sorted({262_144 * int(s) for s in torch.logspace(0, 4.92, 163)})
    files = {"config.json": json.dumps(config).encode(), "model_init.pth": checkpoint}
    files |= {f"checkpoints/tokens_{n:012d}.pth": checkpoint for n in labels}
    return files | {"model_final.pth": checkpoint, "optimizer_state_dict.pth": b"x" * 1000}


def use_fake_hub(hub: FakeHub, tmp_path: Path) -> None:
    """Point huggingface_hub, the app's data folder and the HF cache of this process and its workers here."""
    os.environ.update(
        HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1", ICL_DATA_DIR=str(tmp_path / "data"),
        HF_HUB_CACHE=str(tmp_path / "hf_cache"),
    )  # fmt: skip


@dataclass
class Peaks:
    rss_kb: int = 0  # the worker's peak resident memory (VmHWM)
    cache_bytes: int = 0  # the HF cache's largest size


def watch_cache(peaks: Peaks, stop: threading.Event) -> None:
    while not stop.is_set():
        cache = Path(os.environ["HF_HUB_CACHE"])
        if cache.exists():
            peaks.cache_bytes = max(peaks.cache_bytes, folder_bytes(cache))
        time.sleep(0.5)


def run_import(repo, n: int, peaks: Peaks) -> float:
    """Start the import as the Models page does and wait for its worker; the wall clock in seconds."""
    from icl_core.processes import CHILDREN
    from icl_core.tasks import folder, imports

    stop = threading.Event()
    watcher = threading.Thread(target=watch_cache, args=(peaks, stop), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    info = imports.start_import(repo, n)
    pid = int(folder.read_json_or_empty(info.import_dir / folder.PID_FILE)["pid"])
    while info.active:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            peaks.rss_kb = max(peaks.rss_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError):
            pass
        time.sleep(1.0)
        info = imports.read_import(info.import_dir)
    wall = time.perf_counter() - t0
    proc = CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=60)
    stop.set()
    watcher.join()
    assert info.state == imports.FINISHED, (info.state, info.error)
    return wall


def import_and_report(repo, n: int, hub, ref_ms: float, unit: str, file_bytes: int) -> Path:
    """Run the import, stop the hub, and print its wall clock, peak memory and disk; the imported run's folder."""
    from icl_core.analysis.evaluation import estimated_seconds
    from icl_core.storage import hub as hub_module
    from icl_core.storage import tl_hub

    estimate = estimated_seconds(repo.model_config, n)
    print(f"{repo.repo_id}: {tl_hub.describe(repo, tl_hub.choose(repo, n), estimate)}")
    peaks = Peaks()
    try:
        wall = run_import(repo, n, peaks)
    finally:
        hub.stop()
    run_dir = tl_hub.run_dir_for(repo)
    print(
        f"import + evaluation of {n} {unit}s: {wall / 60:.1f} min wall clock ({wall / n:.1f} s a {unit}; "
        f"estimate {estimate / 60:.1f} min + download) (target < 15 min); ratio to the CPU reference "
        f"{wall * 1000 / ref_ms:.0f}x"
    )
    print(f"  worker peak RSS {peaks.rss_kb / 1e6:.2f} GB (target < 4 GB)")
    print(f"  HF cache peak {peaks.cache_bytes / 1e6:.0f} MB (one {unit}'s weights file is {file_bytes / 1e6:.0f} MB)")
    n_kept = len(list(run_dir.glob("step_*.json")))
    cap_mb = hub_module.DEFAULT_MAX_TOTAL_MB
    print(f"  disk kept {folder_bytes(run_dir) / 1e6:.0f} MB of the {cap_mb:.0f} MB cap ({n_kept} snapshots)")
    return run_dir


def fp16_cost(state: dict[str, torch.Tensor], cfg, run_dir: Path, tokenizer) -> str:
    """What keeping fp16 costs: the stored copy's logits against the fp32 checkpoint's, on held-out tokens."""
    from icl_core.storage.snapshots import list_snapshots, load_model

    fp32 = AttnOnlyTransformer(cfg)
    fp32.load_state_dict(convert_state_dict(state, cfg, "checkpoint"))
    fp16 = load_model(list_snapshots(run_dir)[-1])
    tokens = tokenizer.encode("def f(x):\n    return x + 1\n" * 20).tokens[:256][None]
    with torch.no_grad():
        a, b = fp32.eval()(tokens), fp16.eval()(tokens)
        diff = (a - b).abs()
        loss_a = torch.nn.functional.cross_entropy(a[0, :-1], tokens[0, 1:])
        loss_b = torch.nn.functional.cross_entropy(b[0, :-1], tokens[0, 1:])
    return (
        f"  fp16 copy vs the fp32 checkpoint: logits differ by {diff.max():.4f} at most ({diff.mean():.5f} on "
        f"average; logits' std {a.std():.2f}), mean loss {loss_a:.5f} vs {loss_b:.5f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=None, help="default: the import's own default count")
    args = parser.parse_args()
    ref_ms = cpu_reference_ms()
    print(f"CPU reference: {ref_ms:.0f} ms ({os.cpu_count()} CPUs)")
    config = neel_config(n_layers=2)
    cfg = model_config_from_tl(config)
    state = random_checkpoint(cfg)
    checkpoint = pth(state)
    print(f"one checkpoint: {len(checkpoint) / 1e6:.0f} MB (fp32, vocabulary {cfg.d_vocab:,})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "tok").mkdir()
        tokenizer = train_tokenizer(tmp_path / "tok", vocab=8000)
        hub = FakeHub().start()
        hub.add_repo(REPO, fake_files(config, checkpoint))
        hub.add_repo(cfg.tokenizer, {"tokenizer.json": (tmp_path / "tok" / "tokenizer.json").read_bytes()})
        use_fake_hub(hub, tmp_path)
        from icl_core.storage import tl_hub

        repo = tl_hub.list_repo(REPO)
        n = args.checkpoints or tl_hub.default_count(repo)
        inside = sum(repo.window.lo_tokens <= c.label <= repo.window.hi_tokens for c in tl_hub.choose(repo, n))
        print(f"  {inside} of {n} inside the known window ({repo.window.source})")
        run_dir = import_and_report(repo, n, hub, ref_ms, "checkpoint", len(checkpoint))
        print(fp16_cost(state, cfg, run_dir, tokenizer))


if __name__ == "__main__":
    main()
