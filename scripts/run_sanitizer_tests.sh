#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/run_tests.sh
# calls it after pytest and ctest):
#   1. builds libtorch_sparse_conv with -DTSC_SANITIZE=ON (CPU kernels only) into
#      build/sanitize-cmake and the GoogleTest binary against it into build/sanitize-cpp-tests,
#      and runs ctest's cpp_api there (tests/cpp test_sparse_filter.cpp + test_toeplitz.cpp);
#   2. builds a sanitized copy of the Python package (TSC_SANITIZE=1 setup.py build) into
#      build/sanitize-py, apart from the editable install in .venv, its operators those of the
#      library of step 1 (TSC_SANITIZE_LIBRARY_DIR: the sources are compiled once), and runs a pytest subset
#      with it first on PYTHONPATH and gcc's libasan/libubsan preloaded into Python. A plugin
#      (scripts/sanitizers/check_sanitized_import.py) stops the run unless torch_sparse_conv._C
#      is imported from build/sanitize-py and the sanitizer runtimes are loaded.
# Any sanitizer report aborts the process it happens in, so its test fails. A failed build
# stops the script; the test runs all run, and the exit status is non-zero if any failed.
# MAX_JOBS (default 2) compile jobs. Arguments go to both pytest runs (a -k replaces the
# subset's).
# Needs .venv with torch (scripts/setup_env.sh) and GoogleTest (scripts/run_cpp_tests.sh
# installs it when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cmake_env.sh  # ROOT, JOBS, PYTHON, TORCH_PREFIX, CMAKE, CTEST

# The runtimes of the compiler that builds both artefacts (CMake's and torch's default, c++).
CXX_COMPILER=${CXX:-c++}
LIBASAN=$("$CXX_COMPILER" -print-file-name=libasan.so)
LIBUBSAN=$("$CXX_COMPILER" -print-file-name=libubsan.so)
for runtime in "$LIBASAN" "$LIBUBSAN"; do
  [ -f "$runtime" ] || {
    echo "$CXX_COMPILER has no $(basename "$runtime"): install GCC's sanitizer runtimes" >&2
    exit 1
  }
done

START=$(date +%s)
stage() { echo "== [$(($(date +%s) - START)) s] $*"; }

# The first report ends the process (abort_on_error: a core-dump-free SIGABRT, so a test's
# subprocess dies visibly); UBSan aborts anyway (-fno-sanitize-recover) and prints its stack.
# Neither run needs suppressions: torch itself is not instrumented, only our code.
ASAN_BASE=halt_on_error=1:abort_on_error=1:check_initialization_order=1:strict_init_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:report_error_type=1

mkdir -p build
status=0

stage "sanitized C++ library -> build/sanitize-cmake"
"$CMAKE" -S . -B build/sanitize-cmake -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DTSC_WITH_CUDA=OFF -DTSC_SANITIZE=ON \
  >build/sanitize-cmake-configure.log 2>&1 || { cat build/sanitize-cmake-configure.log; exit 1; }
"$CMAKE" --build build/sanitize-cmake -j"$JOBS"

stage "sanitized GoogleTest suite -> build/sanitize-cpp-tests"
GTEST_ARGS=()
[ -n "${GTEST_SOURCE_DIR:-}" ] && GTEST_ARGS=(-DGTEST_SOURCE_DIR="$GTEST_SOURCE_DIR")
"$CMAKE" -S tests/cpp -B build/sanitize-cpp-tests -DCMAKE_BUILD_TYPE=Release \
  -DTorchSparseConv_DIR="$ROOT/build/sanitize-cmake" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DTSC_PYTHON="$PYTHON" "${GTEST_ARGS[@]}" >build/sanitize-cpp-tests-configure.log 2>&1 ||
  { cat build/sanitize-cpp-tests-configure.log; exit 1; }
"$CMAKE" --build build/sanitize-cpp-tests -j"$JOBS" --target test_torch_sparse_conv

