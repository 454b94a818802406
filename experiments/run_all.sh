#!/usr/bin/env bash
# Runs every study in sequence (about 4 hours on 2 cores); --skip-existing resumes.
# The analyses on runs/default: python -m experiments.{zero_shot,memory,assignment,grouped,transductive};
# paired differences of a sweep's cases: python -m experiments.paired (commands in experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STUDIES=${STUDIES:-$($PY -c "from experiments.common import SWEEPS; print(*SWEEPS)")}  # every experiments/configs/*.yaml
for study in $STUDIES; do
  $PY -m gmatch sweep experiments/configs/$study.yaml "$@" --out experiments/results/$study --skip-existing --quiet
done
