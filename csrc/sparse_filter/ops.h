// The sparse-filter operators: each one's schema, and its front, the one C++ function that
// calls it through the dispatcher (csrc/common/dispatch.h). Autograd, the public C++ API and
// the tests call the fronts. ops.cpp registers the schemas; the kernels are registered per
// dispatch key: CPU in csrc/sparse_filter/cpu/, CUDA in cuda/sparse_filter/, Autograd in
// csrc/sparse_filter/autograd.cpp, Meta/fake in torch_sparse_conv/sparse_filter/.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

namespace torch_sparse_conv {
namespace schema {

// Dense weight (C_out, C_in/groups, kH, kW) -> CSR over output channels: row_ptr (C_out + 1),
// col_idx (nnz) into C_in/groups * kH * kW, values (nnz). Indices are int64 so no layer size
// can overflow them.
constexpr const char* kPackSparseFilter =
    "pack_sparse_filter(Tensor weight) -> (Tensor row_ptr, Tensor col_idx, Tensor values)";

// F.conv2d(input, W, bias, stride, padding, dilation, groups) where W is the CSR-packed
// weight of shape weight_size = (C_out, C_in/groups, kH, kW).
// method: 'auto' | 'direct' | 'unfold' (CPU) | 'spmm' (CUDA) | 'dense'.
// The epilogue (epilogue.h): residual, a tensor of the output's shape, is added to the
// result, then ReLU is applied if relu: relu(conv + bias + residual), as the unfused ops.
constexpr const char* kSparseFilterConv2d =
    "sparse_filter_conv2d(Tensor input, Tensor row_ptr, Tensor col_idx, Tensor values, "
    "int[4] weight_size, Tensor? bias, int[2] stride, int[2] padding, int[2] dilation, "
    "int groups, str method, Tensor? residual=None, bool relu=False) -> Tensor";

// sparse_filter_conv2d that also returns the input as its CPU kernel laid it out, where the
// values' gradient of this call would read that layout (csrc/sparse_filter/cpu/backward.h);
// else input_layout is undefined (None). The autograd kernel calls it in place of
// sparse_filter_conv2d on plain CPU tensors whose values need a gradient, and saves the
// layout for the backward. A CPU kernel only; its fake kernel raises (the layout's size
// depends on the CPU kernel that runs): traced code calls sparse_filter_conv2d.
constexpr const char* kSparseFilterConv2dKeepingInputLayout =
    "_sparse_filter_conv2d_keeping_input_layout(Tensor input, Tensor row_ptr, Tensor col_idx, "
    "Tensor values, int[4] weight_size, Tensor? bias, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups, str method, Tensor? residual=None, bool relu=False) "
    "-> (Tensor output, Tensor input_layout)";

// Gradients of sparse_filter_conv2d: input, the kept values only, bias. output_mask says
// which of the three are wanted; the others come back empty. input_layout: the one that
// _sparse_filter_conv2d_keeping_input_layout returned for this input, read by the values'
// gradient instead of laying the input out again (CPU only; None to lay it out).
constexpr const char* kSparseFilterConv2dBackward =
    "_sparse_filter_conv2d_backward(Tensor grad_output, Tensor input, Tensor row_ptr, "
    "Tensor col_idx, Tensor values, int[4] weight_size, int[2] stride, int[2] padding, "
    "int[2] dilation, int groups, bool[3] output_mask, Tensor? input_layout=None) "
    "-> (Tensor grad_input, Tensor grad_values, Tensor grad_bias)";

// nn.MaxPool2d's output (without indices) of an NCHW float32/float64 CPU tensor, computed
// in one pass over it (csrc/sparse_filter/cpu/max_pool.cpp): what ChannelsLastMaxPool2d
// (torch_sparse_conv/sparse_filter/pooling.py) calls in inference. No autograd: inputs that
// need a gradient take nn.MaxPool2d's path there.
constexpr const char* kMaxPool2dNchw =
    "_max_pool2d_nchw(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
    "int[2] dilation, bool ceil_mode) -> Tensor";

}  // namespace schema

namespace ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack_sparse_filter(const at::Tensor& weight);

at::Tensor sparse_filter_conv2d(const at::Tensor& input, const at::Tensor& row_ptr,
                                const at::Tensor& col_idx, const at::Tensor& values,
                                at::IntArrayRef weight_size,
                                const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, c10::string_view method,
                                const c10::optional<at::Tensor>& residual = c10::nullopt,
                                bool relu = false);

std::tuple<at::Tensor, at::Tensor> sparse_filter_conv2d_keeping_input_layout(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method, const c10::optional<at::Tensor>& residual, bool relu);

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask,
    const c10::optional<at::Tensor>& input_layout = c10::nullopt);

}  // namespace ops
}  // namespace torch_sparse_conv
