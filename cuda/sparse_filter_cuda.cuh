// The entry points each sparse-filter .cu file provides to the dispatcher in
// sparse_filter_conv2d_cuda.cu (the kernels themselves are in sparse_filter_kernels.cuh).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "sparse_filter_geometry.h"
#include "sparse_filter_kernels.cuh"
#include "sparse_filter_packed_cache.h"

// float, double, half and bfloat16 (the last two accumulate in float).
#define TSC_DISPATCH_CUDA_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace torch_sparse_conv {

// 'direct' forward into `output` (N, C_out, H_out, W_out), contiguous. input, values and
// bias contiguous; bias may be undefined.
void sparse_filter_direct_forward_cuda(const at::Tensor& input, PackedFilterFacts& facts,
                                       const at::Tensor& row_ptr, const at::Tensor& col_idx,
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
at::Tensor sparse_filter_spmm_forward_cuda(const at::Tensor& input, PackedFilterFacts& facts,
                                           const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                           const at::Tensor& values, const at::Tensor& bias,
                                           const SparseFilterGeometry& g);
// The kept values' gradient by cuSPARSE SDDMM, sampled at the weight's pattern.
at::Tensor sparse_filter_sddmm_grad_values_cuda(const at::Tensor& grad_output,
                                                const at::Tensor& input,
                                                PackedFilterFacts& facts,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const SparseFilterGeometry& g);

}  // namespace torch_sparse_conv
