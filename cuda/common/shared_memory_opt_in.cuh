// Dynamic shared memory beyond the default 48 KiB per block, for the CUDA launchers of both
// operator families (nvcc only).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstddef>

namespace torch_sparse_conv {

// Lets `kernel` take `shared_bytes` of dynamic shared memory on the current device. Beyond
// the default 48 KiB it is allowed the device's whole per-block limit: the same value every
// time, so calls from several host threads never lower it under one another's launch.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t shared_bytes) {
  if (shared_bytes <= 48 * 1024) return;
  const int limit = int(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));
}

}  // namespace torch_sparse_conv
