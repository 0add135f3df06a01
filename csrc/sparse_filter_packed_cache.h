// What the CPU kernels learn about a packed filter, remembered between calls on the very
// same, unchanged tensors: that its CSR indices are valid, the union of its kept taps, and
// its dense weight (for the 'dense' method). A module calls forward with the same packed
// weight every step, so these O(nnz) passes run once instead of every call.
//
// Entries hold strong references to their tensors, so a new tensor at a recycled address can
// never match; an in-place update bumps a tensor's version, which misses. Inference tensors
// (no version counter) and values computed in a graph (new every call) are not remembered.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sparse_filter_geometry.h"

namespace torch_sparse_conv {

class PackedFilterFacts {
 public:
  PackedFilterFacts(at::Tensor row_ptr, at::Tensor col_idx, at::Tensor values,
                    const SparseFilterGeometry& g, at::IntArrayRef weight_size);
  int64_t nnz() const { return col_idx_.size(0); }
  // Per group, the sorted filter columns kept by at least one of its output channels.
  const std::vector<std::vector<int64_t>>& kept_columns();
  // Fraction of (group, column) pairs in kept_columns().
  double union_fraction();
  // The dense (C_out, C_in/groups, kH, kW) weight.
  at::Tensor dense_weight();
  // Tensors a backend derives from this packed filter once (CUDA's tap tables), by name:
  // `build` runs on the first request for `name`.
  const std::vector<at::Tensor>& derived(const std::string& name,
                                         const std::function<std::vector<at::Tensor>()>& build);

 private:
  friend std::shared_ptr<PackedFilterFacts> packed_filter_facts(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const SparseFilterGeometry&,
      at::IntArrayRef);
  at::Tensor row_ptr_, col_idx_, values_;
  uint32_t versions_[3];
  std::vector<int64_t> weight_size_;
  int64_t groups_;
  std::vector<std::vector<int64_t>> kept_columns_;
  bool has_kept_columns_ = false;
  at::Tensor dense_;
  std::map<std::string, std::vector<at::Tensor>> derived_;
  std::mutex mutex_;
};

// Validates the CSR contents (row_ptr monotone from 0 to nnz, every col_idx in range)
// unless these exact tensors were validated before, and returns their facts.
std::shared_ptr<PackedFilterFacts> packed_filter_facts(const at::Tensor& row_ptr,
                                                       const at::Tensor& col_idx,
                                                       const at::Tensor& values,
                                                       const SparseFilterGeometry& g,
                                                       at::IntArrayRef weight_size);

// Every check of _sparse_filter_conv2d_backward's arguments (shapes, dtypes, devices, the
// packed weight's indices, grad_output against the forward's output), for every backend.
SparseFilterGeometry check_sparse_filter_backward_args(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

}  // namespace torch_sparse_conv
