// The entry points each sparse-filter .cu file provides to the dispatcher in
// cuda/sparse_filter/conv2d.cu, and the headers they launch with (nvcc only). The kernels are
// in cuda/sparse_filter/kernels.cuh, their host side in cuda/sparse_filter/pipeline.cuh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "csrc/sparse_filter/geometry.h"
#include "cuda/sparse_filter/pipeline.cuh"
#include "csrc/sparse_filter/pattern.h"
#include "cuda/common/launch.cuh"

namespace torch_sparse_conv {

// 'direct' forward into `output` (N, C_out, H_out, W_out), contiguous. input, values and
// bias contiguous; bias may be undefined.
void sparse_filter_direct_forward_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                       const at::Tensor& col_idx,
                                       const at::Tensor& values, const at::Tensor& bias,
                                       const SparseFilterGeometry& g, at::Tensor& output);

// Direct gradients (no floating-point atomics): of the input, of the kept values.
at::Tensor sparse_filter_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& row_of,
                                         const at::Tensor& col_idx, const at::Tensor& values,
                                         const SparseFilterGeometry& g);
at::Tensor sparse_filter_grad_values_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const at::Tensor& row_of, const at::Tensor& col_idx,
                                          const SparseFilterGeometry& g);

// 'spmm': unfold, then cuSPARSE SpMM with the CSR weight, batch chunk by batch chunk.
at::Tensor sparse_filter_spmm_forward_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                           const at::Tensor& col_idx,
                                           const at::Tensor& values, const at::Tensor& bias,
                                           const SparseFilterGeometry& g);
// The kept values' gradient by cuSPARSE SDDMM, sampled at the weight's pattern.
at::Tensor sparse_filter_sddmm_grad_values_cuda(const at::Tensor& grad_output,
                                                const at::Tensor& input,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const SparseFilterGeometry& g);

}  // namespace torch_sparse_conv
