// The transposed patterns of the input's gradient, kept between calls and found by content.
//
// Training runs the backward on one pattern for thousands of steps, and regrouping its taps
// into the transposed filter (pattern.h) took 5 % of a step of 512x7x7 at 90 %, batch 8, 2
// threads (perf); finding the kept one, comparing it and gathering the values take 2.4 %. What
// the regrouping derives from row_ptr and col_idx alone (the new CSR, and for each of its
// taps the forward's tap it takes its value from) is kept here; the values are gathered
// afresh on every call. An entry is served only when the call's row_ptr and col_idx equal
// the copies it keeps, bit for bit, compared on every call: a write through `.data`, numpy
// or another view, which leaves the version counter unchanged, finds no entry and builds a
// new one. Nothing is keyed on tensor identity or version.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>

namespace torch_sparse_conv {

// A pattern's taps regrouped into another CSR (pattern.cpp, regroup_pattern).
struct RegroupedPattern {
  at::Tensor row_ptr, col_idx;  // int64, rows + 1 and nnz
  at::Tensor source;            // int64, nnz: the forward's tap whose value each tap takes
};

// Everything besides row_ptr and col_idx that a regrouping depends on: which regrouping,
// and the geometry's channels, groups, kernel, stride and dilation.
using RegroupKey = std::array<int64_t, 10>;

// The regrouped pattern of (row_ptr, col_idx) under `key`: a kept one whose copies of
// row_ptr and col_idx equal these bit for bit, else `build(copy of row_ptr, copy of
// col_idx)`, kept for later calls where it fits in TSC_PATTERN_CACHE_MB megabytes in all
// (default 256, read once; 0 keeps none; at most 256 entries; entries that are no longer
// found make room, see PatternCache::keep). row_ptr and col_idx contiguous int64 on the CPU.
// Thread-safe; kept patterns are never written.
std::shared_ptr<const RegroupedPattern> regrouped_pattern(
    const RegroupKey& key, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const std::function<RegroupedPattern(const at::Tensor&, const at::Tensor&)>& build);

// Frees every kept pattern (torch_sparse_conv.empty_pattern_cache()); returns the bytes
// they held (patterns that calls in progress still use are freed when those calls end).
int64_t release_cached_patterns();

}  // namespace torch_sparse_conv
