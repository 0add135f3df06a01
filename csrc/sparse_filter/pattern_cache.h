// The patterns the sparse-filter CPU kernels keep between calls, found by content: the
// forward's own, checked (checked_pattern, pattern.h), and the transposed and per-phase
// patterns of the input's gradient.
//
// Training runs the backward on one pattern for thousands of steps, and regrouping its taps
// into the transposed filter (pattern.h) took 5 % of a step of 512x7x7 at 90 %, batch 8, 2
// threads (perf); finding the kept one, comparing it and gathering the values take 2.4 %. What
// the regrouping derives from row_ptr and col_idx alone (the new CSR, and for each of its
// taps the forward's tap it takes its value from) is kept here; the values are gathered
// afresh on every call. An entry is served only when the call's row_ptr and col_idx equal
// the copies it keeps, bit for bit, compared on every call: a write through `.data`, numpy
// or another view, which leaves the version counter unchanged, finds no entry and builds a
// new one. Nothing is found by tensor identity or version from one call to the next; within
// a call, a TrustedPatternScope names by identity the pattern that call checked or built
// itself. Plans derived from an entry's pattern (DerivedPlans) live and die with it.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace torch_sparse_conv {

// The kinds of plan kept (DerivedPlans), each key's first element.
enum class PlanType : int64_t {
  kSortedTaps = 0,      // sorted_taps.h, sort_taps: the forward kernels
  kValuesGradient = 1,  // cpu/backward.cpp, values_gradient_plan
};

// Plans that kernels derive from a kept pattern and a layer's geometry, not from its values
// (chunk bounds and tap offsets: sorted_taps.h, and the values' gradient's in
// cpu/backward.cpp), kept with the pattern, so that a call that finds the pattern builds
// none of them again: their walks over the taps were 6 % of a training step of 512x7x7 at
// 95 %, batch 8, 2 threads (perf). Kept against rebuilt (15 alternated rounds, Intel Xeon
// VM): the backward's, a step of 512x7x7 at 90 / 95 % 0.90x / 0.93x the time, the other 3x3
// layers of ResNet-50 0.98-1.0x; the forward's (its pattern compared instead of checked and
// walked, 11 rounds), 512x7x7 at batch 1 0.83x / 0.85x, 256x14x14 0.94x, batch 8 512x7x7
// 0.91x at 90 %, the others 0.96-1.0x. Within the room the entry reserved for them
// (PlanRoom, counted in the cache's megabytes); a plan that does not fit is built for its
// call only. Thread-safe.
class DerivedPlans {
 public:
  explicit DerivedPlans(int64_t room) : room_(room) {}

  // The plan kept under `key` (whose first element is the plan's PlanType), else build()'s,
  // kept where it and its key fit the room left (and not where build() returns null).
  template <class Plan, class Build>
  std::shared_ptr<const Plan> get(const std::vector<int64_t>& key, Build&& build) const {
    if (auto kept = find(key)) return std::static_pointer_cast<const Plan>(kept);
    std::shared_ptr<const Plan> plan = build();  // null: none to keep
    if (plan != nullptr) {
      keep(key, plan, plan->bytes() + int64_t(key.size() * sizeof(int64_t)));
    }
    return plan;
  }

 private:
  std::shared_ptr<const void> find(const std::vector<int64_t>& key) const;
  void keep(const std::vector<int64_t>& key, std::shared_ptr<const void> plan,
            int64_t bytes) const;

  const int64_t room_;
  mutable std::mutex mutex_;
  mutable int64_t used_ = 0;
  mutable std::vector<std::pair<std::vector<int64_t>, std::shared_ptr<const void>>> plans_;
};

