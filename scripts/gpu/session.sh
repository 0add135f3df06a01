#!/usr/bin/env bash
# One device call: build, run the CUDA tests (FULL=1: every test), then the GPU probes.
# Usage on the device: bash scripts/gpu/session.sh   (writes logs under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site
fi
TESTS="${TESTS:-tests/sparse_filter tests/toeplitz tests/common/test_registration.py -k cuda}" \
  bash scripts/gpu/build_and_test.sh || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
echo "== bad-index repro"
timeout 120 python3 scripts/gpu/repro_bad_index.py > "$OUT/repro.txt" 2>&1
echo "rc=$?"; head -5 "$OUT/repro.txt"
if ! grep -q "raised as expected" "$OUT/repro.txt"; then
  timeout 180 cuda-gdb -batch -ex run -ex bt --args python3 scripts/gpu/repro_bad_index.py \
    > "$OUT/gdb.txt" 2>&1
  grep -A25 "SIGSEGV\|signal" "$OUT/gdb.txt" | head -40
fi
for block in ${OC_BLOCKS:-32}; do
  # The merged window (one staging for several output-channel blocks, up to 100 KiB of
  # shared memory) against windows kept within 48 KiB.
  for merged in ${MERGED_WINDOWS:-1 0}; do
    echo "== sparse filter, TSC_CUDA_OC_BLOCK=$block TSC_CUDA_MERGED_WINDOW=$merged"
    TSC_CUDA_OC_BLOCK=$block TSC_CUDA_MERGED_WINDOW=$merged timeout 150 \
      python3 scripts/gpu/probe_sparse_filter.py 64 direct spmm auto 2>&1 |
      tee -a "$OUT/probe_sparse_filter.txt"
  done
done
echo "== toeplitz"
timeout ${TOEPLITZ_S:-150} python3 scripts/gpu/probe_toeplitz.py 2>&1 | tee "$OUT/probe_toeplitz.txt"
