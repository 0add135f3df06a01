#!/usr/bin/env bash
# One-time (and idempotent) set-up on a fresh machine: a virtual environment in .venv with
# the pinned torch and test tools, then the extension built in place. Re-running rebuilds
# only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Downloads from PyPI are large (torch's CUDA wheels are hundreds of MB) and a CI run once
# failed on a connection cut mid-wheel: pip resumes a cut download and retries a failed
# connection, and the whole command is tried three times before the set-up gives up.
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    .venv/bin/python -m pip install --quiet --retries 10 --timeout 60 "$@" && return 0
    echo "setup_env: pip install $* failed (attempt $attempt of 3)" >&2
    sleep $((attempt * 15))
  done
  return 1
}
pip_install --upgrade pip
# pip >= 25.1 resumes an interrupted download; the upgraded pip above has the option.
pip_install --resume-retries 20 -r requirements-dev.txt
# sparse_convolution's own test suite ships in its sdist only: tests/toeplitz/
# test_compat_package_suite.py runs it against compat. The version requirements-dev.txt pins.
SC_VERSION=$(sed -n 's/^sparse_convolution==\([^ ]*\).*/\1/p' requirements-dev.txt)
if [ ! -f ".venv/peer-sdists/sparse_convolution-$SC_VERSION.tar.gz" ]; then
  .venv/bin/python -m pip download --quiet --retries 10 --no-deps --no-binary :all: \
    "sparse_convolution==$SC_VERSION" -d .venv/peer-sdists
fi
# 2-core machines: two compile jobs; CUDA sources (when nvcc and a CUDA torch exist) for
# the named architectures only.
export MAX_JOBS=${MAX_JOBS:-2}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
.venv/bin/python -m pip install --quiet --no-build-isolation -e .
.venv/bin/python -c "import torch, torch_sparse_conv as t; print('torch_sparse_conv built: torch', torch.__version__, '| CUDA kernels compiled for CUDA', t.cuda_version_compiled() or 'none')"
