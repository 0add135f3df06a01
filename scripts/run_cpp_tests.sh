#!/usr/bin/env bash
# The C++ side of the test command (scripts/run_tests.sh calls it after pytest):
#   1. builds libtorch_sparse_conv with CMake against .venv's torch (CPU kernels; set
#      TSC_CMAKE_WITH_CUDA=ON for the CUDA ones) and installs it into build/install,
#   2. builds tests/cpp against that installed package, as a user would,
#   3. runs ctest there: the GoogleTest suite, the TorchScript tests (a fixture exports the
#      models from Python first) and examples/cpp, configured and built against the package.
# Needs .venv with torch and the Python extension (scripts/setup_env.sh makes both).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cmake_env.sh  # ROOT, JOBS, PYTHON, TORCH_PREFIX, CMAKE, CTEST

# GoogleTest. tests/cpp prefers its sources (/usr/src/googletest, shipped by Debian's and
# Ubuntu's libgtest-dev) and compiles them with torch's flags, so gtest and the tests agree
# on the C++ ABI whatever torch build is used; it falls back to an installed GTest package.
# A machine with neither gets libgtest-dev from apt when we may install packages (root, or
# password-less sudo): the distribution archive is the source CI machines reach, where
# fetching GitHub at configure time may not be. Otherwise stop and say what to install.
have_googletest() {
  [ -f "${GTEST_SOURCE_DIR:-/usr/src/googletest}/CMakeLists.txt" ] && return 0
  compgen -G "/usr/lib/*/cmake/GTest/GTestConfig.cmake" >/dev/null ||
    compgen -G "/usr/*lib*/cmake/GTest/GTestConfig.cmake" >/dev/null ||
    compgen -G "/usr/local/lib*/cmake/GTest/GTestConfig.cmake" >/dev/null
}
if ! have_googletest; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && sudo -n true 2>/dev/null && SUDO="sudo -n"
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "GoogleTest not found: installing libgtest-dev with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libgtest-dev >/dev/null
  fi
  have_googletest || {
    echo "GoogleTest not found: install libgtest-dev (or point GTEST_SOURCE_DIR at its sources)" >&2
    exit 1
  }
fi
GTEST_ARGS=()
[ -n "${GTEST_SOURCE_DIR:-}" ] && GTEST_ARGS=(-DGTEST_SOURCE_DIR="$GTEST_SOURCE_DIR")

# A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit even for a
# CPU-only library; say so plainly instead of failing deep inside Caffe2Config.cmake.
if "$PYTHON" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' &&
    ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "torch is a CUDA build, and LibTorch's CMake config needs the CUDA toolkit (nvcc)," \
       "which is missing: install it or use a CPU build of torch" >&2
  exit 1
fi

mkdir -p build
echo "== C++ library (CMake) -> build/install"
"$CMAKE" -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DTSC_WITH_CUDA="${TSC_CMAKE_WITH_CUDA:-OFF}" >build/cmake-configure.log 2>&1 ||
  { cat build/cmake-configure.log; exit 1; }
"$CMAKE" --build build/cmake -j"$JOBS"
"$CMAKE" --install build/cmake --prefix build/install >/dev/null

echo "== C++ tests (GoogleTest, TorchScript, examples/cpp)"
"$CMAKE" -S tests/cpp -B build/cpp-tests -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$ROOT/build/install;$TORCH_PREFIX" -DTSC_PYTHON="$PYTHON" \
  "${GTEST_ARGS[@]}" >build/cpp-tests-configure.log 2>&1 ||
  { cat build/cpp-tests-configure.log; exit 1; }
"$CMAKE" --build build/cpp-tests -j"$JOBS"
cd build/cpp-tests
# JOBS tests at a time (fixtures still run before the tests that need them): the emulated
# kernels under ASan (two minutes, one core) overlap the rest.
"$CTEST" --output-on-failure -j"$JOBS"
