// The launcher of every CUDA pipeline (see cuda/common/launch_shape.h), on the current stream
// (nvcc only).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "cuda/common/launch_shape.h"
#include "cuda/common/shared_memory_opt_in.cuh"

namespace torch_sparse_conv {

struct CudaLaunch {
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, const LaunchShape& shape, Args... args) const {
    allow_shared_memory(kernel, shape.shared_bytes);
    const dim3 grid(unsigned(shape.blocks_x), unsigned(shape.blocks_y));
    kernel<<<grid, unsigned(shape.threads), shape.shared_bytes,
             at::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace torch_sparse_conv
