// Autograd for sparse_filter_conv2d, in C++ so that LibTorch and TorchScript-from-C++
// callers get gradients too. The backward is its own operator
// (_sparse_filter_conv2d_backward) with its own device kernels and fake kernel.
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <initializer_list>
#include <tuple>

#include "csrc/common/autograd_kernel.h"
#include "csrc/sparse_filter/ops.h"

namespace torch_sparse_conv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Whether a call below autograd with these tensors reaches the CPU kernels themselves: no
// fake or functional tensors, no tensor subclass or dispatch mode (their Python keys), no
// other device. Only such a call keeps the input's layout for the backward: the other
// callers (torch.compile's tracing among them) see the plain operator. BackendSelect and
// ADInplaceOrView, always in a thread's included keys, pass these operators through.
bool reaches_the_cpu_kernels(std::initializer_list<at::Tensor> tensors) {
  const c10::impl::LocalDispatchKeySet local = c10::impl::tls_local_dispatch_key_set();
  c10::DispatchKeySet keys = local.included_;
  for (const at::Tensor& t : tensors) {
    if (t.defined()) keys = keys | t.key_set();
  }
  keys = (keys - local.excluded_)
             .remove(c10::DispatchKey::BackendSelect)
             .remove(c10::DispatchKey::ADInplaceOrView);
  return keys.highestPriorityTypeId() == c10::DispatchKey::CPU;
}

class SparseFilterConv2dFunction
    : public torch::autograd::Function<SparseFilterConv2dFunction> {
 public:
  // The operator's arguments, in schema order.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const at::Tensor& values, at::IntArrayRef weight_size,
                            const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            c10::string_view method, const c10::optional<at::Tensor>& residual,
                            bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Where the values need a gradient, the CPU forward keeps the input's lanes layout for
    // the backward's values' gradient where that reads it (a padded copy of the input until
    // the backward, which then need not lay it out again). Decided by requires_grad, fixed
    // when the graph is built, not by needs_input_grad: during a backward that answers for
    // the gradients that backward asks for, and a checkpointed forward recomputed there must
    // save what the first run saved.
    at::Tensor output, input_layout;
    if (values.requires_grad() &&
        reaches_the_cpu_kernels({input, row_ptr, col_idx, values, bias.value_or(at::Tensor()),
                                 residual.value_or(at::Tensor())})) {
      std::tie(output, input_layout) = ops::sparse_filter_conv2d_keeping_input_layout(
          input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation, groups,
          method, residual, relu);
    } else {
      output = ops::sparse_filter_conv2d(input, row_ptr, col_idx, values, weight_size, bias,
                                         stride, padding, dilation, groups, method, residual,
                                         relu);
    }
    // After a ReLU the output says where the gradient passes (as torch.relu's backward).
    ctx->save_for_backward(
        {input, row_ptr, col_idx, values, relu ? output : at::Tensor(), input_layout});
    ctx->saved_data["weight_size"] = weight_size.vec();
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["has_residual"] = residual.has_value() && residual->defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const bool has_residual = ctx->saved_data["has_residual"].toBool();
    // needs_input_grad counts the tensor arguments given: input 0, row_ptr 1, col_idx 2,
    // values 3, then bias and residual where given.
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(3),
                                      has_bias && ctx->needs_input_grad(4)};
    const bool residual_grad = has_residual && ctx->needs_input_grad(has_bias ? 5 : 4);
    at::Tensor grad = grad_outputs[0];
    if (grad.defined() && saved[4].defined()) grad = at::threshold_backward(grad, saved[4], 0);
    at::Tensor grad_input, grad_values, grad_bias;
    if (grad.defined() && (mask[0] || mask[1] || mask[2])) {
      std::tie(grad_input, grad_values, grad_bias) = ops::sparse_filter_conv2d_backward(
          grad, saved[0], saved[1], saved[2], saved[3],
          ctx->saved_data["weight_size"].toIntVector(), ctx->saved_data["stride"].toIntVector(),
          ctx->saved_data["padding"].toIntVector(), ctx->saved_data["dilation"].toIntVector(),
          ctx->saved_data["groups"].toInt(), mask,
          saved[5].defined() ? c10::optional<at::Tensor>(saved[5]) : c10::nullopt);
    }
    // One entry per argument, in schema order.
    variable_list grads(13);
    grads[0] = grad_input;
    grads[3] = grad_values;
    grads[5] = grad_bias;
    if (residual_grad) grads[11] = grad;  // the sum's gradient, where ReLU let it through
    return grads;
  }
};

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, Autograd, m) {
  using namespace torch_sparse_conv;
  m.impl("sparse_filter_conv2d",
         &AutogradKernel<SparseFilterConv2dFunction, &ops::sparse_filter_conv2d>::call);
}
