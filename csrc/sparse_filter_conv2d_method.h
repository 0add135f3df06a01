// The methods of sparse_filter_conv2d, how a name maps to one, and the 'auto' rule.
#pragma once

#include <ATen/ATen.h>

#include "sparse_filter_geometry.h"

namespace torch_sparse_conv {

enum class SparseFilterMethod { Auto, Direct, Unfold, Dense, Spmm };

// Thresholds of the CPU 'auto' rule, from `python -m torch_sparse_conv.bench --suite auto-rule`.
constexpr double kAutoDenseDensity = 0.35;
constexpr double kAutoUnfoldWasteRatio = 3.0;

// "auto" | "direct" | "unfold" | "dense" | "spmm" (CUDA only); anything else is an error
// that names the valid choices.
SparseFilterMethod parse_sparse_filter_method(c10::string_view name);

// The CPU rule for 'auto' (measured; see BENCHMARKS.md): dense when the kept fraction is high,
// unfold when the kept taps share a small union, direct otherwise.
SparseFilterMethod choose_sparse_filter_method_cpu(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const SparseFilterGeometry& g);

// The dense (C_out, C_in/groups, kH, kW) weight of a CSR-packed filter (any device).
at::Tensor unpack_sparse_filter_dense(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                      const at::Tensor& values, at::IntArrayRef weight_size);

}  // namespace torch_sparse_conv
