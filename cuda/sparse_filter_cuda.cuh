// Shared pieces of the sparse-filter CUDA kernels: the geometry as kernel arguments, launch
// sizes, and the entry points each .cu file provides to the dispatcher in
// sparse_filter_conv2d_cuda.cu.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "sparse_filter_geometry.h"
#include "sparse_filter_packed_cache.h"

// float, double, half and bfloat16 (the last two accumulate in float).
#define TSC_DISPATCH_CUDA_FLOATS(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

namespace torch_sparse_conv {

constexpr int kCudaThreads = 256;

inline int64_t cuda_blocks_for(int64_t work) {
  return std::min<int64_t>((work + kCudaThreads - 1) / kCudaThreads, int64_t(1) << 30);
}

// The geometry as plain values for kernels.
struct ConvShape {
  int64_t batch, in_channels, in_h, in_w, out_channels, groups, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w;
};

inline ConvShape to_conv_shape(const SparseFilterGeometry& g) {
  return {g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.groups, g.kernel_h,
          g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w,
          g.out_h, g.out_w};
}

// The output channel of every stored tap (nnz, int64), from the row pointers.
at::Tensor row_of_nonzeros(const at::Tensor& row_ptr, int64_t rows, int64_t nnz);

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
