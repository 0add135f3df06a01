#include "csrc/sparse_filter/geometry.h"

#include "csrc/common/csr_device_facts.h"

#include <ATen/Parallel.h>

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

// a * b * ..., or an error naming `what` when the product does not fit in int64.
int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t product = 1;
  for (int64_t f : factors) {
    TORCH_CHECK(!__builtin_mul_overflow(product, f, &product), "sparse_filter_conv2d: ", what,
                " does not fit in 64 bits");
  }
  return product;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// One thread's share of a check, vectorised for the widest instruction set the CPU has.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static bool
all_below_serial(const int64_t* v, int64_t begin, int64_t end, int64_t bound) {
  uint64_t bad = 0;  // negative values wrap to huge unsigned ones
  for (int64_t k = begin; k < end; ++k) bad |= static_cast<uint64_t>(v[k]) >= uint64_t(bound);
  return bad == 0;
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static bool
non_decreasing_serial(const int64_t* v, int64_t begin, int64_t end) {
  uint64_t bad = 0;
  for (int64_t k = begin + 1; k < end; ++k) bad |= static_cast<uint64_t>(v[k] < v[k - 1]);
  return bad == 0;
}

constexpr int64_t kCheckGrain = int64_t(1) << 16;

static bool all_below(const int64_t* v, int64_t n, int64_t bound) {
  return at::parallel_reduce(
      0, n, kCheckGrain, true,
      [&](int64_t begin, int64_t end, bool ok) {
        return ok && all_below_serial(v, begin, end, bound);
      },
      [](bool a, bool b) { return a && b; });
}

static bool all_non_decreasing(const int64_t* v, int64_t n) {
  // Chunks overlap by one element, so every adjacent pair is compared.
  return at::parallel_reduce(
      0, n, kCheckGrain, true,
      [&](int64_t begin, int64_t end, bool ok) {
        return ok && non_decreasing_serial(v, std::max<int64_t>(begin - 1, 0), end);
      },
      [](bool a, bool b) { return a && b; });
}

// On a GPU: reductions on the device and one copy of five numbers to the host.
static void check_csr_contents_on_device(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                         int64_t taps) {
  const int64_t nnz = col_idx.size(0);
  const CsrDeviceFacts f = csr_facts_on_device(row_ptr, col_idx);
  TORCH_CHECK(f.first_row_pointer == 0, "sparse_filter_conv2d: row_ptr[0] must be 0, got ",
              f.first_row_pointer);
  TORCH_CHECK(f.row_pointers_non_decreasing,
              "sparse_filter_conv2d: row_ptr must be non-decreasing");
  TORCH_CHECK(f.last_row_pointer == nnz, "sparse_filter_conv2d: row_ptr[-1] (",
              f.last_row_pointer, ") must equal the number of col_idx entries (", nnz, ")");
  TORCH_CHECK(nnz == 0 || (f.lowest_column >= 0 && f.highest_column < taps),
              "sparse_filter_conv2d: col_idx values must lie in [0, ", taps,
              ") for C_in/groups * kH * kW = ", taps, ", got range [", f.lowest_column, ", ",
              f.highest_column, "]");
}

void check_csr_contents(const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t taps) {
  if (!row_ptr.device().is_cpu()) {
    check_csr_contents_on_device(row_ptr, col_idx, taps);
    return;
  }
  const int64_t rows = row_ptr.size(0) - 1;
  const int64_t nnz = col_idx.size(0);
  auto rp = row_ptr.contiguous();
  auto ci = col_idx.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  // Runs on every call (nothing is remembered, see csrc/sparse_filter/pattern.h): branch-free
  // passes, vectorised and split over threads; the first bad entry is searched only to name it.
  const bool rows_ok = r[0] == 0 && r[rows] == nnz && all_non_decreasing(r, rows + 1);
  if (rows_ok && all_below(c, nnz, taps)) return;
  TORCH_CHECK(r[0] == 0, "sparse_filter_conv2d: row_ptr[0] must be 0, got ", r[0]);
  for (int64_t i = 0; i < rows; ++i) {
    TORCH_CHECK(r[i + 1] >= r[i], "sparse_filter_conv2d: row_ptr must be non-decreasing, but "
                "row_ptr[", i + 1, "] = ", r[i + 1], " < row_ptr[", i, "] = ", r[i]);
  }
  TORCH_CHECK(r[rows] == nnz, "sparse_filter_conv2d: row_ptr[-1] (", r[rows],
              ") must equal the number of col_idx entries (", nnz, ")");
  for (int64_t k = 0; k < nnz; ++k) {
    TORCH_CHECK(c[k] >= 0 && c[k] < taps, "sparse_filter_conv2d: col_idx[", k, "] = ", c[k],
                " is out of range [0, ", taps, ") for C_in/groups * kH * kW = ", taps);
  }
}

int64_t SparseFilterGeometry::tap_offset(int64_t col) const {
  const int64_t taps_per_channel = kernel_h * kernel_w;
  const int64_t c = col / taps_per_channel;
  const int64_t ki = (col % taps_per_channel) / kernel_w;
  const int64_t kj = col % kernel_w;
  const int64_t row = ki * dilation_h, column = kj * dilation_w;
  const int64_t phase = (row % stride_h) * stride_w + (column % stride_w);
  return c * channel_block() + (phase * phase_h + row / stride_h) * phase_w + column / stride_w;
}

std::vector<int64_t> SparseFilterGeometry::column_offsets() const {
  std::vector<int64_t> offsets(taps_per_filter());
  for (int64_t col = 0; col < taps_per_filter(); ++col) offsets[col] = tap_offset(col);
  return offsets;
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
  const at::ScalarType dtype = input.scalar_type();
  const bool half_precision = dtype == at::kHalf || dtype == at::kBFloat16;
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || (half_precision && input.is_cuda()),
              "sparse_filter_conv2d: input must be float32 or float64 (float16 and bfloat16 "
              "on CUDA only), got ", dtype, " on ", input.device());
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
  checked_product({g.in_channels_per_group(), g.kernel_h, g.kernel_w}, "C_in/groups * kH * kW");
  checked_product({g.batch, g.out_channels, g.out_h, g.out_w},
                  "the output's element count (see padding and stride)");
  // The polyphase layout of the batch in bytes (or of a group of up to 512 interleaved
  // samples): every offset into it must fit.
  checked_product({std::max<int64_t>(g.batch, 512), g.in_channels, g.stride_h, g.stride_w,
                   g.phase_h, g.phase_w, 8},
                  "the padded input's size in bytes (see padding)");

  return g;
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

at::Tensor to_polyphase(const at::Tensor& input, const SparseFilterGeometry& g) {
  const int64_t extra_h = g.phase_h * g.stride_h - g.in_h - g.pad_h;
  const int64_t extra_w = g.phase_w * g.stride_w - g.in_w - g.pad_w;
  at::Tensor padded = input;
  if (g.pad_h != 0 || g.pad_w != 0 || extra_h != 0 || extra_w != 0) {
    padded = at::constant_pad_nd(input, {g.pad_w, extra_w, g.pad_h, extra_h}, 0);
  }
  padded = padded.contiguous();
  return padded.view({g.batch, g.in_channels, g.phase_h, g.stride_h, g.phase_w, g.stride_w})
      .permute({0, 1, 3, 5, 2, 4})
      .contiguous();
}

at::Tensor from_polyphase(const at::Tensor& polyphase, const SparseFilterGeometry& g) {
  at::Tensor padded =
      polyphase.view({g.batch, g.in_channels, g.stride_h, g.stride_w, g.phase_h, g.phase_w})
          .permute({0, 1, 4, 2, 5, 3})
          .reshape({g.batch, g.in_channels, g.phase_h * g.stride_h, g.phase_w * g.stride_w});
  return padded.narrow(2, g.pad_h, g.in_h).narrow(3, g.pad_w, g.in_w).contiguous();
}

at::Tensor to_wide(const at::Tensor& dense, const SparseFilterGeometry& g) {
  at::Tensor wide = at::zeros({dense.size(0), dense.size(1), g.out_h, g.phase_w}, dense.options());
  wide.narrow(3, 0, g.out_w).copy_(dense);
  return wide.view({dense.size(0), dense.size(1), g.out_h * g.phase_w});
}

FilterTaps make_filter_taps(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const SparseFilterGeometry& g) {
  auto rp = row_ptr.contiguous();
  auto ci = col_idx.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  const int64_t nnz = col_idx.size(0);
  const int64_t group_block = g.in_channels_per_group() * g.channel_block();
  const std::vector<int64_t> column_offset = g.column_offsets();
  FilterTaps taps;
  taps.out_channel.resize(nnz);
  taps.input_offset.resize(nnz);
  // Each output channel fills only its own range of the arrays.
  at::parallel_for(0, g.out_channels, 16, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      const int64_t group = oc / g.out_channels_per_group();
      for (int64_t k = r[oc]; k < r[oc + 1]; ++k) {
        taps.out_channel[k] = oc;
        taps.input_offset[k] = group * group_block + column_offset[c[k]];
      }
    }
  });
  return taps;
}

}  // namespace torch_sparse_conv
