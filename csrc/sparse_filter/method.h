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
// output run; a stride raises the lanes layout's overhead (more input laid out per output)
// and lowers both layouts' efficiency (their tiles read more input per output). 'dense' is
// not free either: it writes the dense weight every call, which costs the most relative to
// the convolution where the output is small (`dense_rebuild`). unfold: a GEMM over the
// union of kept taps, time/dense = union_fraction / kUnfoldEfficiency.
//
// The constants are the processor's: oneDNN's rate against ours differs by machine (Intel
// Xeons run two 512-bit multiply-adds a cycle, which oneDNN's dense kernels use and our
// load-bound sparse ones cannot; Zen 4 runs one), so one set picked direct where it lost on
// the other (256@14 at 50 %, batch 8, 0.73x dense on the Intel Xeon VM with Zen 4's). Each
// set is fitted by scripts/fit_auto_rule.py (least squares, the cells near the crossover
// weighted 3x) to the medians of three interleaved sweeps of ResNet-50's 3x3 layers at
// stride 1 and 2 and its 1x1 layers, densities 2-50 %, batch 1 and 8, 2 threads;
// BENCHMARKS.md has the data.
struct DirectCostModel {
  int64_t min_run;  // applies to wide runs at least this long
  double efficiency;
  double overhead;
};

struct AutoRule {
  const char* name;
  // By output run, longest first; the last applies to every run.
  DirectCostModel lanes[4];
  DirectCostModel one_sample[4];
  // 1x1 layers read in place (cpu/pointwise.cpp): planes of 512 positions and more (56x56,
  // 28x28), then 14x14.
  DirectCostModel pointwise[2];
  // A stride of stride_h * stride_w phases: the lanes layout's overhead x (1 + (phases - 1)
  // x lanes_stride_overhead) and efficiency x lanes_stride_efficiency; one sample at a time,
  // the efficiency x one_sample_stride_efficiency (its overhead fitted no higher than at
  // stride 1).
  double lanes_stride_overhead, lanes_stride_efficiency, one_sample_stride_efficiency;
  // 'dense' relative to at::conv2d: 1 + rebuild x (1 + per_density x density) / (batch x
  // out_h x out_w)^outputs_power: writing the weight and reading the CSR (12 bytes a tap)
  // against a convolution that reuses each weight once per output position.
  double dense_rebuild, dense_rebuild_per_density, dense_rebuild_outputs_power;
};

// The AMD EPYC Zen 4 VM, refitted 2026-12-07 on the kernels of that day (first fitted
// 2026-12-04; since then the lanes and one-sample layouts' efficiencies against oneDNN rose
// by up to a third there). Measured on three sweeps each: `auto` more than 5 % above the better of
// `direct` and `dense` in 6 of 180 cells with the old set (512@14 stride 2 at batch 1 and
// 50 %: 1.40x), in 3 with this one (1.10x at most). BENCHMARKS.md, thirty-eighth session.
// Also the rule of processors that are neither AMD's nor Intel's.
constexpr AutoRule kZen4AutoRule = {
    "zen4",
    {{2048, 0.91, 0.20}, {512, 0.85, 0.16}, {128, 0.79, 0.20}, {0, 0.49, 0.26}},
    {{2048, 0.59, 0.17}, {512, 0.52, 0.19}, {128, 0.44, 0.08}, {0, 0.49, 0.21}},
    {{512, 0.98, 0.15}, {0, 0.60, 0.16}},
    0.0, 0.675, 0.925,
    1.07, 9.5, 0.6};

// The Intel Xeon VM (Emerald Rapids, 2026-12-05); the one-sample models refitted the same day
// after that kernel moved to 64-byte vectors there (simd.cpp), which made it 1.2-1.5x faster:
// with the earlier ones auto took oneDNN at batch 1 and 70 % where direct ran 1.09x faster.
// (So they assume that width: with TSC_CONV_VECTOR_BYTES=32 or below AVX-512 they overrate
// the one-sample layout.)
constexpr AutoRule kIntelXeonAutoRule = {
    "intel-xeon",
    {{2048, 0.60, 0.21}, {512, 0.58, 0.15}, {128, 0.40, 0.14}, {0, 0.42, 0.28}},
    {{2048, 0.43, 0.23}, {512, 0.38, 0.19}, {128, 0.35, 0.16}, {0, 0.35, 0.28}},
    {{512, 0.91, 0.13}, {0, 0.43, 0.19}},
    0.05, 0.925, 0.850,
    1.84, 4.5, 0.6};

// Every rule, by name: TSC_AUTO_RULE's choices, and what scripts/fit_auto_rule.py scores a
// refit against (torch_sparse_conv._C._auto_rules()).
inline constexpr const AutoRule* kAutoRules[] = {&kZen4AutoRule, &kIntelXeonAutoRule};

// The rule for this process's processor (CPUID's vendor), read once; TSC_AUTO_RULE=zen4 or
// intel-xeon picks one by name (tests, comparisons).
const AutoRule& cpu_auto_rule();

constexpr double kUnfoldEfficiency = 0.30;
constexpr double kAutoMinGain = 1.05;  // leave dense only for a predicted 5% win

// The CPU backward's rule for the gradient of the kept values (cpu/backward.cpp): its sparse
// kernels up to a density, above it oneDNN's weight gradient read at the kept taps. Their
// time relative to oneDNN's on the AMD EPYC Zen 4 VM (2026-12-04, 2 threads, medians of two
// or three interleaved sweeps; strided: the whole backward, as the input's gradient follows
// the values' choice there). Batch in the lanes (batch 8): ResNet-50's 3x3 layers 0.38-0.43
// at 20 %, 0.47-0.55 at 30 %, 0.62-0.68 at 40 %, 0.70-0.81 at 50 %; its 1x1 layers 0.59-0.81
// at 25 %, 0.70-0.90 at 30 %, 0.90-1.14 at 40 %. Strided (3x3 stride 2, batch 8) 0.60-0.63
// at 20 %, 0.76-0.82 at 30 %, 0.76-1.10 at 40 %. One sample at a time (batch 1) 0.39-0.74 at
// 20 %, 0.46-0.88 at 25 %, 0.54-1.01 at 30 % (512@7 the slowest); strided (3x3 stride 2 at
// batch 1, 1x1 stride 2 at batch 1 and 8) 0.34-0.84 at 15 %, 0.40-1.00 at 20 %.
constexpr double kGradValuesLanesMaxDensity = 0.45;
constexpr double kGradValuesLanesPointwiseMaxDensity = 0.25;  // 1x1 kernels
constexpr double kGradValuesLanesStridedMaxDensity = 0.30;
constexpr double kGradValuesOneSampleMaxDensity = 0.22;
constexpr double kGradValuesStridedMaxDensity = 0.15;
// Where a strided kernel reads every phase and the values' gradient goes to oneDNN (density
// above the limits above), the input's gradient goes with it, both from one oneDNN call
// (hence the strided limits were measured on the whole backward). Phase by phase the input's
// gradient alone can be slower than oneDNN's (256->512@14 at 80 %, batch 8: 8.7 against 6.1
// ms, 2026-12-03), the values' kernels more than make up for it below the limits. A 1x1
// stride-2 layer reads one phase of four: its input's gradient is one sparse convolution and
// stays sparse.
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