stage "sanitized Python extension -> build/sanitize-py"
# CPU kernels only (setup.py forces TSC_WITH_CUDA=0 under TSC_SANITIZE); setup.py build, not
# pip: the editable install in .venv stays as it is. Only the Python entry point is compiled:
# it links the sanitized library above.
TSC_SANITIZE=1 TSC_SANITIZE_LIBRARY_DIR="$ROOT/build/sanitize-cmake" MAX_JOBS=$JOBS \
  "$PYTHON" setup.py --quiet build --build-base build/sanitize-py-tmp \
  --build-lib build/sanitize-py >build/sanitize-py-build.log 2>&1 ||
  { cat build/sanitize-py-build.log; exit 1; }

stage "ctest cpp_api under ASan + UBSan (leaks checked too)"
(cd build/sanitize-cpp-tests &&
  ASAN_OPTIONS=$ASAN_BASE:detect_leaks=1 "$CTEST" --output-on-failure -R '^cpp_api$') ||
  status=$?

# Python: both families' test folders and the CPU instruction-set test, except what runs no
# CPU kernel path of its own (torch.compile, whose inductor would also start compilers under
# the preloaded runtimes; the tests/common files: benchmarks, README quickstart, fuzzers,
# threads; the CUDA tests, which skip: a CPU-only build cannot serve them on a GPU machine)
# and the comparison with the sparse_convolution package (numba-compiled; compat's paths
# are covered by its own tests). Leaks are not checked (the interpreter and torch keep memory
# until exit). Subprocesses the tests start inherit all of this and run sanitized too.
# PYTHONSAFEPATH: `python -m` and `python -c` would otherwise put the working directory, and
# with it the source tree's torch_sparse_conv and its unsanitized _C, ahead of PYTHONPATH.
export PYTHONPATH="$ROOT/build/sanitize-py:$ROOT/scripts/sanitizers${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1
export CUDA_VISIBLE_DEVICES=""  # a CPU-only build: CUDA tests skip, also on a GPU machine
export TSC_SANITIZED_BUILD=$ROOT/build/sanitize-py
SANITIZE_PRELOAD="$LIBASAN $LIBUBSAN${LD_PRELOAD:+ $LD_PRELOAD}"
SUBSET=(tests/sparse_filter tests/toeplitz tests/common/test_cpu_isa.py)
CACHE_TESTS="output_cache or reuse_freed_memory or outputs_own_their_memory or large_output or large_input"
# Reports must survive the abort: pytest captures only sys.stdout/stderr (--capture=sys), so
# what the runtimes write to fd 2 reaches the log, and ASan writes its reports, also those of
# the tests' subprocesses (whose stderr the tests capture), to files
# build/sanitize-logs/<run>/asan.<pid>, printed after the run. (UBSan ignores log_path when
# ASan is loaded: its reports go to stderr.)
rm -rf build/sanitize-logs
pytest_sanitized() {
  local logs=$ROOT/build/sanitize-logs/$1 rc=0
  shift
  mkdir -p "$logs"
  ASAN_OPTIONS=$ASAN_BASE:detect_leaks=0:log_path=$logs/asan LD_PRELOAD=$SANITIZE_PRELOAD \
    "$PYTHON" -m pytest -q --capture=sys -p no:cacheprovider -p check_sanitized_import "$@" ||
    rc=$?
  [ "$rc" -ne 5 ] || rc=0  # 5: no test selected (a -k given to this script)
  if compgen -G "$logs/*" >/dev/null; then
    echo "== sanitizer reports:"
    for log in "$logs"/*; do echo "-- $log"; cat "$log"; done
    [ "$rc" -ne 0 ] || rc=1
  fi
  return "$rc"
}

# Toeplitz outputs of 64 KiB and more and sparse-filter results of 32 MiB and more come from a
# cache of freed outputs, where ASan sees neither the exact size nor the free: turned off
# here, so every output is a plain allocation (the tests that need the cache skip)...
stage "pytest subset under ASan + UBSan, output cache off"
TSC_OUTPUT_CACHE_MB=0 pytest_sanitized subset "${SUBSET[@]}" \
  -k "not compile and not sparse_convolution_package and not reuse_freed_memory" "$@" ||
  status=$?
# ...and on for the tests of the cache itself.
stage "pytest: the output cache's tests under ASan + UBSan, cache on"
pytest_sanitized output-cache tests/toeplitz/test_output_cache.py \
  tests/sparse_filter/test_large_outputs.py -k "$CACHE_TESTS" "$@" ||
  status=$?

stage "done (status $status)"
exit "$status"
