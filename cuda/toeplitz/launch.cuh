// The CUDA launcher of the pipelines, and what cuda/toeplitz/matrix.cu provides to
// cuda/toeplitz/conv2d.cu (nvcc only). The kernels' frame
// geometry is in cuda/toeplitz/frame.cuh, the device-side CSR checks in csrc/common/csr_device_facts.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <tuple>

#include "csrc/common/csr_device_facts.h"
#include "cuda/common/shared_memory_opt_in.cuh"
#include "cuda/toeplitz/frame.cuh"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {

// The launcher of the pipelines (toeplitz_*_pipeline.cuh), on the current stream.
struct CudaLaunch {
  template <typename Kernel, typename... Args>
  void operator()(Kernel kernel, int64_t work, Args... args) const {
    kernel<<<toeplitz_blocks_for(work), kToeplitzThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // A kernel on `blocks` blocks.
  template <typename Kernel, typename... Args>
  void blocks(Kernel kernel, int64_t blocks, int threads, size_t shared_bytes,
              Args... args) const {
    allow_shared_memory(kernel, shared_bytes);
    kernel<<<unsigned(blocks), threads, shared_bytes, at::cuda::getCurrentCUDAStream()>>>(
        args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// T, the doubly-block-Toeplitz matrix of `kernel` (float32/float64, contiguous, on the GPU):
// CSR (H*W, H_out*W_out) with sorted int64 columns, the same layout as the CPU build.
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cuda(
    const at::Tensor& kernel, const ToeplitzGeometry& g);

// X @ T by cuSPARSE SpGEMM (torch's CSR matmul), as CSR with sorted int64 columns.
std::tuple<at::Tensor, at::Tensor, at::Tensor> multiply_by_toeplitz_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    const ToeplitzGeometry& g);

}  // namespace torch_sparse_conv
