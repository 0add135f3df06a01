// The Autograd kernel of an operator, from a torch::autograd::Function.
//
// Function::forward takes the context and then the operator's arguments in schema order
// (so its parameter list is the kernel signature, written once) and returns a Tensor, or a
// variable_list for an operator that returns a tuple of tensors. Register it with
//   m.impl("op", &AutogradKernel<OpFunction, decltype(ops::op)>::call);
//
// In backward, remember the two numberings torch uses: `ctx->needs_input_grad(i)` counts the
// defined tensor arguments only, while the returned list has one entry per argument.
#pragma once

#include <torch/autograd.h>

#include <tuple>
#include <type_traits>
#include <utility>

namespace torch_sparse_conv {

template <class Function, class Signature>
struct AutogradKernel;

template <class Function, class Result, class... Args>
struct AutogradKernel<Function, Result(Args...)> {
  static Result call(Args... args) {
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

}  // namespace torch_sparse_conv
