#!/usr/bin/env bash
# Runs every study in sequence (about 90 minutes on 2 cores); --skip-existing resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for study in depth_ablation losses train_size prior prior_off fit_vs_transfer encoders layer_types edge_width edge_distance; do
  $PY -m gmatch sweep experiments/configs/$study.yaml --out experiments/results/$study --skip-existing --quiet "$@"
done
