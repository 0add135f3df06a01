// The methods of sparse_filter_conv2d, how a name maps to one, and the 'auto' rule.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

enum class SparseFilterMethod { Auto, Direct, Unfold, Dense, Spmm };

// The CPU 'auto' rule predicts each method's time relative to dense at::conv2d (oneDNN) and
// takes the fastest. direct: time/dense = density / efficiency + overhead, where the
// efficiency (multiply-adds per second relative to oneDNN) and the fixed overhead (laying
// out the input, writing the output; times stride_h * stride_w) depend on the layout direct
// takes (1x1 in place, the batch in the vector lanes or one sample at a time, cpu/direct.h)
// and the length of the output run. unfold: a GEMM over the union of kept taps,
// time/dense = union_fraction / kUnfoldEfficiency. Fitted to ResNet-50's 3x3 layers, batch 8,
// 2 threads, AVX-512 (BENCHMARKS.md): the lanes models to the 2026-12-01 evening run, the
// one-sample models to the runs before the lanes layout existed.
struct DirectCostModel {
  int64_t min_run;  // applies to wide runs at least this long
  double efficiency;
  double overhead;
};
constexpr DirectCostModel kDirectLanesCostModels[] = {
    {512, 0.50, 0.09}, {128, 0.45, 0.10}, {0, 0.40, 0.15}};
constexpr DirectCostModel kDirectCostModels[] = {
    {2048, 0.32, 0.15}, {512, 0.32, 0.13}, {128, 0.27, 0.08}, {0, 0.24, 0.19}};
// 1x1 layers read in place (cpu/pointwise.cpp), fitted to ResNet-50's stride-1 1x1 layers at
// densities 5-60 %, batch 1 and 8 (2026-12-02, Intel Xeon with AVX-512, 2 threads): planes of
// 56x56 and 28x28 at 0.95 / 0.15-0.20; 14x14 (copied through padded planes) at 0.35 / 0.20.
constexpr DirectCostModel kDirectPointwiseCostModels[] = {{512, 0.95, 0.17}, {0, 0.35, 0.20}};
constexpr double kUnfoldEfficiency = 0.30;
constexpr double kAutoMinGain = 1.05;  // leave dense only for a predicted 5% win

// "auto" | "direct" | "unfold" | "dense" | "spmm" (CUDA only); anything else is an error
// that names the valid choices.
SparseFilterMethod parse_sparse_filter_method(c10::string_view name);

// The CPU rule for 'auto' (see the constants above), for a packed filter whose indices
// passed check_csr_contents, on an input of `dtype`.
SparseFilterMethod choose_sparse_filter_method_cpu(const at::Tensor& row_ptr,
                                                   const at::Tensor& col_idx,
                                                   const SparseFilterGeometry& g,
                                                   at::ScalarType dtype);

// The dense (C_out, C_in/groups, kH, kW) weight of a CSR-packed filter (any device).
at::Tensor unpack_sparse_filter_dense(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                      const at::Tensor& values, at::IntArrayRef weight_size);

}  // namespace torch_sparse_conv
