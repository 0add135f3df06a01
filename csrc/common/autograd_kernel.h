// The Autograd kernel of an operator, from a torch::autograd::Function.
//
// Function::forward takes the context and then the operator's arguments in schema order
// (so its parameter list is the kernel signature, written once) and returns a Tensor, or a
// variable_list for an operator that returns a tuple of tensors. Register it with
//   m.impl("op", &AutogradKernel<OpFunction, &ops::op>::call);
// where ops::op is the operator's front (csrc/<family>/ops.h). A call that can record no
// gradient (grad mode off, or no tensor argument requiring grad: a kernel, an inference
// batch) goes straight to the kernel below autograd through that front: Function::apply
// builds a context, saved data and wrapped outputs even then, which cost as much as a small
// batch's whole convolution (measured: 20 of 50 microseconds of a batch-1 toeplitz_conv2d).
//
// In backward, remember the two numberings torch uses: `ctx->needs_input_grad(i)` counts the
// defined tensor arguments only, while the returned list has one entry per argument.
#pragma once

#include <torch/autograd.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace torch_sparse_conv {

namespace autograd_kernel_detail {

template <class T>
bool requires_grad(const T& argument) {
  if constexpr (std::is_same_v<T, at::Tensor>) {
    return argument.defined() && argument.requires_grad();
  } else if constexpr (std::is_same_v<T, std::optional<at::Tensor>>) {
    return argument.has_value() && argument->defined() && argument->requires_grad();
  } else {
    return false;
  }
}

template <class Function, auto kOp, class Signature>
struct Kernel;

template <class Function, auto kOp, class Result, class... Args>
struct Kernel<Function, kOp, Result(Args...)> {
  static Result call(Args... args) {
    if (!at::GradMode::is_enabled() ||
        !(requires_grad(static_cast<const std::decay_t<Args>&>(args)) || ...)) {
      at::AutoDispatchBelowADInplaceOrView guard;
      return kOp(args...);
    }
    if constexpr (std::is_same_v<Result, at::Tensor>) {
      return Function::apply(args...);
    } else {
      return as_tuple(Function::apply(args...),
                      std::make_index_sequence<std::tuple_size_v<Result>>());
    }
  }

 private:
  template <size_t... I>
  static Result as_tuple(const torch::autograd::variable_list& outputs,
                         std::index_sequence<I...>) {
    return Result(outputs[I]...);
  }
};

}  // namespace autograd_kernel_detail

template <class Function, auto kOp>
using AutogradKernel =
    autograd_kernel_detail::Kernel<Function, kOp, std::remove_pointer_t<decltype(kOp)>>;

}  // namespace torch_sparse_conv
