#!/usr/bin/env bash
# Builds everything and runs every test suite: pytest, then the C++ library, its GoogleTest
# suite, the TorchScript-from-C++ tests and the examples/cpp consumer through ctest
# (scripts/run_cpp_tests.sh). Arguments go to pytest. Both suites run even if the first
# fails; the exit status is non-zero if either did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
status=0
.venv/bin/python -m pytest -q tests "$@" || status=$?
bash scripts/run_cpp_tests.sh || status=$?
exit "$status"
