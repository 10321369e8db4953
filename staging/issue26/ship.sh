#!/usr/bin/env bash
# Ship issue 26's five runs once all are finished: prose ICL scores where a run predates the prose set, copy to
# checkpoints/ without resume states, then the stored analyses. Re-measure the README's claims afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="attn1 attn1-smeared attn2 attn2-smeared attn3"
for name in $RUNS; do
  test -f "staging/issue26/runs/$name/.done" || { echo "$name is not finished" >&2; exit 1; }
done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for name in $RUNS; do
  nice -n 10 .venv/bin/python -m icl_core.analysis.evaluation "staging/issue26/runs/$name"  # no-op when scored
done
for name in $RUNS; do
  rm -rf "checkpoints/$name.new"
  cp -r "staging/issue26/runs/$name" "checkpoints/$name.new"
  rm -f "checkpoints/$name.new"/resume.* "checkpoints/$name.new"/.done "checkpoints/$name.new"/.analysed \
    "checkpoints/$name.new"/.*.tmp
  rm -rf "checkpoints/$name" && mv "checkpoints/$name.new" "checkpoints/$name"
done
for name in $RUNS; do  # .analysed: its analyses were stored in staging already (analyse.sh), copied with it
  [ -f "staging/issue26/runs/$name/.analysed" ] && continue
  nice -n 10 .venv/bin/python -m icl_core.analysis.precompute "checkpoints/$name" --threads 1
done
for name in $RUNS; do  # the shipped configs become the ones these runs were trained by (compact, as before)
  sed -i -e 's/"total_steps": 12288/"total_steps": 24576/' -e 's/"lr_schedule": "constant"/"lr_schedule": "cosine"/' \
    -e 's/"dense_to_step": 4000/"dense_to_step": 6000/' "configs/$name.json"
done
du -sh checkpoints
