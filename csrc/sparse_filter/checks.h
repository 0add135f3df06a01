// Argument checks of the sparse-filter operators (forward and backward), and the geometry
// they derive from the arguments.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sparse_filter/epilogue.h"
#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

// Validates every argument of sparse_filter_conv2d (shapes, dtypes, devices; not the CSR
// contents, see check_csr_contents) and returns the geometry.
SparseFilterGeometry check_sparse_filter_conv2d_args(
    const at::Tensor& input,
    const at::Tensor& row_ptr,
    const at::Tensor& col_idx,
    const at::Tensor& values,
    at::IntArrayRef weight_size,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// The epilogue's arguments (epilogue.h): a residual of the output's shape, with input's
// dtype and device, strided.
Epilogue check_epilogue(const c10::optional<at::Tensor>& residual, bool relu,
                        const at::Tensor& input, const SparseFilterGeometry& g);

// The backward's extra arguments: grad_output of the forward's output shape, input's dtype
// and device.
void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                       const SparseFilterGeometry& g);

// row_ptr / col_idx as a CSR matrix with `taps` columns (csrc/common/csr_check.h), so no
// kernel can read outside the input or the values. O(C_out + nnz), on every call.
void check_csr_contents(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t taps);

}  // namespace torch_sparse_conv
