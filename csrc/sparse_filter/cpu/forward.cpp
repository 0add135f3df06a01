// sparse_filter_conv2d forward on CPU: dispatch among the methods, and the 'unfold' and
// 'dense' methods ('direct' lives in csrc/sparse_filter/cpu/direct.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "csrc/common/reduced_precision.h"
#include "csrc/common/memory_format.h"
#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/cpu/backward.h"
#include "csrc/sparse_filter/cpu/direct.h"
#include "csrc/sparse_filter/cpu/forward.h"
#include "csrc/sparse_filter/geometry.h"
#include "csrc/sparse_filter/polyphase.h"
#include "csrc/sparse_filter/checks.h"
#include "csrc/sparse_filter/pattern.h"
#include "csrc/sparse_filter/pattern_cache.h"

namespace torch_sparse_conv {
namespace {

// unfold: the seed recipe done right. Per group, gather only the input rows of the taps that
// some output channel keeps (the union), then one dense GEMM with the compacted weight.
// The batch is processed in chunks so the gathered buffer stays under a fixed budget.
template <typename scalar_t>
void unfold_forward(const at::Tensor& polyphase, const at::Tensor& row_ptr,
                    const at::Tensor& col_idx, const at::Tensor& values,
                    const std::vector<std::vector<int64_t>>& kept_columns,
                    const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& g,
                    at::Tensor& output) {
  constexpr int64_t kWorkspaceElements = int64_t(1) << 23;  // 32 MiB of float32
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* ci = col_idx.data_ptr<int64_t>();
  const scalar_t* val = values.data_ptr<scalar_t>();
  const scalar_t* in = polyphase.data_ptr<scalar_t>();
  const int64_t ocpg = g.out_channels_per_group();
  const int64_t taps = g.taps_per_filter();
  const int64_t len = g.wide_len();
  const int64_t sample_block = g.in_channels * g.channel_block();
  const int64_t group_block = g.in_channels_per_group() * g.channel_block();
  const int64_t plane = g.out_h * g.out_w;
  at::Tensor bias_c = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* out = output.data_ptr<scalar_t>();

  for (int64_t group = 0; group < g.groups; ++group) {
    // The compacted (ocpg x union) weight over the group's kept columns.
    const std::vector<int64_t>& kept = kept_columns[group];
    const int64_t width = static_cast<int64_t>(kept.size());
    std::vector<int64_t> slot(taps, -1);
    for (int64_t u = 0; u < width; ++u) slot[kept[u]] = u;
    at::Tensor compact = at::zeros({ocpg, width}, values.options());
    scalar_t* w = compact.data_ptr<scalar_t>();
    for (int64_t oc = 0; oc < ocpg; ++oc) {
      const int64_t row = group * ocpg + oc;
      for (int64_t k = rp[row]; k < rp[row + 1]; ++k) w[oc * width + slot[ci[k]]] += val[k];
    }
    std::vector<int64_t> offsets(width);
    for (int64_t u = 0; u < width; ++u) offsets[u] = group * group_block + g.tap_offset(kept[u]);

    const int64_t chunk = std::max<int64_t>(
        1, std::min<int64_t>(g.batch, kWorkspaceElements / std::max<int64_t>(1, width * len)));
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t nc = std::min(chunk, g.batch - n0);
      at::Tensor result;
      if (width > 0) {
        at::Tensor columns = at::empty({width, nc * len}, values.options());
        scalar_t* cols = columns.data_ptr<scalar_t>();
        at::parallel_for(0, width * nc, 16, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t u = item / nc, n = item % nc;
            const scalar_t* src = in + (n0 + n) * sample_block + offsets[u];
            std::copy(src, src + len, cols + u * nc * len + n * len);
          }
        });
        result = at::mm(compact, columns);  // (ocpg, nc * len), wide layout per sample
      }
      const scalar_t* res = width > 0 ? result.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, nc * ocpg, 16, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / ocpg, oc = item % ocpg;
          const int64_t channel = group * ocpg + oc;
          scalar_t* dst = out + ((n0 + n) * g.out_channels + channel) * plane;
          const scalar_t init = b ? b[channel] : scalar_t(0);
          for (int64_t oh = 0; oh < g.out_h; ++oh) {
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
              dst[oh * g.out_w + ow] =
                  init + (res ? res[oc * nc * len + n * len + oh * g.phase_w + ow] : scalar_t(0));
            }
          }
        }
      });
    }
  }
}

