#!/usr/bin/env bash
# Issue 26's runs: trains the named configs of staging/issue26/configs in turn (resumable), one thread, niced.
# Two queues side by side use both cores:  run.sh attn2 attn3 &   run.sh attn1 attn1-smeared attn2-smeared &
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p staging/issue26/logs staging/issue26/runs
for name in "$@"; do
  [ -f "staging/issue26/runs/$name/.done" ] && continue
  nice -n 19 .venv/bin/python -m icl_core.training.train "staging/issue26/configs/$name.json" \
    --out-dir staging/issue26/runs >> "staging/issue26/logs/$name.log" 2>&1 || exit 1  # read its log
  touch "staging/issue26/runs/$name/.done"
done
