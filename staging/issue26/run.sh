#!/usr/bin/env bash
# Issue 26's recipe experiments: each config in staging/issue26/configs trained in turn (resumable), one thread, niced.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for cfg in staging/issue26/configs/*.json; do
  name=$(basename "$cfg" .json)
  [ -f "staging/issue26/runs/$name/.done" ] && continue
  nice -n 19 .venv/bin/python -m icl_core.training.train "$cfg" --out-dir staging/issue26/runs >> "staging/issue26/logs/$name.log" 2>&1 \
    && touch "staging/issue26/runs/$name/.done"
done
