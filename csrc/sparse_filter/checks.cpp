#include "csrc/sparse_filter/checks.h"

#include "csrc/common/arithmetic.h"
#include "csrc/common/csr_check.h"
#include "csrc/common/dtypes.h"

namespace torch_sparse_conv {

namespace {

// Kernel sizes, strides, paddings and dilations stay below this, so every size and offset
// the geometry derives from them (padded sizes, reaches, phase planes) fits in int64.
constexpr int64_t kMaxConvParameter = int64_t(1) << 31;

void check_pair(at::IntArrayRef value, const char* name, int64_t minimum) {
  TORCH_CHECK(value.size() == 2, "sparse_filter_conv2d: ", name, " must have 2 elements, got ",
              value.size());
  for (int64_t v : value) {
    TORCH_CHECK(v >= minimum, "sparse_filter_conv2d: ", name, " must be ",
                minimum == 0 ? "non-negative" : "positive", ", got ", value);
    TORCH_CHECK(v < kMaxConvParameter, "sparse_filter_conv2d: ", name,
                " must be below 2^31, got ", value);
  }
}

}  // namespace

void check_csr_contents(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t taps) {
  check_csr(row_ptr, col_idx, taps,
            {"sparse_filter_conv2d", "", "row_ptr", "col_idx", "C_in/groups * kH * kW"});
}

SparseFilterGeometry check_sparse_filter_conv2d_args(
    const at::Tensor& input,
    const at::Tensor& row_ptr,
    const at::Tensor& col_idx,
    const at::Tensor& values,
    at::IntArrayRef weight_size,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  TORCH_CHECK(input.defined() && input.dim() == 4,
              "sparse_filter_conv2d: input must be a 4-D (N, C, H, W) tensor, got ",
              input.defined() ? input.dim() : 0, " dimensions");
  check_supported_dtype(input, "sparse_filter_conv2d", "input");
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.size(0) >= 1 && row_ptr.scalar_type() == at::kLong,
              "sparse_filter_conv2d: row_ptr must be a 1-D int64 tensor of C_out + 1 elements, got ",
              row_ptr.scalar_type(), " of shape ", row_ptr.sizes());
  TORCH_CHECK(col_idx.dim() == 1 && col_idx.scalar_type() == at::kLong,
              "sparse_filter_conv2d: col_idx must be a 1-D int64 tensor, got ",
              col_idx.scalar_type(), " of shape ", col_idx.sizes());
  TORCH_CHECK(values.dim() == 1 && values.size(0) == col_idx.size(0),
              "sparse_filter_conv2d: values must be 1-D with one entry per col_idx entry (",
              col_idx.size(0), "), got shape ", values.sizes());
  TORCH_CHECK(values.scalar_type() == input.scalar_type(),
              "sparse_filter_conv2d: values (", values.scalar_type(),
              ") must have the dtype of input (", input.scalar_type(), ")");
  for (const at::Tensor* t : {&row_ptr, &col_idx, &values}) {
    TORCH_CHECK(t->device() == input.device(),
                "sparse_filter_conv2d: the packed weight is on ", t->device(),
                " but input is on ", input.device());
  }
  TORCH_CHECK(weight_size.size() == 4,
              "sparse_filter_conv2d: weight_size must be (C_out, C_in/groups, kH, kW), got ",
              weight_size);
  for (int64_t v : weight_size) {
    TORCH_CHECK(v >= 0, "sparse_filter_conv2d: weight_size must be non-negative, got ",
                weight_size);
  }
  TORCH_CHECK(weight_size[2] > 0 && weight_size[3] > 0,
              "sparse_filter_conv2d: kernel size (weight_size[2:]) must be positive, got ",
              weight_size);
  TORCH_CHECK(weight_size[0] < kMaxConvParameter && weight_size[2] < kMaxConvParameter &&
                  weight_size[3] < kMaxConvParameter,
              "sparse_filter_conv2d: weight_size's C_out, kH and kW must be below 2^31, got ",
              weight_size);
  check_pair(stride, "stride", 1);
  check_pair(padding, "padding", 0);
  check_pair(dilation, "dilation", 1);
  TORCH_CHECK(groups > 0, "sparse_filter_conv2d: groups must be positive, got ", groups);

  SparseFilterGeometry g;
  g.batch = input.size(0);
  g.in_channels = input.size(1);
  g.in_h = input.size(2);
  g.in_w = input.size(3);
  g.out_channels = weight_size[0];
  g.groups = groups;
  g.kernel_h = weight_size[2];
  g.kernel_w = weight_size[3];
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dilation_h = dilation[0];
  g.dilation_w = dilation[1];

