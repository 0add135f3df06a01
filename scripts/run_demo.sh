#!/usr/bin/env bash
# Builds everything and runs the main job: the sparsify demo on a pruned CNN
# (examples/python/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python examples/python/demo.py "$@"
