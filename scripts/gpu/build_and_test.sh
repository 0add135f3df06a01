#!/usr/bin/env bash
# On a lent GPU machine (torch preinstalled, no network): build the extension for the local
# GPU only, then run the CUDA tests (TESTS: pytest arguments, default the sparse filter's; FULL=1:
# the whole suite). Logs go to $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/tsc_out}; mkdir -p "$OUT"
PY=${PY:-python3}
# 2026-11-24: the image's /opt/gcc g++ built a library whose error paths crashed (a second
# copy of libstdc++'s stream code, see NOTES.md); prefer the system compiler when present.
if [ -x /usr/bin/g++ ] && [ -z "${CXX:-}" ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
echo "compiler: ${CXX:-default} ($(${CXX:-g++} --version | head -1))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
arch=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
start=$(date +%s)
TSC_WITH_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=$arch \
  $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s for sm_$arch"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torch_sparse_conv as t; print('cuda compiled', t.cuda_version_compiled(), t.__file__)"
tests=${TESTS:-tests/sparse_filter tests/common/test_registration.py -k cuda}
[ "${FULL:-0}" = 1 ] && tests=tests
[ "$tests" = none ] && exit 0  # build only (session.sh runs the tests itself)
$PY -m pytest -q -p no:cacheprovider -rf --tb=short --timeout=300 $tests > "$OUT/pytest.log" 2>&1; grep -E "passed|failed|^FAILED|^E  " "$OUT/pytest.log" | head -40
