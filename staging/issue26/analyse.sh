#!/usr/bin/env bash
# Store the slow analyses of finished staging runs ahead of shipping (ship.sh then skips them): niced, one thread.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for name in "$@"; do
  run="staging/issue26/runs/$name"
  [ -f "$run/.done" ] && [ ! -f "$run/.analysed" ] || continue
  nice -n 19 .venv/bin/python -m icl_core.analysis.precompute "$run" --threads 1 >> "staging/issue26/logs/$name.analyse.log" 2>&1 \
    && touch "$run/.analysed"
done
