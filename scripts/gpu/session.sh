#!/usr/bin/env bash
# One device call for issue 19: build with the system compiler for the local GPU, then the
# stages named in STAGES (default all, most valuable first), each under its own time limit:
#   repro   an error message with an integer from a CUDA op (crashed on 2026-11-24)
#   dense   where the CUDA 'dense' method (auto's) spends its time beyond cuDNN's
#   cuda    pytest's CUDA tests (-k cuda), under pytest-xdist
#   bench   python -m torch_sparse_conv.bench --device cuda: sparse-filter and toeplitz
#   all     the whole pytest suite, in parallel (pytest-xdist, XDIST workers)
#   ctest   the C++ library with its CUDA kernels (CMake), GoogleTest, TorchScript, examples
# Every log goes under $OUT/run/, packed into $OUT/gpu_run.tar.gz at the end (the device
# tool brings back at most 8 files). Carry .whl (sparse_convolution's wheel: no network
# there) and, for ctest, .gtest (a copy of /usr/src/googletest).
# Usage on the device: STAGES="repro cuda bench" bash scripts/gpu/session.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tsc_out}
LOGS=$OUT/run; mkdir -p "$LOGS"
STAGES=${STAGES:-repro dense cuda bench all ctest}
pack() { tar -C "$OUT" -czf "$OUT/gpu_run.tar.gz" run; }
trap pack EXIT
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site
fi
start=$(date +%s)
TESTS=none OUT=$LOGS bash scripts/gpu/build_and_test.sh || exit 1
echo "build and import: $(( $(date +%s) - start )) s"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'python', sys.version.split()[0], torch.cuda.get_device_name())" | tee "$LOGS/versions.txt"
stage() { [[ " $STAGES " == *" $1 "* ]]; }
summary() { grep -E "^[0-9]+ (passed|failed)|passed|failed|error" "$1" | tail -3; }

if stage repro; then
  echo "== repro: an out-of-range index on CUDA"
  timeout 60 python3 scripts/gpu/repro_bad_index.py > "$LOGS/repro.txt" 2>&1
  echo "rc=$?"; head -3 "$LOGS/repro.txt"
fi
if stage dense; then
  echo "== the CUDA dense path's per-call cost"
  timeout 90 python3 scripts/gpu/probe_dense_overhead.py > "$LOGS/dense_overhead.txt" 2>&1
  echo "rc=$?"; head -7 "$LOGS/dense_overhead.txt"
fi
if stage cuda; then
  echo "== pytest -k cuda"
  # Under xdist: a worker that crashes fails its test and is replaced, the run goes on
  # (2026-12-04 one segfault ended the whole run and its failure report).
  timeout "${CUDA_TESTS_S:-240}" python3 -m pytest -q -p no:cacheprovider -rf --tb=short \
    --timeout=120 -n "${CUDA_XDIST:-4}" -k cuda tests > "$LOGS/pytest_cuda.log" 2>&1
  echo "rc=$?"; grep -E "^FAILED|passed|failed" "$LOGS/pytest_cuda.log" | tail -15
fi
if stage bench; then
  for suite in sparse-filter toeplitz; do
    echo "== bench $suite --device cuda"
    timeout "${BENCH_S:-300}" python3 -m torch_sparse_conv.bench --suite "$suite" --device cuda \
      --rounds "${BENCH_ROUNDS:-5}" --out "$LOGS/bench" --no-plots > "$LOGS/bench_$suite.log" 2>&1
    echo "rc=$?"; tail -3 "$LOGS/bench_$suite.log"
  done
fi
if stage all; then
  echo "== the whole pytest suite (xdist, ${XDIST:-12} workers)"
  timeout "${ALL_TESTS_S:-300}" python3 -m pytest -q -p no:cacheprovider -rf --tb=short \
    --timeout=300 -n "${XDIST:-12}" tests > "$LOGS/pytest_all.log" 2>&1
  echo "rc=$?"; grep -E "^FAILED|passed|failed" "$LOGS/pytest_all.log" | tail -20
fi
if stage ctest; then
  echo "== ctest (CMake library with CUDA kernels)"
  # scripts/cmake_env.sh takes .venv's python; there the image's python3 holds torch.
  mkdir -p .venv/bin && ln -sf "$(command -v python3)" .venv/bin/python
  [ -d .gtest ] && export GTEST_SOURCE_DIR=$PWD/.gtest
  TSC_CMAKE_WITH_CUDA=ON MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=$(python3 -c \
    "import torch; print('%d.%d' % torch.cuda.get_device_capability())") \
    timeout "${CTEST_S:-400}" bash scripts/run_cpp_tests.sh > "$LOGS/ctest.log" 2>&1
  echo "rc=$?"; grep -E "tests passed|tests failed|Failed|Passed" "$LOGS/ctest.log" | tail -15
fi
echo "total: $(( $(date +%s) - start )) s"
