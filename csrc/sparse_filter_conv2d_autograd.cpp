// Autograd for sparse_filter_conv2d, in C++ so that LibTorch and TorchScript-from-C++
// callers get gradients too. The backward is its own operator
// (_sparse_filter_conv2d_backward) with its own device kernels and fake kernel.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <vector>

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                        const at::Tensor& col_idx, const at::Tensor& values,
                        at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, int64_t groups, c10::string_view method) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::sparse_filter_conv2d", "")
                       .typed<decltype(call_forward)>();
  return op.call(input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation,
                 groups, method);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torch_sparse_conv::_sparse_filter_conv2d_backward", "")
                       .typed<decltype(call_backward)>();
  return op.call(grad_output, input, row_ptr, col_idx, values, weight_size, stride, padding,
                 dilation, groups, output_mask);
}

class SparseFilterConv2dFunction
    : public torch::autograd::Function<SparseFilterConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const at::Tensor& values, const c10::optional<at::Tensor>& bias,
                            std::vector<int64_t> weight_size, std::vector<int64_t> stride,
                            std::vector<int64_t> padding, std::vector<int64_t> dilation,
                            int64_t groups, std::string method) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output = call_forward(input, row_ptr, col_idx, values, weight_size, bias,
                                     stride, padding, dilation, groups, method);
    ctx->save_for_backward({input, row_ptr, col_idx, values});
    ctx->saved_data["weight_size"] = weight_size;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(3),
                                      has_bias && ctx->needs_input_grad(4)};
    at::Tensor grad_input, grad_values, grad_bias;
    if (grad_outputs[0].defined() && (mask[0] || mask[1] || mask[2])) {
      std::tie(grad_input, grad_values, grad_bias) = call_backward(
          grad_outputs[0], saved[0], saved[1], saved[2], saved[3],
          ctx->saved_data["weight_size"].toIntVector(), ctx->saved_data["stride"].toIntVector(),
          ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
          ctx->saved_data["groups"].toInt(), mask);
    }
    return {grad_input, at::Tensor(), at::Tensor(), grad_values, grad_bias, at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor sparse_filter_conv2d_autograd(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method) {
  return SparseFilterConv2dFunction::apply(
      input, row_ptr, col_idx, values, bias,
      weight_size.vec(), stride.vec(), padding.vec(), dilation.vec(), groups,
      std::string(method));
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  m.impl("sparse_filter_conv2d", &torch_sparse_conv::sparse_filter_conv2d_autograd);
}