// The forward of every method, the epilogue (epilogue.h) applied: the 'direct' kernels in
// their final stores, the other paths as a pass over their output (finished, below).
at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                       const at::Tensor& col_idx, const at::Tensor& values,
                       at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                       int64_t groups, c10::string_view method_name,
                       const c10::optional<at::Tensor>& residual, bool relu,
                       at::Tensor* lanes_layout) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size, bias, stride,
                                      padding, dilation, groups);
  const Epilogue epilogue = check_epilogue(residual, relu, input, g);
  auto finished = [&](at::Tensor output) {
    apply_epilogue(output, epilogue);
    return output;
  };
  SparseFilterMethod method = parse_sparse_filter_method(method_name);
  at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), val = values.contiguous();
  // The caller's pattern checked, or found equal to one checked before: the kernels read the
  // kept copies and their plans (or, where nothing is kept, the caller's tensors, checked
  // just now). A pattern the backward built for its convolution is trusted already.
  std::shared_ptr<const RegroupedPattern> checked;
  std::optional<TrustedPatternScope> trusted;
  if (trusted_pattern(rp, ci) == nullptr) {
    checked = checked_pattern(rp, ci, g);
    rp = checked->row_ptr;
    ci = checked->col_idx;
    trusted.emplace(checked.get());
  }
  if (g.taps_per_filter() == 0) {
    return finished(in_memory_format_of(input, output_without_taps(input, bias, g)));
  }
  if (method == SparseFilterMethod::Auto) {
    method = choose_sparse_filter_method_cpu(rp, ci, g, input.scalar_type());
  }
  if (reduced_precision::is_reduced(input.scalar_type()) && method != SparseFilterMethod::Direct) {
    // 'direct' reads and writes float16/bfloat16 itself; the others run their float32 code on
    // widened arguments (the epilogue after, on the output rounded, as the unfused ops).
    return finished(computed_in_float32<&sparse_filter_conv2d_cpu>()(
        input, rp, ci, values, weight_size, bias, stride, padding, dilation, groups,
        method == SparseFilterMethod::Dense ? "dense" : "unfold", c10::nullopt, false));
  }

  if (method == SparseFilterMethod::Dense) {
    const at::Tensor weight = dense_weight_cpu(rp, ci, val, weight_size);
    // g's stride: capped at the padded size where a single output row or column makes the
    // stride irrelevant (oneDNN rejects strides of 2^31 and more).
    return finished(in_memory_format_of(
        input,
        at::conv2d(input, weight, bias, {g.stride_h, g.stride_w}, padding, dilation, groups)));
  }
  if (g.batch * g.out_channels * g.out_h * g.out_w == 0) {
    return in_memory_format_of(input, output_without_taps(input, bias, g));
  }
  if (method == SparseFilterMethod::Direct) {
    return in_memory_format_of(input, sparse_filter_direct_forward_cpu(
                                          input, rp, ci, val, bias, g, epilogue, lanes_layout));
  }
  at::Tensor output =
      at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_conv2d_cpu", [&] {
    unfold_forward<scalar_t>(to_polyphase(input, g), rp, ci, val, kept_columns(rp, ci, g), bias, g,
                             output);
  });
  return finished(in_memory_format_of(input, output));
}

}  // namespace

at::Tensor sparse_filter_conv2d_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx, const at::Tensor& values,
                                    at::IntArrayRef weight_size,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view method_name,
                                    const c10::optional<at::Tensor>& residual, bool relu) {
  return forward_cpu(input, row_ptr, col_idx, values, weight_size, bias, stride, padding,
                     dilation, groups, method_name, residual, relu, /*lanes_layout=*/nullptr);
}

