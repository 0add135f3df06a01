// Argument checks and geometry of the sparse-input (Toeplitz) convolution.
//
// Every image of the batch is one row of a CSR matrix (B, H*W), C-order flattened. The
// output follows scipy.signal.convolve2d(image, kernel, mode): a true convolution (kernel
// flipped), and output pixel (i, j) is pixel (i + offset_h, j + offset_w) of the 'full'
// result, with offset 0 ('full'), (k-1)//2 ('same', scipy's centring for even kernels) or
// k-1 ('valid').
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "csrc/common/csr_check.h"

namespace torch_sparse_conv {

enum class ToeplitzMode { Full, Same, Valid };
enum class ToeplitzMethod { Auto, Direct, Precomputed };

struct ToeplitzGeometry {
  int64_t batch = 0, in_h = 0, in_w = 0, kernel_h = 0, kernel_w = 0;
  int64_t out_h = 0, out_w = 0, offset_h = 0, offset_w = 0;
};

// The mode or method of that name, or nullopt (for callers that must not throw).
std::optional<ToeplitzMode> toeplitz_mode_named(c10::string_view mode);
std::optional<ToeplitzMethod> toeplitz_method_named(c10::string_view method);

ToeplitzMode parse_toeplitz_mode(c10::string_view mode);
// 'auto', 'direct' or 'precomputed'; the error names every valid method.
ToeplitzMethod parse_toeplitz_method(c10::string_view method);

// Geometry from the kernel's shape alone (batch left 0): checks image_shape, the kernel (2-D,
// non-empty, float32 / float64 / float16 / bfloat16) and the mode.
ToeplitzGeometry toeplitz_geometry(const at::Tensor& kernel, at::IntArrayRef image_shape,
                                   c10::string_view mode);
// The same from sizes (kernel_h x kernel_w, already known to be a 2-D kernel's).
ToeplitzGeometry toeplitz_geometry(int64_t kernel_h, int64_t kernel_w,
                                   at::IntArrayRef image_shape, c10::string_view mode);

// How the operators name their CSR arguments in errors (csrc/common/csr_check.h): the input
// batch x (crow, col; columns below H*W), a kept T (t_crow, t_col) and the forward's output
// pattern given to the backward (out_crow, out_col).
inline CsrNames input_csr_names(const char* op) { return {op, "x's ", "crow", "col", "H*W"}; }
inline CsrNames kept_matrix_csr_names() {
  return {"toeplitz_conv2d_precomputed", "invalid T: T's ", "t_crow", "t_col", "H_out*W_out"};
}
inline CsrNames output_pattern_csr_names() {
  return {"_toeplitz_conv2d_backward", "the output's ", "out_crow", "out_col", "H_out*W_out"};
}

// Validates shapes, dtypes, devices and the CSR contents (row pointers from 0 to nnz and
// non-decreasing, every column in [0, H*W)) and returns the geometry.
ToeplitzGeometry check_toeplitz_args(const at::Tensor& crow, const at::Tensor& col,
                                     const at::Tensor& values, const at::Tensor& kernel,
                                     at::IntArrayRef image_shape, c10::string_view mode);

// Shapes, dtypes and devices of a kept T (toeplitz_conv2d_precomputed): int64 row pointers of
// H*W + 1 entries, int64 columns, one value of x's dtype per column, all on x's device. The
// contents are checked by each backend where it reads them.
void check_toeplitz_matrix_args(const at::Tensor& t_crow, const at::Tensor& t_col,
                                const at::Tensor& t_values, const at::Tensor& values,
                                const ToeplitzGeometry& g);

// Shapes, dtypes and devices of _toeplitz_conv2d_backward's output pattern (int64 CSR of
// B + 1 rows) and of grad_out_values (one value of x's dtype per output entry), on x's device.
void check_toeplitz_backward_args(const at::Tensor& grad_out_values, const at::Tensor& out_crow,
                                  const at::Tensor& out_col, const at::Tensor& values,
                                  const ToeplitzGeometry& g);

}  // namespace torch_sparse_conv
