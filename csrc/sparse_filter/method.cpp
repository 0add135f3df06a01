#include "csrc/sparse_filter/method.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/sparse_filter/pattern.h"
#include "csrc/sparse_filter/cpu/direct.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace torch_sparse_conv {

SparseFilterMethod parse_sparse_filter_method(c10::string_view name) {
  if (name == "auto") return SparseFilterMethod::Auto;
  if (name == "direct") return SparseFilterMethod::Direct;
  if (name == "unfold") return SparseFilterMethod::Unfold;
  if (name == "dense") return SparseFilterMethod::Dense;
  if (name == "spmm") return SparseFilterMethod::Spmm;
  TORCH_CHECK(false, "sparse_filter_conv2d: method must be one of 'auto', 'direct', 'unfold', "
              "'dense', 'spmm', got '", std::string(name), "'");
}

const AutoRule& cpu_auto_rule() {
  static const AutoRule& rule = []() -> const AutoRule& {
    const char* name = std::getenv("TSC_AUTO_RULE");
    if (name != nullptr && *name != '\0') {
      for (const AutoRule* r : kAutoRules) {
        if (std::strcmp(name, r->name) == 0) return *r;
      }
      TORCH_WARN("TSC_AUTO_RULE must be 'zen4' or 'intel-xeon', got '", name,
                 "'; using the processor's rule");
    }
    return cpu_vendor() == CpuVendor::Intel ? kIntelXeonAutoRule : kZen4AutoRule;
  }();
  return rule;
}

SparseFilterMethod choose_sparse_filter_method_cpu(const at::Tensor& row_ptr,
                                                   const at::Tensor& col_idx,
                                                   const SparseFilterGeometry& g,
                                                   at::ScalarType dtype) {
  // A plane without input rows or columns (the output all padding): oneDNN refuses it.
  if (g.in_h == 0 || g.in_w == 0) return SparseFilterMethod::Direct;
  const int64_t taps = g.taps_per_filter();
  const int64_t nnz = col_idx.size(0);
  const double density =
      g.out_channels * taps == 0 ? 0.0 : double(nnz) / double(g.out_channels * taps);
  const int64_t len = g.wide_len();
  const auto pick = [len](const auto& models) {
    for (const DirectCostModel& m : models) {
      if (len >= m.min_run) return m;
    }
    return models[0];
  };
  const bool pointwise = direct_pointwise_applies(g, dtype);
  const bool lanes = !pointwise && direct_lanes_pay(g, dtype);
  const AutoRule& rule = cpu_auto_rule();
  const DirectCostModel model = pointwise ? pick(rule.pointwise)
                                : lanes   ? pick(rule.lanes)
                                          : pick(rule.one_sample);
  // A stride lays out more input per output; a 1x1 kernel without padding first copies out
  // the pixels a stride reads, then runs as stride 1 (cpu/direct.cpp).
  const bool picks_pixels = g.kernel_h == 1 && g.kernel_w == 1 && g.pad_h == 0 && g.pad_w == 0;
  const double extra_phases = picks_pixels ? 0.0 : double(g.stride_h * g.stride_w - 1);
  const double overhead =
      model.overhead * (lanes ? 1.0 + extra_phases * rule.lanes_stride_overhead : 1.0);
  const double stride_efficiency =
      lanes ? rule.lanes_stride_efficiency : rule.one_sample_stride_efficiency;
  const double efficiency = model.efficiency * (extra_phases > 0 ? stride_efficiency : 1.0);
  const double direct_time = density / efficiency + overhead;
  const double outputs = double(g.batch) * double(g.out_h) * double(g.out_w);
  const double dense_time =
      1.0 + rule.dense_rebuild * (1.0 + rule.dense_rebuild_per_density * density) /
                std::pow(std::max(outputs, 1.0), rule.dense_rebuild_outputs_power);
  const double direct_gain = dense_time / direct_time;
  // unfold wins only if the union of kept columns is below this fraction of the taps. It is
  // at least the density; past that, the union is measured only as far as needed to rule
  // unfold out (a full pass over the taps cost a quarter of a batch-1 512@7 call at 90 %).
  const double best_other = std::max(direct_gain, kAutoMinGain);
  const double unfold_limit = dense_time * kUnfoldEfficiency / best_other;
  double unfold_gain = 0.0;
  if (density <= unfold_limit) {
    const double kept = union_fraction(row_ptr, col_idx, g, unfold_limit);
    if (kept <= unfold_limit) unfold_gain = kept > 0 ? dense_time * kUnfoldEfficiency / kept : 1e9;
  }
  if (std::max(direct_gain, unfold_gain) < kAutoMinGain) return SparseFilterMethod::Dense;
  return direct_gain >= unfold_gain ? SparseFilterMethod::Direct : SparseFilterMethod::Unfold;
}

bool grad_values_sparse_pays(const SparseFilterGeometry& g, int64_t nnz, bool lanes) {
  const double taps = double(g.out_channels) * double(g.taps_per_filter());
  const double density = taps > 0 ? double(nnz) / taps : 0.0;
  const bool strided = g.stride_h * g.stride_w > 1;
  const bool pointwise = g.kernel_h * g.kernel_w == 1;
  if (lanes) return density <= (strided     ? kGradValuesLanesStridedMaxDensity
                                : pointwise ? kGradValuesLanesPointwiseMaxDensity
                                            : kGradValuesLanesMaxDensity);
  return density <= (strided ? kGradValuesStridedMaxDensity : kGradValuesOneSampleMaxDensity);
}

at::Tensor unpack_sparse_filter_dense(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                      const at::Tensor& values, at::IntArrayRef weight_size) {
  TORCH_CHECK(weight_size.size() == 4, "unpack_sparse_filter: weight_size must have 4 elements");
  const int64_t rows = weight_size[0];
  const int64_t cols = weight_size[1] * weight_size[2] * weight_size[3];
  at::Tensor counts = row_ptr.narrow(0, 1, rows) - row_ptr.narrow(0, 0, rows);
  at::Tensor row_of = at::repeat_interleave(
      at::arange(rows, row_ptr.options()), counts, /*dim=*/0, /*output_size=*/col_idx.size(0));
  at::Tensor dense = at::zeros({rows * cols}, values.options());
  dense.index_add_(0, row_of * cols + col_idx, values);
  return dense.view({weight_size[0], weight_size[1], weight_size[2], weight_size[3]});
}

}  // namespace torch_sparse_conv
