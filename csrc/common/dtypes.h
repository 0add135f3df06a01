// The dtypes the operators of both families take: float32, float64, float16 and bfloat16, on
// every device. The CUDA kernels compute float16 and bfloat16 in float32 registers; the CPU
// kernels are float32 and float64 code, and reduced-precision calls run the float32 code
// (csrc/common/reduced_precision.h). The Python wrappers' copy of this rule is
// torch_sparse_conv/_arguments.py.
#pragma once

#include <ATen/ATen.h>

namespace torch_sparse_conv {

inline bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
         dtype == at::kBFloat16;
}

// "<op>: <what> must be float32, float64, float16 or bfloat16, got ..."
inline void check_supported_dtype(const at::Tensor& tensor, const char* op, const char* what) {
  TORCH_CHECK(is_supported_dtype(tensor.scalar_type()), op, ": ", what,
              " must be float32, float64, float16 or bfloat16, got ", tensor.scalar_type(),
              " on ", tensor.device());
}

}  // namespace torch_sparse_conv
