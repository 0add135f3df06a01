// sparse_filter_conv2d's CPU kernel (forward.cpp), also called directly by the CPU backward:
// the gradient of the input at stride 1 is this convolution with the transposed filter
// (pattern.h, transposed_filter), so it runs on the forward's fast layouts.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

at::Tensor sparse_filter_conv2d_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx, const at::Tensor& values,
                                    at::IntArrayRef weight_size,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view method_name,
                                    const c10::optional<at::Tensor>& residual = c10::nullopt,
                                    bool relu = false);

// The same without epilogue, sharing the input's lanes layout through *lanes_layout where it
// ran the 'direct' method with the batch in the vector lanes: set to the layout it laid out,
// or read instead of laying the input out where it already holds one of this input (direct.h);
// elsewhere left alone. (The input gradient's convolutions of one grad_output share it; the
// autograd path's forward keeps the input's for the backward through
// _sparse_filter_conv2d_keeping_input_layout.)
at::Tensor sparse_filter_conv2d_cpu_sharing_layout(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method_name, at::Tensor* lanes_layout);

}  // namespace torch_sparse_conv
