#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/pattern.h"
#include "csrc/sparse_filter/cpu/direct.h"

#include <algorithm>
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

SparseFilterMethod choose_sparse_filter_method_cpu(const at::Tensor& row_ptr,
                                                   const at::Tensor& col_idx,
                                                   const SparseFilterGeometry& g,
                                                   at::ScalarType dtype) {
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
  const DirectCostModel model = pointwise                    ? pick(kDirectPointwiseCostModels)
                                : direct_lanes_pay(g, dtype) ? pick(kDirectLanesCostModels)
                                                             : pick(kDirectCostModels);
  // Laying out the input costs in proportion to the input, which a stride makes larger
  // relative to the output (and so to dense's work): 4x for stride 2. The 1x1 path copies
  // only the pixels a stride reads (ResNet-50's stride-2 1x1 layers at 5-30 % density: the
  // stride-1 model held).
  const double overhead = model.overhead * double(pointwise ? 1 : g.stride_h * g.stride_w);
  const double direct_gain = 1.0 / (density / model.efficiency + overhead);
  // union_fraction >= density: skip its O(nnz) pass when even that bound can't win.
  const double best_other = std::max(direct_gain, kAutoMinGain);
  double unfold_gain = density > 0 ? kUnfoldEfficiency / density : 1e9;
  if (unfold_gain >= best_other) {
    const double kept = union_fraction(kept_columns(row_ptr, col_idx, g), g);
    unfold_gain = kept > 0 ? kUnfoldEfficiency / kept : 1e9;
  }
  if (std::max(direct_gain, unfold_gain) < kAutoMinGain) return SparseFilterMethod::Dense;
  return direct_gain >= unfold_gain ? SparseFilterMethod::Direct : SparseFilterMethod::Unfold;
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
