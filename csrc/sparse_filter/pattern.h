// What the sparse-filter kernels derive from a packed filter's pattern, computed on every
// call from the tensors as they are now.
//
// Nothing here is remembered between calls but the checked pattern itself and the regrouped
// patterns of the transposed and per-phase filters (pattern_cache.h), found by the call's
// row_ptr and col_idx compared bit for bit with the copies they were built from, and the
// plans kept with them; their values are gathered afresh. A write
// through `.data`, numpy or another view changes a tensor without bumping its version
// counter, so a cache keyed on tensor identity and version can serve a stale weight or skip
// the index check that keeps the kernels in bounds. Each pass is O(nnz) (the dense weight
// O(C_out * C_in/groups * kH * kW)) beside a convolution of O(N * H_out * W_out * nnz);
// BENCHMARKS.md ("Per-call checks") has the cost.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "csrc/sparse_filter/geometry.h"

namespace torch_sparse_conv {

struct RegroupedPattern;  // pattern_cache.h

// Per group, the sorted filter columns that at least one of its output channels keeps.
// row_ptr and col_idx must have passed check_csr_contents.
std::vector<std::vector<int64_t>> kept_columns(const at::Tensor& row_ptr,
                                               const at::Tensor& col_idx,
                                               const SparseFilterGeometry& g);

// Fraction of the (group, column) pairs that kept_columns holds, counted without building
// them; the walk stops at the first output channel past `stop_above` and returns what it has
// then (above stop_above): 'auto' only needs to know that unfold cannot win, which with
// random patterns is plain after a few channels.
double union_fraction(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                      const SparseFilterGeometry& g, double stop_above);

// The dense (C_out, C_in/groups, kH, kW) weight, on the CPU: each output channel's row
// zeroed and its kept values added (duplicates sum), in parallel over rows. row_ptr, col_idx
// and values contiguous, the indices checked by check_csr_contents. (Not differentiable:
// the forward of method 'dense'.)
at::Tensor dense_weight_cpu(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const at::Tensor& values, at::IntArrayRef weight_size);

// The output of a filter with no columns (C_in/groups == 0: it reads nothing), for every
// method: the bias broadcast over (N, C_out, H_out, W_out), or zeros. (at::conv2d returns an
// empty tensor of the input's shape there.)
at::Tensor output_without_taps(const at::Tensor& input, const c10::optional<at::Tensor>& bias,
                               const SparseFilterGeometry& g);

// Every check of _sparse_filter_conv2d_backward's arguments (shapes, dtypes, devices, the
// packed weight's indices, grad_output against the forward's output), for every backend.
SparseFilterGeometry check_sparse_filter_backward_args(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

// The pattern (row_ptr, col_idx) itself, checked by check_csr_contents once and kept by
// content (pattern_cache.h): a later call whose row_ptr and col_idx equal it bit for bit finds
// it by that comparison alone, and the plans kept with it (sorted_taps.h) spare the
// forward's kernels their walk over the taps. Its row_ptr and col_idx are the entry's own
// copies, which no one writes: the kernels read those (inside a TrustedPatternScope), not
// the caller's. Entries depend on the filter's channels, groups and kernel size only.
// Where nothing is kept (TSC_PATTERN_CACHE_MB=0, or no room) the caller's tensors, checked.
std::shared_ptr<const RegroupedPattern> checked_pattern(const at::Tensor& row_ptr,
                                                        const at::Tensor& col_idx,
                                                        const SparseFilterGeometry& g);

// The filter of the gradient of the input: for stride 1, the input's gradient is the
// convolution of grad_output with every tap moved to (input channel, output channel) and
// flipped in both kernel dimensions, padded d (k - 1) - p (transposed_padding). Its CSR over
// the input channels, (C_in, C_out/groups, kH, kW), by a counting sort of the taps: O(nnz +
// C_in), each row in order of output channel. Taps of one (output, input) channel pair keep
// their values; duplicates stay duplicates.
struct TransposedFilter {
  at::Tensor row_ptr, col_idx, values;
  std::vector<int64_t> weight_size;
  int64_t phase = 0;  // phase_filters: the phase it is for
  // transposed_filter: the kept pattern row_ptr and col_idx are, and the plans kept with it
  // (null from phase_filters).
  std::shared_ptr<const RegroupedPattern> pattern;
};
TransposedFilter transposed_filter(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                   const at::Tensor& values, const SparseFilterGeometry& g);
// d (k - 1) - p per dimension: the padding of the gradient's convolution (negative where the
// forward's padding exceeds its kernel's reach; then it is not a convolution).
std::array<int64_t, 2> transposed_padding(const SparseFilterGeometry& g);

// The same for a stride of s_h x s_w > 1, one filter per phase (phi, psi) of the input's
// polyphase layout (index phi * s_w + psi): a tap at kernel row a reads phase row
// (d a) mod s, shifted (d a) div s = alpha_a rows; the phase's plane of the input's gradient
// is the stride-1 convolution of grad_output, padded alpha_max = (d (k - 1)) div s, with the
// phase's taps at row alpha_max - alpha_a (flipped), kernel alpha_max + 1, dilation 1.
// Only the phases some column of the kernel reads (at most kH x kW of them), in phase order.
std::vector<TransposedFilter> phase_filters(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                            const at::Tensor& values,
                                            const SparseFilterGeometry& g);
// alpha_max per dimension: the padding of phase_filters' convolutions.
std::array<int64_t, 2> phase_padding(const SparseFilterGeometry& g);

// Per-nonzero facts the per-sample values' gradient needs: the offset of each nonzero's tap
// inside the polyphase layout of the whole sample (group and channel included) and its
// output channel. (Arrays left uninitialised until filled, not written twice.)
struct FilterTaps {
  std::unique_ptr<int64_t[]> out_channel;   // nnz
  std::unique_ptr<int64_t[]> input_offset;  // nnz
};
FilterTaps make_filter_taps(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                            const SparseFilterGeometry& g);

}  // namespace torch_sparse_conv
