"""Import a published run from the command line, in the foreground: list, choose, download, convert and evaluate
(what the Models page's background import does, icl_core.tasks.imports)."""

from __future__ import annotations

import argparse
import sys

from icl_core.analysis.evaluation import estimated_seconds, evaluate_snapshot
from icl_core.errors import ICLError
from icl_core.storage import tl_hub


def main(argv: list[str] | None = None) -> int:
    """python -m icl_core.tasks.import_cli REPO [--checkpoints N]: import and evaluate a published run, here."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("repo", help="e.g. NeelNanda/Attn_Only_2L512W_C4_Code")
    parser.add_argument("--revision", default=None)
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=None,
        help=f"how many (default: {tl_hub.DEFAULT_CHECKPOINTS} or what the disk cap allows)",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask before downloading")
    parser.add_argument(
        "--tokens-per-step", type=int, default=None,
        help="step-labelled checkpoints: tokens a training step saw (default: the run's own, where known)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        repo = tl_hub.list_repo(args.repo, args.revision)
        chosen = tl_hub.choose(repo, args.checkpoints or tl_hub.default_count(repo))
        print(f"{repo.repo_id}: {tl_hub.describe(repo, chosen, estimated_seconds(repo.model_config, len(chosen)))}")
        if not args.yes and input("download? [y/N] ").strip().lower() != "y":
            return 1
        run_dir = tl_hub.import_checkpoints(
            repo, chosen, progress=lambda p: print(p.message, flush=True), tokens_per_step=args.tokens_per_step,
            on_snapshot=evaluate_snapshot,
        )  # fmt: skip
    except ICLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ready: {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