  TORCH_CHECK(row_ptr.size(0) == g.out_channels + 1,
              "sparse_filter_conv2d: row_ptr must have C_out + 1 = ", g.out_channels + 1,
              " elements for weight_size ", weight_size, ", got ", row_ptr.size(0));
  TORCH_CHECK(g.in_channels % groups == 0, "sparse_filter_conv2d: input channels (",
              g.in_channels, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(g.out_channels % groups == 0, "sparse_filter_conv2d: output channels (",
              g.out_channels, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(g.in_channels == weight_size[1] * groups,
              "sparse_filter_conv2d: expected input with ", weight_size[1] * groups,
              " channels (groups * weight_size[1] = ", groups, " * ", weight_size[1], "), got ",
              g.in_channels, " channels");
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels,
                "sparse_filter_conv2d: bias must be 1-D with C_out = ", g.out_channels,
                " elements, got shape ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), "sparse_filter_conv2d: bias (",
                bias->scalar_type(), ") must have the dtype of input (", input.scalar_type(), ")");
    TORCH_CHECK(bias->device() == input.device(), "sparse_filter_conv2d: bias is on ",
                bias->device(), " but input is on ", input.device());
  }

  const int64_t padded_h = g.in_h + 2 * g.pad_h, padded_w = g.in_w + 2 * g.pad_w;
  const int64_t reach_h = (g.kernel_h - 1) * g.dilation_h + 1;
  const int64_t reach_w = (g.kernel_w - 1) * g.dilation_w + 1;
  TORCH_CHECK(reach_h <= padded_h && reach_w <= padded_w,
              "sparse_filter_conv2d: kernel size (", reach_h, " x ", reach_w,
              ", dilation included) can't be greater than the padded input size (", padded_h,
              " x ", padded_w, ")");
  g.out_h = (padded_h - reach_h) / g.stride_h + 1;
  g.out_w = (padded_w - reach_w) / g.stride_w + 1;
  // One output row (column) reads the same input whatever the stride: a stride capped at the
  // padded size gives that one row too, with a polyphase layout no larger than the padded
  // input (not stride times larger).
  if (g.out_h == 1) g.stride_h = std::min(g.stride_h, padded_h);
  if (g.out_w == 1) g.stride_w = std::min(g.stride_w, padded_w);
  g.phase_h = ceil_div(padded_h, g.stride_h);
  g.phase_w = ceil_div(padded_w, g.stride_w);
  constexpr const char* kOp = "sparse_filter_conv2d";
  checked_product({g.in_channels_per_group(), g.kernel_h, g.kernel_w}, kOp,
                  "C_in/groups * kH * kW");
  checked_product({g.batch, g.out_channels, g.out_h, g.out_w}, kOp,
                  "the output's element count (see padding and stride)");
  // The polyphase layout of the batch in bytes (or of a group of up to 512 interleaved
  // samples): every offset into it must fit.
  checked_product({std::max<int64_t>(g.batch, 512), g.in_channels, g.stride_h, g.stride_w,
                   g.phase_h, g.phase_w, 8},
                  kOp, "the padded input's size in bytes (see padding)");

  return g;
}

Epilogue check_epilogue(const c10::optional<at::Tensor>& residual, bool relu,
                        const at::Tensor& input, const SparseFilterGeometry& g) {
  Epilogue epilogue;
  epilogue.relu = relu;
  if (!residual.has_value() || !residual->defined()) return epilogue;
  const at::Tensor& r = *residual;
  TORCH_CHECK(r.layout() == at::kStrided,
              "sparse_filter_conv2d: residual must be a dense (strided) tensor, got layout ",
              r.layout());
  TORCH_CHECK(r.dim() == 4 && r.size(0) == g.batch && r.size(1) == g.out_channels &&
                  r.size(2) == g.out_h && r.size(3) == g.out_w,
              "sparse_filter_conv2d: residual must have the output's shape (", g.batch, ", ",
              g.out_channels, ", ", g.out_h, ", ", g.out_w, "), got ", r.sizes());
  TORCH_CHECK(r.scalar_type() == input.scalar_type() && r.device() == input.device(),
              "sparse_filter_conv2d: residual (", r.scalar_type(), " on ", r.device(),
              ") must have input's dtype and device (", input.scalar_type(), " on ",
              input.device(), ")");
  epilogue.residual = r;
  return epilogue;
}

void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                       const SparseFilterGeometry& g) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.batch &&
                  grad_output.size(1) == g.out_channels && grad_output.size(2) == g.out_h &&
                  grad_output.size(3) == g.out_w,
              "_sparse_filter_conv2d_backward: grad_output must have shape (", g.batch, ", ",
              g.out_channels, ", ", g.out_h, ", ", g.out_w, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() &&
                  grad_output.device() == input.device(),
              "_sparse_filter_conv2d_backward: grad_output (", grad_output.scalar_type(), " on ",
              grad_output.device(), ") must have input's dtype and device (",
              input.scalar_type(), " on ", input.device(), ")");
}

}  // namespace torch_sparse_conv
