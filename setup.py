"""Builds torch_sparse_conv's one extension, torch_sparse_conv._C.

CUDA sources are compiled whenever torch is a CUDA build and nvcc is found (no GPU needed),
so a CPU-only machine still proves they compile. Environment switches:
  TSC_WITH_CUDA=0    build the CPU kernels only
  TSC_WITH_CUDA=1    require the CUDA build (fail if nvcc or a CUDA torch is missing)
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;9.0")
  MAX_JOBS           parallel compile jobs (2 suits a 2-core machine)
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def cuda_build_wanted() -> bool:
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


def extension():
    with_cuda = cuda_build_wanted()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    # -fopenmp: at::parallel_for is an OpenMP region in torch's CPU builds; without the flag
    # the pragma is ignored and every kernel runs on one thread.
    cxx_flags = ["-O3", "-std=c++17", "-Wall", "-Wno-psabi", "-fopenmp"]
    macros = []
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join("cuda", "*.cu")))
        macros.append(("TSC_WITH_CUDA", "1"))
        return CUDAExtension(
            "torch_sparse_conv._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            libraries=["cusparse"],
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "torch_sparse_conv._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="torch_sparse_conv",
    version="0.1.0",
    description="Sparse-filter and sparse-input (Toeplitz) 2D convolution operators for PyTorch",
    packages=find_packages(include=["torch_sparse_conv", "torch_sparse_conv.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
)
