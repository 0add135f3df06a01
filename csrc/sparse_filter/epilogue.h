// What sparse_filter_conv2d may do to its output before it stores it: add a residual (a
// tensor of the output's shape) and apply ReLU, as a ResNet block does after its last
// convolution: out = relu(conv(input) + bias + residual). Both are optional arguments of the
// operator (residual=None, relu=False).
//
// The CPU 'direct' kernels apply it where they write their final sums (the lanes, the 1x1
// and the one-sample layouts), on data still in cache: the add and the ReLU then cost one
// read of the residual instead of two passes over the output in memory. The other methods
// and CUDA apply it as such a pass, by ATen ops, after the convolution.
//
// Both ways compute what the unfused ops compute, bit for bit: the convolution's output in
// its dtype, plus the residual rounded to that dtype (float16/bfloat16 added in float32, as
// ATen adds them), then ReLU, which keeps NaN and -0.0 as torch.relu does.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace torch_sparse_conv {

struct Epilogue {
  at::Tensor residual;  // undefined: none; else the output's shape, dtype and device
  bool relu = false;

  bool empty() const { return !residual.defined() && !relu; }
  // The residual laid out as an output in `format` is (a copy where it is not).
  at::Tensor residual_in(at::MemoryFormat format) const {
    return residual.defined() ? residual.contiguous(format) : at::Tensor();
  }
};

// The epilogue as a pass over the whole output, in place: ATen's add and ReLU.
inline void apply_epilogue(at::Tensor& output, const Epilogue& epilogue) {
  if (epilogue.residual.defined()) output.add_(epilogue.residual);
  if (epilogue.relu) output.relu_();
}

// The epilogue on n outputs at dst, whose residual elements are at residual (nullptr: none).
template <typename T>
inline void apply_epilogue_run(T* dst, const T* residual, int64_t n, bool relu) {
  using acc_t = at::opmath_type<T>;
  if (residual != nullptr) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(acc_t(dst[i]) + acc_t(residual[i]));
  }
  if (relu) {
    // Not max(x, 0): NaN stays NaN and -0.0 stays -0.0, as in torch.relu.
    for (int64_t i = 0; i < n; ++i) dst[i] = dst[i] < T(0) ? T(0) : dst[i];
  }
}

}  // namespace torch_sparse_conv