at::Tensor sparse_filter_conv2d_cpu_sharing_layout(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method_name, at::Tensor* lanes_layout) {
  return forward_cpu(input, row_ptr, col_idx, values, weight_size, bias, stride, padding,
                     dilation, groups, method_name, c10::nullopt, false, lanes_layout);
}

// _sparse_filter_conv2d_keeping_input_layout: the forward, and the input's lanes layout where
// the values' gradient will read it. Where the lanes forward would pad its phase planes one
// column wider for aligned loads (1x1 and strided layers whose phase_w is odd, on AVX-512:
// direct_lanes.cpp, lanes_geometry), keeping the layout forgoes that, which pays where the
// forward reads each input element for few output channels. A step through autograd, batch
// 8, 2 threads, Intel Xeon VM, 15 alternated rounds, keeping against not: 3x3 stride 2
// 128->128 @56 0.85-0.86x the time at 90 / 95 %, 256->256 @28 0.87-0.89x, 64->128 @56 0.90x,
// 128->256 @28 0.89-0.92x, 512->512 @14 and 256->512 @14 0.98-1.01x; 1x1 2048->512 @7
// 0.83-0.92x but 512->2048 @7 1.04x; so kept there only up to twice as many output channels
// as input channels (the 7x7 stride-2 stem, 3->64, gained 0.95-0.98x and is left out by that
// rule). Elsewhere, or where the forward took another path than the lanes (a batch that does
// not fill them, 'unfold', 'dense', a layout in waves), the layout is undefined and the
// backward lays the input out itself.
std::tuple<at::Tensor, at::Tensor> sparse_filter_conv2d_keeping_input_layout_cpu(
    const at::Tensor& input, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const at::Tensor& values, at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    c10::string_view method_name, const c10::optional<at::Tensor>& residual, bool relu) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size, bias, stride,
                                      padding, dilation, groups);
  const bool keep =
      values_gradient_reads_lanes_layout(g, input.scalar_type(), col_idx.size(0)) &&
      (direct_lanes_layout_has_layer_geometry(g, input.scalar_type()) ||
       g.out_channels <= 2 * g.in_channels);
  at::Tensor layout;
  at::Tensor output =
      forward_cpu(input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation,
                  groups, method_name, residual, relu, keep ? &layout : nullptr);
  return {output, layout};
}

}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("sparse_filter_conv2d", &sparse_filter_conv2d_cpu);  // float16/bfloat16 inside
  m.impl("_sparse_filter_conv2d_keeping_input_layout",
         &sparse_filter_conv2d_keeping_input_layout_cpu);
}

// A sparse `input` (or residual) would otherwise meet the dispatcher's "could not run with
// arguments from the 'SparseCPU' backend"; this says what is wrong with which argument.
// Boxed: it names the first tensor argument that is not strided, whatever the schema.
namespace {
void reject_sparse_input(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema().arguments();
  const auto arguments = torch::jit::last(*stack, schema.size());
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (!arguments[i].isTensor() || arguments[i].toTensor().layout() == at::kStrided) continue;
    TORCH_CHECK_TYPE(false, "sparse_filter_conv2d: ", schema[i].name(),
                     " must be a dense (strided) tensor, got layout ",
                     arguments[i].toTensor().layout(),
                     i == 0 ? " (the sparse-input convolution is toeplitz_conv2d)" : "");
  }
  TORCH_CHECK_TYPE(false, "sparse_filter_conv2d: every tensor argument must be dense (strided)");
}
}  // namespace

TORCH_LIBRARY_IMPL(torch_sparse_conv, SparseCPU, m) {
  m.impl("sparse_filter_conv2d", torch::CppFunction::makeFromBoxedFunction<&reject_sparse_input>());
}
TORCH_LIBRARY_IMPL(torch_sparse_conv, SparseCUDA, m) {
  m.impl("sparse_filter_conv2d", torch::CppFunction::makeFromBoxedFunction<&reject_sparse_input>());
}
