#!/usr/bin/env bash
# DeepSparse as a benchmark peer of the sparse-filter suites, in a virtual environment of its
# own (.venv-deepsparse, git-ignored): deepsparse 1.8.0 needs numpy < 2 and onnx < 1.15,
# which cannot share .venv with torch 2.11's numpy 2.4. The benchmark never imports it: it
# starts torch_sparse_conv/bench/deepsparse_worker.py with this venv's python and talks to it
# over stdin/stdout (bench/deepsparse_peer.py). Idempotent; nothing else uses this venv.
#
#   bash scripts/setup_deepsparse.sh          # then: python -m torch_sparse_conv.bench run ...
#   DEEPSPARSE_VENV=/elsewhere bash scripts/setup_deepsparse.sh   # the bench reads the same var
#
# Pins: deepsparse 1.8.0, its last release with a binary (1.9.0 does not install, below),
# numpy 1.26.4 (deepsparse 1.8 requires numpy < 2), onnx 1.14.1 (it requires onnx < 1.15;
# 1.14.1 has CPython 3.11 wheels). deepsparse 1.8.0 ships wheels for CPython 3.8-3.11 only,
# hence PYTHON (default python3.11).
#
# Tried 2026-12-01 (Python 3.11.7): deepsparse==1.9.0 is a 6 kB source-only release whose
# build step only prints that DeepSparse reached end-of-life in June 2025 and exits 1 (pip:
# "Failed building wheel for deepsparse"). So 1.8.0 (March 2024) is the last engine there is,
# and it is no longer maintained: a peer to measure against, not a dependency to build on.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEEPSPARSE_VENV:-.venv-deepsparse}
PYTHON=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "deepsparse==1.8.0" "numpy==1.26.4" "onnx==1.14.1"
# DeepSparse and sparsezoo send usage analytics unless told not to; the bench's machines
# reach no such host anyway, and the worker sets the same variable.
NM_DISABLE_ANALYTICS=1 "$VENV/bin/python" -c "import deepsparse, numpy, onnx; print('deepsparse', deepsparse.__version__, '| numpy', numpy.__version__, '| onnx', onnx.__version__, '| in $VENV')"
