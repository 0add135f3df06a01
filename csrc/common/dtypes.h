// The dtypes the kernels of both families compute in: float32 and float64 on every device,
// float16 and bfloat16 on CUDA only (the CPU kernels have no half-precision paths). The
// Python wrappers' copy of this rule is torch_sparse_conv/_arguments.py.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

inline bool is_supported_dtype(at::ScalarType dtype, const at::Device& device) {
  if (dtype == at::kFloat || dtype == at::kDouble) return true;
  return (dtype == at::kHalf || dtype == at::kBFloat16) && device.is_cuda();
}

// "<op>: <what> must be float32 or float64 (float16 and bfloat16 on CUDA only), got ..."
inline void check_supported_dtype(const at::Tensor& tensor, const char* op, const char* what) {
  TORCH_CHECK(is_supported_dtype(tensor.scalar_type(), tensor.device()), op, ": ", what,
              " must be float32 or float64 (float16 and bfloat16 on CUDA only), got ",
              tensor.scalar_type(), " on ", tensor.device());
}

}  // namespace torch_sparse_conv
