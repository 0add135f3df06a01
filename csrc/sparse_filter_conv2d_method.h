// The methods of sparse_filter_conv2d, how a name maps to one, and the 'auto' rule.
#pragma once

#include <ATen/ATen.h>

#include "sparse_filter_geometry.h"

namespace torch_sparse_conv {

enum class SparseFilterMethod { Auto, Direct, Unfold, Dense, Spmm };

// The CPU 'auto' rule predicts each method's speed relative to dense at::conv2d (oneDNN)
// and takes the fastest. direct does density * dense's multiply-adds at an efficiency that
// grows with the output plane (short runs pay per-tap overhead); unfold does
// union_fraction * dense's work in a GEMM. Efficiencies measured on ResNet-50's 3x3 layers,
// batch 8, 2 threads, AVX-512 (see BENCHMARKS.md).
constexpr double kDirectEfficiencyLargePlane = 0.13;   // wide run >= 512 positions
constexpr double kDirectEfficiencyMediumPlane = 0.10;  // 128..511
constexpr double kDirectEfficiencySmallPlane = 0.035;  // < 128
constexpr double kUnfoldEfficiency = 0.33;
constexpr double kAutoMinGain = 1.1;  // leave dense only for a predicted 10% win

// "auto" | "direct" | "unfold" | "dense" | "spmm" (CUDA only); anything else is an error
// that names the valid choices.
SparseFilterMethod parse_sparse_filter_method(c10::string_view name);

// The CPU rule for 'auto' (see the constants above).
SparseFilterMethod choose_sparse_filter_method_cpu(
    const at::Tensor& row_ptr, const at::Tensor& col_idx, const SparseFilterGeometry& g);

// The dense (C_out, C_in/groups, kH, kW) weight of a CSR-packed filter (any device).
at::Tensor unpack_sparse_filter_dense(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                      const at::Tensor& values, at::IntArrayRef weight_size);

}  // namespace torch_sparse_conv
