#!/usr/bin/env bash
# Builds everything and runs every test suite (pytest; ctest once tests/cpp exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m pytest -q tests "$@"
