// float16 and bfloat16 on CPU, and autocast, for the kernels of both families.
//
// The CPU kernels are written for float32 and float64. A float16 or bfloat16 call runs the
// float32 kernel: floating arguments are widened on the way in (ATen's vectorised
// conversions: AVX-512 where the CPU has it) and each floating result is rounded once on the
// way out, so products and sums are accumulated in float32, as oneDNN's reduced-precision
// convolutions do. Register a CPU kernel through it with
//   m.impl("op", computed_in_float32<&kernel>());
// (The sparse-filter forward's 'direct' method, the hot path, reads and writes float16 and
// bfloat16 itself, widening as it lays out its input; its other methods go through this.)
//
// Autocast: the ops follow nn.Conv2d's policy, "lower_precision_fp": under
// torch.autocast(device) every floating argument is cast to the autocast dtype (float16 on
// CUDA, bfloat16 on CPU by default) before the op runs, with autocast's cache of cast
// weights. Register with
//   m.impl("op", autocast_lower_precision<c10::DeviceType::CPU, &ops::op>());
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace torch_sparse_conv {

namespace reduced_precision {

inline bool is_reduced(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16;
}

// The dtype a call runs in: the one reduced dtype that every floating tensor argument has,
// or nullopt (a float32/float64 call, or mixed dtypes, which the kernel's own checks name).
class CallDtype {
 public:
  template <class T>
  void see(const T& argument) {
    if constexpr (std::is_same_v<T, at::Tensor>) {
      see_tensor(argument);
    } else if constexpr (std::is_same_v<T, std::optional<at::Tensor>>) {
      if (argument.has_value()) see_tensor(*argument);
    }
  }

  std::optional<at::ScalarType> reduced() const {
    if (seen_ && !mixed_ && is_reduced(dtype_)) return dtype_;
    return std::nullopt;
  }

 private:
  void see_tensor(const at::Tensor& tensor) {
    if (!tensor.defined() || !tensor.is_floating_point()) return;
    if (!seen_) {
      seen_ = true;
      dtype_ = tensor.scalar_type();
    } else if (dtype_ != tensor.scalar_type()) {
      mixed_ = true;
    }
  }

  bool seen_ = false, mixed_ = false;
  at::ScalarType dtype_ = at::kFloat;
};

inline at::Tensor widen_tensor(const at::Tensor& tensor) {
  return tensor.defined() && is_reduced(tensor.scalar_type()) ? tensor.to(at::kFloat) : tensor;
}

// A tensor argument widened to float32; any other argument as it is.
template <class T>
decltype(auto) widen(const T& argument) {
  if constexpr (std::is_same_v<T, at::Tensor>) {
    return widen_tensor(argument);
  } else if constexpr (std::is_same_v<T, std::optional<at::Tensor>>) {
    return argument.has_value() ? std::optional<at::Tensor>(widen_tensor(*argument))
                                : std::optional<at::Tensor>();
  } else {
    return argument;
  }
}

inline at::Tensor narrow(const at::Tensor& tensor, at::ScalarType dtype) {
  return tensor.defined() && tensor.is_floating_point() ? tensor.to(dtype) : tensor;
}
template <class... T>
std::tuple<T...> narrow(const std::tuple<T...>& results, at::ScalarType dtype) {
  return std::apply([&](const auto&... r) { return std::tuple<T...>(narrow(r, dtype)...); },
                    results);
}

}  // namespace reduced_precision

template <class Signature, Signature* kernel>
struct ComputeInFloat32;

template <class Result, class... Args, Result (*kernel)(Args...)>
struct ComputeInFloat32<Result(Args...), kernel> {
  static Result call(Args... args) {
    reduced_precision::CallDtype call_dtype;
    (call_dtype.see(args), ...);
    const std::optional<at::ScalarType> reduced = call_dtype.reduced();
    if (!reduced) return kernel(args...);
    return reduced_precision::narrow(kernel(reduced_precision::widen(args)...), *reduced);
  }
};

// The CPU kernel to register for `kernel`: itself for float32 and float64 calls, the float32
// computation for float16 and bfloat16 ones.
template <auto kernel>
constexpr auto computed_in_float32() {
  return &ComputeInFloat32<std::remove_pointer_t<decltype(kernel)>, kernel>::call;
}

template <c10::DeviceType device, auto front>
constexpr auto autocast_lower_precision() {
  using Signature = std::remove_pointer_t<decltype(front)>;
  return &at::autocast::WrapFunction<at::autocast::CastPolicy::lower_precision_fp, device,
                                     Signature, Signature, front>::type::call;
}

}  // namespace torch_sparse_conv
