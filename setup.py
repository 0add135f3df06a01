"""Builds torch_sparse_conv's one extension, torch_sparse_conv._C.

CUDA sources are compiled whenever torch is a CUDA build and nvcc is found (no GPU needed),
so a CPU-only machine still proves they compile. Environment switches:
  TSC_WITH_CUDA=0    build the CPU kernels only
  TSC_WITH_CUDA=1    require the CUDA build (fail if nvcc or a CUDA torch is missing)
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;9.0")
  MAX_JOBS           parallel compile jobs (2 suits a 2-core machine)
  TSC_SANITIZE=1     AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU kernels
                     (-O1, implies TSC_WITH_CUDA=0). Build it apart from the normal install:
                       TSC_SANITIZE=1 python setup.py build --build-base build/sanitize-py-tmp \
                           --build-lib build/sanitize-py
                     and import it with LD_PRELOAD of gcc's libasan.so and libubsan.so
                     (scripts/run_sanitizer_tests.sh does both).
  TSC_SANITIZE_LIBRARY_DIR=<dir>  with TSC_SANITIZE=1: the operators come from the sanitized
                     C++ library CMake built in <dir> (cmake -DTSC_SANITIZE=ON, the same
                     flags); only the Python entry point is compiled and linked to it, so
                     the sanitized sources are compiled once for both test suites.

Package metadata lives here only; pyproject.toml names the build requirements (torch among
them, for builds with isolation). The wheel requires exactly the torch release that compiled
its extension (:func:`torch_requirement`).
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sanitize_build_wanted() -> bool:
    return os.environ.get("TSC_SANITIZE", "0").lower() in ("1", "true", "on")


# CMakeLists.txt's TSC_SANITIZE flags (-fno-inline: see there), appended after Python's own
# compile flags so that -O1 and -fno-wrapv win over its -O3 -fwrapv: under -fwrapv signed
# overflow is defined and UBSan would not check it.
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer", "-O1", "-fno-inline", "-g", "-fno-wrapv"]


def cuda_build_wanted() -> bool:
    if sanitize_build_wanted():
        return False  # the sanitizers check the CPU kernels; nvcc objects would not be
    switch = os.environ.get("TSC_WITH_CUDA", "auto").lower()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if switch in ("0", "false", "off"):
        return False
    if switch in ("1", "true", "on") and not available:
        raise RuntimeError(
            "TSC_WITH_CUDA=1 but the CUDA build is impossible: torch.version.cuda="
            f"{torch.version.cuda}, CUDA_HOME={CUDA_HOME}"
        )
    return available


def torch_requirement() -> str:
    """The installed package's torch requirement: the release that compiles the extension,
    exactly (torch's C++ ABI is not stable across releases: _C built against one fails to
    load, with undefined symbols, under another). torch.__version__ carries the build's local
    label ("2.11.0+cu130" from PyPI, whose distribution version is plain "2.11.0"); a
    requirement with it would match no wheel on PyPI, so it is dropped. "torch==2.11.0" still
    matches the local builds of that release ("+cpu", "+cu126", ...) under PEP 440."""
    return "torch==" + torch.__version__.split("+", 1)[0]


# Optional dependencies by use: compat's numpy / scipy in and out; the benchmarks' progress
# bar, peers, plots and the whole-model suite's ResNet-50 (python -m torch_sparse_conv.bench;
# requirements-dev.txt pins them all). torchvision is pinned here too: each release is built
# against one torch release, the one pinned above.
EXTRAS = {
    "compat": ["numpy", "scipy"],
    "bench": ["numpy", "scipy", "tqdm", "matplotlib", "torchvision==0.26.0"],
}


def sanitized_library_dir():
    """TSC_SANITIZE_LIBRARY_DIR, for a sanitized build (None otherwise)."""
    directory = os.environ.get("TSC_SANITIZE_LIBRARY_DIR")
    if not directory or not sanitize_build_wanted():
        return None
    directory = os.path.abspath(directory)
    if not os.path.exists(os.path.join(directory, "libtorch_sparse_conv.so")):
        raise RuntimeError(f"TSC_SANITIZE_LIBRARY_DIR={directory} holds no "
                           "libtorch_sparse_conv.so (build it with cmake -DTSC_SANITIZE=ON)")
    return directory


def extension():
    with_cuda = cuda_build_wanted()
    # Sources sit by family and role (csrc/<family>/cpu/..., cuda/<family>/...); every include
    # names its file from the repository root ("csrc/common/output_buffer_cache.h").
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    libraries, library_dirs = [], []
    # -fopenmp: at::parallel_for is an OpenMP region in torch's CPU builds; without the flag
    # the pragma is ignored and every kernel runs on one thread.
    cxx_flags = ["-O3", "-std=c++17", "-Wall", "-Wno-psabi", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if sanitize_build_wanted():
        cxx_flags += SANITIZE_FLAGS
        link_flags += ["-fsanitize=address,undefined"]
        library_dir = sanitized_library_dir()
        if library_dir:
            sources = [os.path.join("csrc", "python_module.cpp")]
            libraries, library_dirs = ["torch_sparse_conv"], [library_dir]
            link_flags += [f"-Wl,-rpath,{library_dir}"]  # python_module.cpp calls into it
    macros = []
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join("cuda", "**", "*.cu"), recursive=True))
        macros.append(("TSC_WITH_CUDA", "1"))
        return CUDAExtension(
            "torch_sparse_conv._C",
            sources,
            include_dirs=[ROOT, os.path.join(ROOT, "csrc")],
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            libraries=["cusparse"],
            extra_link_args=link_flags,
        )
    return CppExtension(
        "torch_sparse_conv._C",
        sources,
        include_dirs=[ROOT, os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        libraries=libraries,
        library_dirs=library_dirs,
        extra_link_args=link_flags,
    )


setup(
    name="torch_sparse_conv",
    version="0.1.0",
    description="Sparse-filter and sparse-input (Toeplitz) 2D convolution operators for PyTorch",
    packages=find_packages(include=["torch_sparse_conv", "torch_sparse_conv.*"]),
    # py.typed (PEP 561): type checkers read the package's annotations.
    package_data={"torch_sparse_conv": ["py.typed"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=[torch_requirement()],
    extras_require=EXTRAS,
)
