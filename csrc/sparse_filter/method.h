// The methods of sparse_filter_conv2d, how a name maps to one, and the 'auto' rule.
#pragma once

#include <ATen/ATen.h>

#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

enum class SparseFilterMethod { Auto, Direct, Unfold, Dense, Spmm };

// The CPU 'auto' rule predicts each method's time relative to dense at::conv2d (oneDNN) and
// takes the fastest. direct: time/dense = density / efficiency + overhead, where the
// efficiency (multiply-adds per second relative to oneDNN) and the fixed overhead (laying
// out the input, writing the output) depend on the layout direct takes (1x1 in place, the
// batch in the vector lanes or one sample at a time, cpu/direct.h) and the length of the
// output run; a stride raises the overhead (more input laid out per output) and lowers the
// lanes layout's efficiency (its tiles read more input per output). 'dense' is not free
// either: it writes the dense weight every call, which costs the most relative to the
// convolution where the output is small (see kDenseRebuild). unfold: a GEMM over the union of
// kept taps, time/dense = union_fraction / kUnfoldEfficiency. Fitted to ResNet-50's 3x3
// layers, stride 1 and 2, densities 2-50 %, batch 1 and 8, 2 threads, on the Intel Xeon with
// AVX-512 (2026-12-02, after the two-pixel lanes tiles; BENCHMARKS.md has the data).
struct DirectCostModel {
  int64_t min_run;  // applies to wide runs at least this long
  double efficiency;
  double overhead;
};

constexpr DirectCostModel kDirectLanesCostModels[] = {
    {2048, 0.62, 0.22}, {512, 0.59, 0.13}, {128, 0.45, 0.13}, {0, 0.38, 0.13}};
constexpr DirectCostModel kDirectCostModels[] = {
    {2048, 0.32, 0.16}, {512, 0.31, 0.145}, {128, 0.32, 0.10}, {0, 0.32, 0.07}};
// A stride of stride_h * stride_w phases: overhead x (1 + (phases - 1) x k...StrideOverhead),
// and the lanes layout's efficiency x kLanesStrideEfficiency (stride-2 fits: overheads 1.6-2.3x
// and 2.1-3.3x the stride-1 ones, lanes efficiencies 0.8-0.95x).
constexpr double kLanesStrideOverhead = 1.0 / 3;
constexpr double kOneSampleStrideOverhead = 2.0 / 3;
constexpr double kLanesStrideEfficiency = 0.85;
// 1x1 layers read in place (cpu/pointwise.cpp), fitted to ResNet-50's stride-1 1x1 layers at
// densities 5-70 %, batch 1 and 8 (2026-12-02, Intel Xeon with AVX-512, 2 threads): planes of
// 56x56 and 28x28 at 0.95 / 0.15-0.20; 14x14 (input through padded planes) at 0.43-0.48 /
// 0.17-0.25.
constexpr DirectCostModel kDirectPointwiseCostModels[] = {{512, 0.95, 0.17}, {0, 0.45, 0.20}};
constexpr double kUnfoldEfficiency = 0.30;
// 'dense' relative to at::conv2d: 1 + kDenseRebuild x (1 + kDenseRebuildPerDensity x density)
// / sqrt(batch x out_h x out_w). Measured 1.22-1.59 on 512@7 at batch 1 (2-50 %), 1.11-1.31 on
// 256@14, 1.08-1.16 on 512@7 at batch 8, 1.03-1.06 on 64@56 at batch 1.
constexpr double kDenseRebuild = 1.5;
constexpr double kDenseRebuildPerDensity = 2.5;
constexpr double kAutoMinGain = 1.05;  // leave dense only for a predicted 5% win

// The CPU backward's rule for the gradient of the kept values (cpu/backward.cpp): its sparse
// kernels up to a density, above it oneDNN's weight gradient read at the kept taps. Their
// time relative to oneDNN's, ResNet-50's 3x3 layers (64@56 .. 512@7), 2 threads, Intel Xeon
// with AVX-512 (2026-12-02): with the batch in the lanes (batch 8) 0.56-0.70 at 10 %,
// 0.76-0.95 at 15 %, 1.02-1.30 at 20 %; one sample at a time (batch 1) 0.61-0.94 at 10 %,
// 0.76-1.37 at 15 %, 1.04-1.74 at 20 %. Strided with the batch in the lanes (ResNet's stride-2
// 3x3 layers, batch 8 and 16, 2026-12-02): 0.55-0.75 at 10 %, 0.71-1.0 at 15 %, 0.93-1.27 at
// 20 % (ResNet's 7x7 stem 0.37-0.61 at 10 %); one sample at a time 0.93-1.21 at 10 %,
// 0.65-0.93 at 5 %.
constexpr double kGradValuesLanesMaxDensity = 0.15;
constexpr double kGradValuesLanesStridedMaxDensity = 0.12;
constexpr double kGradValuesOneSampleMaxDensity = 0.10;
constexpr double kGradValuesStridedMaxDensity = 0.07;
// Where a strided kernel reads every phase and the values' gradient goes to oneDNN (density
// above the limits above), the input's gradient goes with it, both from one oneDNN call:
// ResNet-50's stride-2 3x3 layers at batch 8, 2 threads, AMD EPYC Zen 4 (2026-12-03), the
// input's gradient phase by phase against oneDNN's: 128->256@28 5.6 / 6.2 ms, 256->512@14
// 8.7 / 6.1 ms at 80 %; 7.3 / 5.8 and 8.8 / 6.1 ms at 85 % (the whole backward 0.80-0.93x
// of oneDNN's). A 1x1 stride-2 layer reads one phase of four: its input's gradient is one
// sparse convolution, 2.3-3.5x faster than oneDNN's at 80-90 %, and stays sparse.
// The input's gradient at a stride is one convolution per stride phase that the kernel's taps
// read, each reading all of grad_output; past this many (a 16x16 patchify layer of stride 16
// has 256) oneDNN's input gradient, on the dense weight, is taken instead.
constexpr int64_t kMaxPhaseConvolutions = 16;

// Whether the sparse kernels compute grad_values (`lanes`: the batch-in-lanes one takes the
// whole blocks of samples).
bool grad_values_sparse_pays(const SparseFilterGeometry& g, int64_t nnz, bool lanes);

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
