// Included first by every kernel header (cuda/*_kernels.cuh): with nvcc the kernels are CUDA
// code, with a host compiler they run under the CPU emulation of cuda/common/kernel_emulation.h
// (tests).
#pragma once

#ifdef __CUDACC__
// The block's dynamic shared memory as bytes, aligned for any element type.
#define TSC_DYNAMIC_SHARED_MEMORY(name) extern __shared__ __align__(16) unsigned char name[]
#else
#include "cuda/common/kernel_emulation.h"
#endif
