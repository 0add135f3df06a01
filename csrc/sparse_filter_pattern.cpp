#include "sparse_filter_pattern.h"

namespace torch_sparse_conv {

std::vector<std::vector<int64_t>> kept_columns(const at::Tensor& row_ptr,
                                               const at::Tensor& col_idx,
                                               const SparseFilterGeometry& g) {
  const at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  const int64_t taps = g.taps_per_filter();
  const int64_t ocpg = g.out_channels_per_group();
  std::vector<char> seen(taps);
  std::vector<std::vector<int64_t>> kept(g.groups);
  for (int64_t group = 0; group < g.groups; ++group) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t k = r[group * ocpg]; k < r[(group + 1) * ocpg]; ++k) seen[c[k]] = 1;
    for (int64_t col = 0; col < taps; ++col) {
      if (seen[col]) kept[group].push_back(col);
    }
  }
  return kept;
}

double union_fraction(const std::vector<std::vector<int64_t>>& kept,
                      const SparseFilterGeometry& g) {
  const int64_t taps = g.taps_per_filter();
  int64_t union_size = 0;
  for (const auto& columns : kept) union_size += static_cast<int64_t>(columns.size());
  return g.groups * taps == 0 ? 0.0 : double(union_size) / double(g.groups * taps);
}

at::Tensor output_without_taps(const at::Tensor& input, const c10::optional<at::Tensor>& bias,
                               const SparseFilterGeometry& g) {
  at::Tensor output = at::zeros({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (bias.has_value() && bias->defined()) output.add_(bias->view({1, -1, 1, 1}));
  return output;
}

SparseFilterGeometry check_sparse_filter_backward_args(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size,
                                      c10::nullopt, stride, padding, dilation, groups);
  check_csr_contents(row_ptr, col_idx, g.taps_per_filter());
  check_grad_output(grad_output, input, g);
  return g;
}

}  // namespace torch_sparse_conv
