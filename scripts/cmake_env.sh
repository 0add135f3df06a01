# Sourced by the scripts that build with CMake (run_cpp_tests.sh, run_sanitizer_tests.sh):
# from the repository root, sets ROOT, JOBS (MAX_JOBS, default 2), PYTHON (.venv's), TORCH_PREFIX
# (torch's CMake prefix), and CMAKE / CTEST: the system's CMake when it is 3.18 or newer, else
# PyPI's wheel installed into .venv.
ROOT=$PWD
JOBS=${MAX_JOBS:-2}
PYTHON=$ROOT/.venv/bin/python
TORCH_PREFIX=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')

cmake_is_recent() {
  local version
  version=$(cmake --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -1) || return 1
  [ "$(printf '%s\n' 3.18 "$version" | sort -V | head -1)" = 3.18 ]
}
CMAKE=cmake
if ! cmake_is_recent; then
  [ -x "$ROOT/.venv/bin/cmake" ] || "$PYTHON" -m pip install --quiet "cmake>=3.18"
  CMAKE=$ROOT/.venv/bin/cmake
fi
CTEST=$(dirname "$(command -v "$CMAKE")")/ctest
