#!/usr/bin/env bash
# Issue 26's recipe experiments: each config in staging/issue26/configs trained in turn (resumable), one thread, niced.
# The config list is read again after each run, so a config added meanwhile is trained too.
set -u
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p staging/issue26/logs staging/issue26/runs
while :; do
  next=""
  for cfg in staging/issue26/configs/*.json; do
    name=$(basename "$cfg" .json)
    if [ ! -f "staging/issue26/runs/$name/.done" ]; then next=$cfg; break; fi
  done
  [ -n "$next" ] || break
  name=$(basename "$next" .json)
  nice -n 19 .venv/bin/python -m icl_core.training.train "$next" --out-dir staging/issue26/runs \
    >> "staging/issue26/logs/$name.log" 2>&1 || break  # a failing run stops the queue: read its log
  touch "staging/issue26/runs/$name/.done"
done
