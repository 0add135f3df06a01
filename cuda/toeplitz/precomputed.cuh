// What cuda/toeplitz/matrix.cu (the 'precomputed' method) provides to cuda/toeplitz/conv2d.cu,
// and the headers both launch with (nvcc only).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "csrc/common/csr_check.h"
#include "cuda/common/launch.cuh"
#include "cuda/toeplitz/frame.cuh"
#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {

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
