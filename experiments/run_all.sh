#!/usr/bin/env bash
# Runs every study in sequence (about 4 hours on 2 cores); --skip-existing resumes.
# The analyses on runs/default: python -m experiments.{zero_shot,memory,assignment,grouped,transductive}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STUDIES=${STUDIES:-reading depth_ablation lexical encoders losses prior_off prior fit_vs_transfer genre_aux edge_distance layer_types train_size edge_width refit_schedule attn_prior}
for study in $STUDIES; do
  $PY -m gmatch sweep experiments/configs/$study.yaml "$@" --out experiments/results/$study --skip-existing --quiet
done
