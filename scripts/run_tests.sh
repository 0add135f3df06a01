#!/usr/bin/env bash
# Builds everything and runs every test suite: pytest, then the C++ library, its GoogleTest
# suite, the TorchScript-from-C++ tests and the examples/cpp consumer through ctest
# (scripts/run_cpp_tests.sh), then the CPU kernels under AddressSanitizer and
# UndefinedBehaviorSanitizer: the GoogleTest API tests and a pytest subset against sanitized
# builds (scripts/run_sanitizer_tests.sh; TSC_SANITIZER_TESTS=0 skips them). Arguments go to
# the first pytest run. Every part runs even if an earlier one fails; the exit status is
# non-zero if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
status=0
.venv/bin/python -m pytest -q tests "$@" || status=$?
bash scripts/run_cpp_tests.sh || status=$?
if [ "${TSC_SANITIZER_TESTS:-1}" != 0 ]; then
  bash scripts/run_sanitizer_tests.sh || status=$?
fi
exit "$status"
