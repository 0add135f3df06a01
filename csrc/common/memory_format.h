// Outputs keep their input's memory format, as ATen's convolutions do: a channels-last input
// gives a channels-last output. The kernels write NCHW; this converts once, and costs nothing
// when the input is NCHW. The fake kernels follow the same rule
// (torch_sparse_conv/sparse_filter/_fake.py).
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

inline at::Tensor in_memory_format_of(const at::Tensor& input, const at::Tensor& output) {
  return output.contiguous(input.suggest_memory_format());
}

}  // namespace torch_sparse_conv
