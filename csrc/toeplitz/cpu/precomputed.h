// The 'precomputed' method of the sparse-input convolution on CPU: T, the doubly-block-Toeplitz
// matrix of a kernel, and the product out = X @ T of the CSR batch X with it.
//
// T has one row per input pixel p = (a, b) (H*W rows) and one column per output pixel
// (H_out*W_out columns). Row p holds kernel tap (u, t) at output pixel
// (a + u - offset_h, b + t - offset_w) for every tap landing inside the output, zeros of the
// kernel included: X @ T then has exactly the pattern of the direct method.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "csrc/toeplitz/geometry.h"

namespace torch_sparse_conv {

// T as CSR with sorted int64 columns, values of the kernel's dtype. kernel: contiguous, CPU.
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cpu(
    const at::Tensor& kernel, const ToeplitzGeometry& g);

// out = X @ T, X as CSR (B rows, columns already checked to lie in [0, T's rows)), T as CSR
// with out_cols columns. Returns CSR (B rows) with sorted int64 columns, written exact-size by
// a count pass, a prefix sum and a fill pass. T is checked where it is read (row pointers,
// column range, strictly increasing columns in a row): an invalid T raises, never reads out of
// bounds, and the check costs no more than the product itself.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_times_toeplitz_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    int64_t out_cols);

}  // namespace torch_sparse_conv
