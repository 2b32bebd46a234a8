#!/usr/bin/env bash
# Create (or reuse) the virtual environment for this checkout and install robusthyper into it.
# Source it: `source scripts/setup.sh` leaves the venv activated and $RH_VENV set.
#
# The venv lives outside the clone, in a cache keyed by a hash of the dependency files, so a fresh
# clone (CI) reuses it in seconds; changing pyproject.toml or the constraints builds a new one.
set -euo pipefail

RH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RH_PYTHON="${ROBUSTHYPER_PYTHON:-python3}"
RH_CONSTRAINTS="${ROBUSTHYPER_CONSTRAINTS:-$RH_ROOT/scripts/constraints.txt}"
RH_CACHE="${ROBUSTHYPER_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/robusthyper}"

if ! command -v "$RH_PYTHON" >/dev/null 2>&1; then
    echo "setup: '$RH_PYTHON' not found; install Python >= 3.10 or set ROBUSTHYPER_PYTHON" >&2
    exit 2
fi

key=$(cat "$RH_ROOT/pyproject.toml" "$RH_CONSTRAINTS" "$RH_ROOT/scripts/setup.sh" \
      <("$RH_PYTHON" -c 'import sys, platform; print(sys.version, platform.machine())') \
      | sha256sum | cut -c1-16)
RH_VENV="$RH_CACHE/venv-$key"

if [ ! -f "$RH_VENV/.complete" ]; then
    echo "setup: building virtual environment $RH_VENV (once per dependency change)" >&2
    rm -rf "$RH_VENV"
    mkdir -p "$RH_CACHE"
    "$RH_PYTHON" -m venv "$RH_VENV"
    pip_() { "$RH_VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
    pip_ install --upgrade pip setuptools wheel -c "$RH_CONSTRAINTS" || pip_ install --upgrade pip setuptools wheel
    # torch/torchvision first and alone, so the exact local-disk pins win before anything pulls a torch.
    pip_ install -c "$RH_CONSTRAINTS" torch torchvision
    # [ray]: the Ray executor's tests (tests/test_ray.py) run in CI too.
    pip_ install -c "$RH_CONSTRAINTS" "$RH_ROOT[dev,ray]"
    # torchattacks declares requests~=2.25.1 and would downgrade requests/urllib3; it never imports them.
    pip_ install -c "$RH_CONSTRAINTS" --no-deps torchattacks
    # The project itself is (re)installed editable below on every run; drop this copy.
    pip_ uninstall -y robusthyper
    touch "$RH_VENV/.complete"
fi

# Point the shared venv at *this* checkout (seconds; no dependency resolution).
if ! out=$("$RH_VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps --no-build-isolation \
           -e "$RH_ROOT" 2>&1); then
    echo "$out" >&2
    exit 1
fi

# shellcheck disable=SC1091
source "$RH_VENV/bin/activate"
export RH_VENV RH_ROOT
