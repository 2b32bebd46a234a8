#!/usr/bin/env bash
# Set up (or reuse) the environment, lint, type-check (mypy), and run the whole test suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$RH_ROOT"
ruff check robusthyper tests benchmarks
mypy  # [tool.mypy] in pyproject.toml: robusthyper/, as Python 3.10
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "test: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$rc"
