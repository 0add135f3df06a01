#!/usr/bin/env bash
# Short device call: build, then (most valuable first) the crash backtrace, the half-precision
# failure details, the probes, and the rest of the CUDA tests. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
# 2026-11-24: the image's /opt/gcc g++ built a library whose error paths crashed (a second
# copy of libstdc++'s stream code, see NOTES.md); prefer the system compiler when present.
if [ -x /usr/bin/g++ ] && [ -z "${CXX:-}" ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
echo "compiler: ${CXX:-default} ($(${CXX:-g++} --version | head -1))"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
arch=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
TSC_WITH_CUDA=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=$arch python3 setup.py build_ext --inplace \
  > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH=$PWD:/tmp/site
echo "== error from a CPU op"; timeout 60 python3 -c "
import torch, torch_sparse_conv as t
try: torch.ops.torch_sparse_conv.sparse_filter_conv2d(torch.randn(1,2,5,5), torch.tensor([0,1]), torch.tensor([99]), torch.ones(1), [1,2,3,3], None, [1,1],[0,0],[1,1],1,'direct')
except RuntimeError as e: print('cpu raised ok')
" 2>&1 | tail -3
timeout 60 python3 scripts/gpu/repro_bad_index.py > "$OUT/repro.txt" 2>&1; echo "repro rc=$?"
head -3 "$OUT/repro.txt"
timeout 60 cuda-gdb -batch -ex run -ex bt --args python3 scripts/gpu/repro_bad_index.py \
  > "$OUT/gdb.txt" 2>&1
grep -A30 "SIGSEGV" "$OUT/gdb.txt" | cut -c1-200 | head -34
timeout 60 python3 -m pytest -q -x -p no:cacheprovider --tb=short tests/sparse_filter \
  -k "cuda and half" > "$OUT/half.log" 2>&1; grep -E "^E |Error|error|passed|failed" "$OUT/half.log" | head -12
TSC_CUDA_OC_BLOCK=32 timeout 50 python3 scripts/gpu/probe_sparse_filter.py 64 direct spmm \
  > "$OUT/probe32.txt" 2>&1; cat "$OUT/probe32.txt"
TSC_CUDA_OC_BLOCK=16 timeout 40 python3 scripts/gpu/probe_sparse_filter.py 64 direct \
  > "$OUT/probe16.txt" 2>&1
timeout 80 python3 scripts/gpu/probe_toeplitz.py > "$OUT/toeplitz.txt" 2>&1; cat "$OUT/toeplitz.txt"
timeout 60 python3 -m pytest -q -p no:cacheprovider -rf --tb=line tests/toeplitz \
  tests/sparse_filter -k "cuda and not invalid and not half" > "$OUT/rest.log" 2>&1
tail -15 "$OUT/rest.log"
