#!/usr/bin/env bash
# The main job on the built-in data (mnist5k, offline): train the default models.
# Usage: bash scripts/demo.sh [extra options for `robusthyper train`]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RH_ROOT"
for recipe in det mcd bbb bhn bbh; do
    robusthyper train "$recipe" "$@"
done
robusthyper models
