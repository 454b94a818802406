#!/usr/bin/env bash
# Runs every study in sequence (about 2 hours on 2 cores); --skip-existing resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STUDIES=${STUDIES:-depth_ablation losses prior_off prior fit_vs_transfer encoders edge_distance layer_types train_size edge_width}
for study in $STUDIES; do
  $PY -m gmatch sweep experiments/configs/$study.yaml --out experiments/results/$study --skip-existing --quiet "$@"
done
