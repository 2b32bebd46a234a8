#!/usr/bin/env bash
# The main job on the built-in data (mnist5k, offline): train the default models (det, mcd, bbb, bhn, bbh),
# attack them all with the quick suite (attacks/quick.toml), write the HTML report, and print its path.
#
# Re-running is quick: a recipe whose checkpoint already exists in the store is not retrained
# (`train --if-missing`), and the sweep resumes from the cells its run folder already records (a killed
# demo picks up where it stopped). The store is ./models (or $ROBUSTHYPER_STORE); the run folder is
# reports/demo (or $RH_DEMO_OUT). Extra arguments go to `robusthyper train` (e.g. --device cuda).
#
# Usage: bash scripts/demo.sh [extra options for `robusthyper train`]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RH_ROOT"
started=$SECONDS
models=(det mcd bbb bhn bbh)
for recipe in "${models[@]}"; do
    robusthyper train "$recipe" --if-missing "$@"
done
model_args=()
for recipe in "${models[@]}"; do
    model_args+=(--model "$recipe")
done
out="${RH_DEMO_OUT:-reports/demo}"
robusthyper sweep quick "${model_args[@]}" --out "$out"
echo "main job done in $((SECONDS - started)) s; the report:"
echo "$(cd "$out" && pwd)/index.html"
