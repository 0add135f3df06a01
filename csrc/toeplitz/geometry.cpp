#include "csrc/toeplitz/geometry.h"

#include <limits>
#include <optional>

#include "csrc/common/dtypes.h"

namespace torch_sparse_conv {

std::optional<ToeplitzMode> toeplitz_mode_named(c10::string_view mode) {
  if (mode == "full") return ToeplitzMode::Full;
  if (mode == "same") return ToeplitzMode::Same;
  if (mode == "valid") return ToeplitzMode::Valid;
  return std::nullopt;
}

std::optional<ToeplitzMethod> toeplitz_method_named(c10::string_view method) {
  if (method == "auto") return ToeplitzMethod::Auto;
  if (method == "direct") return ToeplitzMethod::Direct;
  if (method == "precomputed") return ToeplitzMethod::Precomputed;
  return std::nullopt;
}

ToeplitzMode parse_toeplitz_mode(c10::string_view mode) {
  const std::optional<ToeplitzMode> parsed = toeplitz_mode_named(mode);
  TORCH_CHECK(parsed.has_value(), "toeplitz_conv2d: mode must be 'full', 'same' or 'valid', got '",
              std::string(mode), "'");
  return *parsed;
}

ToeplitzMethod parse_toeplitz_method(c10::string_view method) {
  const std::optional<ToeplitzMethod> parsed = toeplitz_method_named(method);
  TORCH_CHECK_VALUE(parsed.has_value(), "toeplitz_conv2d: method must be one of 'auto', "
                    "'direct', 'precomputed', got '", std::string(method), "'");
  return *parsed;
}

ToeplitzGeometry toeplitz_geometry(const at::Tensor& kernel, at::IntArrayRef image_shape,
                                   c10::string_view mode) {
  TORCH_CHECK(kernel.dim() == 2, "toeplitz_conv2d: kernel must be 2-D (kH, kW), got ",
              kernel.dim(), " dimensions");
  check_supported_dtype(kernel, "toeplitz_conv2d", "kernel");
  return toeplitz_geometry(kernel.size(0), kernel.size(1), image_shape, mode);
}

ToeplitzGeometry toeplitz_geometry(int64_t kernel_h, int64_t kernel_w,
                                   at::IntArrayRef image_shape, c10::string_view mode_name) {
  const ToeplitzMode mode = parse_toeplitz_mode(mode_name);
  TORCH_CHECK(image_shape.size() == 2 && image_shape[0] > 0 && image_shape[1] > 0,
              "toeplitz_conv2d: image_shape must be two positive sizes (H, W), got ",
              image_shape);
  TORCH_CHECK(kernel_h > 0 && kernel_w > 0,
              "toeplitz_conv2d: kernel must not be empty, got shape [", kernel_h, ", ",
              kernel_w, "]");
  ToeplitzGeometry g;
  g.in_h = image_shape[0];
  g.in_w = image_shape[1];
  g.kernel_h = kernel_h;
  g.kernel_w = kernel_w;
  constexpr int64_t kMaxSide = int64_t(1) << 31;
  TORCH_CHECK(g.in_h < kMaxSide && g.in_w < kMaxSide && g.kernel_h < kMaxSide &&
                  g.kernel_w < kMaxSide,
              "toeplitz_conv2d: image_shape's and the kernel's sides must be below 2^31, got "
              "image_shape ", image_shape, " and kernel [", kernel_h, ", ", kernel_w, "]");
  switch (mode) {
    case ToeplitzMode::Full:
      g.out_h = g.in_h + g.kernel_h - 1;
      g.out_w = g.in_w + g.kernel_w - 1;
      break;
    case ToeplitzMode::Same:
      g.out_h = g.in_h;
      g.out_w = g.in_w;
      g.offset_h = (g.kernel_h - 1) / 2;
      g.offset_w = (g.kernel_w - 1) / 2;
      break;
    case ToeplitzMode::Valid:
      TORCH_CHECK_VALUE(g.kernel_h <= g.in_h && g.kernel_w <= g.in_w,
                        "toeplitz_conv2d: mode 'valid' needs a kernel no larger than the image "
                        "in every dimension, got kernel [", g.kernel_h, ", ", g.kernel_w,
                        "] for image_shape ", image_shape);
      g.out_h = g.in_h - g.kernel_h + 1;
      g.out_w = g.in_w - g.kernel_w + 1;
      g.offset_h = g.kernel_h - 1;
      g.offset_w = g.kernel_w - 1;
      break;
  }
  return g;
}

ToeplitzGeometry check_toeplitz_args(const at::Tensor& crow, const at::Tensor& col,
                                     const at::Tensor& values, const at::Tensor& kernel,
                                     at::IntArrayRef image_shape, c10::string_view mode) {
  ToeplitzGeometry g = toeplitz_geometry(kernel, image_shape, mode);
  TORCH_CHECK(crow.dim() == 1 && crow.size(0) >= 1 && crow.scalar_type() == at::kLong,
              "toeplitz_conv2d: x's row pointers must be a 1-D int64 tensor of B + 1 entries");
  TORCH_CHECK(col.dim() == 1 && col.scalar_type() == at::kLong,
              "toeplitz_conv2d: x's column indices must be a 1-D int64 tensor");
  TORCH_CHECK(values.dim() == 1 && values.size(0) == col.size(0),
              "toeplitz_conv2d: x's values must be 1-D with one entry per column index");
  check_supported_dtype(values, "toeplitz_conv2d", "x's values");
  TORCH_CHECK(kernel.scalar_type() == values.scalar_type(), "toeplitz_conv2d: kernel (",
              kernel.scalar_type(), ") must have the dtype of x (", values.scalar_type(), ")");
  for (const at::Tensor* t : {&crow, &col, &kernel}) {
    TORCH_CHECK(t->device() == values.device(), "toeplitz_conv2d: x and kernel must be on one "
                "device, got ", values.device(), " and ", t->device());
  }
  g.batch = crow.size(0) - 1;
  // On a GPU each pipeline checks x together with its other arguments, in one host copy.
  if (values.device().is_cpu()) {
    check_csr(crow, col, g.in_h * g.in_w, input_csr_names("toeplitz_conv2d"));
  }
  return g;
}

void check_toeplitz_matrix_args(const at::Tensor& t_crow, const at::Tensor& t_col,
                                const at::Tensor& t_values, const at::Tensor& values,
                                const ToeplitzGeometry& g) {
  TORCH_CHECK(t_crow.dim() == 1 && t_crow.scalar_type() == at::kLong &&
                  t_crow.size(0) == g.in_h * g.in_w + 1,
              "toeplitz_conv2d_precomputed: t_crow must be 1-D int64 with H*W + 1 = ",
              g.in_h * g.in_w + 1, " entries, got ", t_crow.scalar_type(), " of shape ",
              t_crow.sizes());
  TORCH_CHECK(t_col.dim() == 1 && t_col.scalar_type() == at::kLong,
              "toeplitz_conv2d_precomputed: t_col must be a 1-D int64 tensor");
  TORCH_CHECK(t_values.dim() == 1 && t_values.size(0) == t_col.size(0) &&
                  t_values.scalar_type() == values.scalar_type(),
              "toeplitz_conv2d_precomputed: t_values must be 1-D, one ", values.scalar_type(),
              " per entry of t_col (", t_col.size(0), "), got ", t_values.scalar_type(),
              " of shape ", t_values.sizes());
  for (const at::Tensor* t : {&t_crow, &t_col, &t_values}) {
    TORCH_CHECK(t->device() == values.device(), "toeplitz_conv2d_precomputed: T must be on x's "
                "device (", values.device(), "), got ", t->device());
  }
}

void check_toeplitz_backward_args(const at::Tensor& grad_out_values, const at::Tensor& out_crow,
                                  const at::Tensor& out_col, const at::Tensor& values,
                                  const ToeplitzGeometry& g) {
  TORCH_CHECK(out_crow.dim() == 1 && out_crow.size(0) == g.batch + 1 &&
                  out_crow.scalar_type() == at::kLong && out_col.dim() == 1 &&
                  out_col.scalar_type() == at::kLong && out_crow.device() == values.device() &&
                  out_col.device() == values.device(),
              "_toeplitz_conv2d_backward: the output pattern must be int64 CSR of B + 1 rows "
              "on x's device");
  TORCH_CHECK(grad_out_values.dim() == 1 && grad_out_values.size(0) == out_col.size(0) &&
                  grad_out_values.scalar_type() == values.scalar_type() &&
                  grad_out_values.device() == values.device(),
              "_toeplitz_conv2d_backward: grad_out_values must be 1-D, one ", values.scalar_type(),
              " per output entry (", out_col.size(0), ") on ", values.device(), ", got ",
              grad_out_values.scalar_type(), " of shape ", grad_out_values.sizes());
}

}  // namespace torch_sparse_conv