// A pattern's taps regrouped into another CSR (pattern.cpp, regroup_pattern), or the pattern
// itself, checked (checked_pattern: row_ptr and col_idx are the entry's copies, source
// undefined).
struct RegroupedPattern {
  at::Tensor row_ptr, col_idx;  // int64, rows + 1 and nnz
  at::Tensor source;            // int64, nnz: the forward's tap whose value each tap takes
  // Set by regrouped_pattern: the row_ptr and col_idx it was built from (the entry's copies,
  // which no one writes: plans of that pattern are built from these, never from a caller's
  // tensors, which another thread may be writing), and the plans of both patterns.
  at::Tensor built_from_row_ptr, built_from_col_idx;
  std::shared_ptr<const DerivedPlans> plans;
};

// For the calls this thread makes while it lives, `pattern`'s row_ptr and col_idx are known
// to be valid: checked in this call, or built from a CSR checked in this call, and not
// written until it ends. The forward runs its kernels inside one on its checked pattern (a
// kept entry's copies, or the caller's tensors where nothing is kept), the backward its
// convolutions with the transposed and per-phase filters; trusted_pattern finds it by tensor
// identity, so that the forward kernels neither check that CSR again nor rebuild the plans
// kept with it.
class TrustedPatternScope {
 public:
  explicit TrustedPatternScope(const RegroupedPattern* pattern);
  ~TrustedPatternScope();
  TrustedPatternScope(const TrustedPatternScope&) = delete;
  TrustedPatternScope& operator=(const TrustedPatternScope&) = delete;

 private:
  const RegroupedPattern* previous_;
};

// The pattern of the innermost TrustedPatternScope on this thread where row_ptr and col_idx
// are its very tensors, else null.
const RegroupedPattern* trusted_pattern(const at::Tensor& row_ptr, const at::Tensor& col_idx);

// The room an entry reserves for the plans kept with it (DerivedPlans), counted in the
// cache's megabytes: none (the per-phase patterns, whose filters are never trusted), a
// forward's (checked_pattern: two plans of its kernels, tap offsets included, for a layer
// called at two batch sizes), or the backward's (the transposed pattern: its convolution's
// plan and the values' gradient's, both with tap offsets).
enum class PlanRoom { kNone, kForward, kBackward };

// Everything besides row_ptr and col_idx that a regrouping depends on: which regrouping,
// and the geometry's channels, groups, kernel, stride and dilation.
using RegroupKey = std::array<int64_t, 10>;

// The regrouped pattern of (row_ptr, col_idx) under `key`: a kept one whose copies of
// row_ptr and col_idx equal these bit for bit, else `build(copy of row_ptr, copy of
// col_idx)`, kept for later calls where it fits in TSC_PATTERN_CACHE_MB megabytes in all
// (default 256, read once; 0 keeps none; at most 1024 entries; entries that are no longer
// found make room, see PatternCache::keep), with room reserved for its plans (`plans`).
// Where it could not be kept (no room), `build(row_ptr, col_idx)` for this call, without
// copies or room for plans. row_ptr and col_idx contiguous
// int64 on the CPU. Thread-safe; kept patterns are never written.
std::shared_ptr<const RegroupedPattern> regrouped_pattern(
    const RegroupKey& key, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const std::function<RegroupedPattern(const at::Tensor&, const at::Tensor&)>& build,
    PlanRoom plans);

// How often, since the process started, regrouped_pattern found a kept pattern or built one
// (kept or for its call only), and a pattern's DerivedPlans found a plan or built one (kept
// where it had room, else for the call; plans of calls without a pattern to keep them with,
// such as an unsorted hand-made CSR's, are not counted). Tests read them
// (torch_sparse_conv._C._pattern_cache_counters) to see that kept patterns and plans are
// served, and that a pattern written in place is not.
struct PatternCacheCounters {
  int64_t patterns_found, patterns_built, plans_found, plans_built;
};
PatternCacheCounters pattern_cache_counters();

// Frees every kept pattern (torch_sparse_conv.empty_pattern_cache()); returns the bytes
// they held (patterns that calls in progress still use are freed when those calls end).
int64_t release_cached_patterns();

}  // namespace torch_sparse_conv
