#include "csrc/sparse_filter/pattern_cache.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <new>
#include <vector>

#include "csrc/common/cpu_isa.h"
#include "csrc/common/env_megabytes.h"
#include "csrc/common/vector.h"

namespace torch_sparse_conv {
namespace {

// At most this many entries, so the scan for a key stays short whatever the byte limit. A
// layer trained keeps two (its checked pattern and its transposed one; a strided layer's
// per-phase pattern too): a ResNet-152 has 155 convolutions.
constexpr size_t kMaxEntries = 1024;

// memcmp of n int64s; empty arrays (whose data() may be null, which memcmp must not be given)
// are equal. Large arrays in parallel: row_ptr, and col_idx where its values need int64.
bool same_values(const int64_t* a, const int64_t* b, size_t n) {
  constexpr int64_t kGrain = int64_t(1) << 16;
  if (n == 0) return true;
  return at::parallel_reduce(
      0, int64_t(n), kGrain, true,
      [&](int64_t begin, int64_t end, bool same) {
        return same && std::memcmp(a + begin, b + begin, (end - begin) * sizeof(int64_t)) == 0;
      },
      [](bool x, bool y) { return x && y; });
}

// Whether a[i] == b[i] for i in [begin, end), b a narrower copy: blocks without a branch per
// element (so that the compiler vectorises the loop), stopping at the first block that
// differs. Compiled per instruction set (csrc/common/cpu_isa.h): widening int16 is one
// instruction per vector with AVX2 and AVX-512, several with the baseline's SSE2.
template <typename narrow_t>
TSC_INLINE bool same_run_impl(const int64_t* a, const narrow_t* b, int64_t begin, int64_t end) {
  constexpr int64_t kBlock = 1024;
  for (int64_t i = begin; i < end; i += kBlock) {
    const int64_t stop = std::min(end, i + kBlock);
    int64_t differ = 0;
    for (int64_t j = i; j < stop; ++j) differ |= a[j] ^ static_cast<int64_t>(b[j]);
    if (differ != 0) return false;
  }
  return true;
}
template <typename narrow_t>
TSC_TARGET_AVX512 bool same_run_avx512(const int64_t* a, const narrow_t* b, int64_t begin,
                                       int64_t end) {
  return same_run_impl(a, b, begin, end);
}
template <typename narrow_t>
TSC_TARGET_AVX2 bool same_run_avx2(const int64_t* a, const narrow_t* b, int64_t begin,
                                   int64_t end) {
  return same_run_impl(a, b, begin, end);
}
template <typename narrow_t>
bool same_run_baseline(const int64_t* a, const narrow_t* b, int64_t begin, int64_t end) {
  return same_run_impl(a, b, begin, end);
}

// Whether a[i] == b[i] for i < n; in parallel where long. Every forward of a kept pattern
// compares the caller's col_idx with the entry's copy (2.5 million taps in a ResNet-50 at
// 90 %): from an int16 copy, 10 bytes a tap are read instead of memcmp's 16.
template <typename narrow_t>
bool same_as_narrow(const int64_t* a, const narrow_t* b, int64_t n) {
  constexpr int64_t kGrain = int64_t(1) << 14;
  using Run = bool (*)(const int64_t*, const narrow_t*, int64_t, int64_t);
  static const Run same_run = isa_variant<Run>(&same_run_avx512<narrow_t>,
                                               &same_run_avx2<narrow_t>,
                                               &same_run_baseline<narrow_t>);
  return at::parallel_reduce(
      0, n, kGrain, true,
      [&](int64_t begin, int64_t end, bool same) { return same && same_run(a, b, begin, end); },
      [](bool x, bool y) { return x && y; });
}

// col_idx's values in int16 or int32, the narrowest that holds every one of them exactly (so
// that a caller's value equals the copy's, widened, only where it equals the original);
// undefined where neither does (the entry's int64 copy is compared then).
template <typename narrow_t>
bool holds_all(int64_t low, int64_t high) {
  return low >= std::numeric_limits<narrow_t>::min() && high <= std::numeric_limits<narrow_t>::max();
}
at::Tensor narrow_copy(const at::Tensor& col_idx) {
  if (col_idx.numel() == 0) return col_idx.to(at::kShort);
  const auto [low_t, high_t] = at::aminmax(col_idx);
  const int64_t low = low_t.item<int64_t>(), high = high_t.item<int64_t>();
  if (holds_all<int16_t>(low, high)) return col_idx.to(at::kShort);
  if (holds_all<int32_t>(low, high)) return col_idx.to(at::kInt);
  return at::Tensor();
}

// Whether the caller's col_idx equals the entry's: through its narrow copy where it has one.
bool same_as(const at::Tensor& caller, const at::Tensor& copy, const at::Tensor& narrow) {
  const int64_t* a = caller.data_ptr<int64_t>();
  const int64_t n = caller.numel();
  if (n == 0) return true;
  if (!narrow.defined()) return same_values(copy.data_ptr<int64_t>(), a, n);
  if (narrow.scalar_type() == at::kShort) {
    return same_as_narrow(a, narrow.data_ptr<int16_t>(), n);
  }
  return same_as_narrow(a, narrow.data_ptr<int32_t>(), n);
}

struct Entry {
  RegroupKey key;
  at::Tensor row_ptr, col_idx;  // copies of what the pattern was built from
  at::Tensor col_idx_narrow;    // col_idx again, narrow_copy's, for the comparison (or none)
  std::shared_ptr<const RegroupedPattern> pattern;
  size_t bytes = 0;

  bool holds(const RegroupKey& k, const at::Tensor& rp, const at::Tensor& ci) const {
    return key == k && row_ptr.numel() == rp.numel() && col_idx.numel() == ci.numel() &&
           // row_ptr first: two patterns of one shape and size differ there within a few rows.
           same_values(row_ptr.data_ptr<int64_t>(), rp.data_ptr<int64_t>(), rp.numel()) &&
           same_as(ci, col_idx, col_idx_narrow);
  }
};

class PatternCache {
  struct Slot {
    std::shared_ptr<const Entry> entry;
    uint64_t last_use;  // lookups_ when it was last found or kept
  };

 public:
  std::shared_ptr<const RegroupedPattern> find(const RegroupKey& key, const at::Tensor& rp,
                                               const at::Tensor& ci) {
    std::vector<std::shared_ptr<const Entry>> candidates;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++lookups_;
      for (const Slot& slot : slots_) {
        if (slot.entry->key == key && slot.entry->col_idx.numel() == ci.numel()) {
          candidates.push_back(slot.entry);
        }
      }
    }
    // Compared outside the lock: other threads' calls need not wait for it.
    for (const auto& entry : candidates) {
      if (!entry->holds(key, rp, ci)) continue;
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = std::find_if(slots_.begin(), slots_.end(),
                             [&](const Slot& slot) { return slot.entry == entry; });
      if (it != slots_.end()) {
        reuse_distance_ = std::max(reuse_distance_, lookups_ - it->last_use);
        it->last_use = lookups_;
        slots_.splice(slots_.end(), slots_, it);  // most recently used last
      }
      return entry->pattern;
    }
    return nullptr;
  }

  // Keeps `entry` if it fits. To make room it drops only entries that no lookup has found for
  // twice the longest gap seen between two finds of one entry (training finds each layer's
  // once or twice per step), and at least 2 * kMaxEntries lookups, so that a first pass over
  // a model of up to kMaxEntries entries evicts nothing it will find on the next. When a model's
  // patterns exceed the limit, the ones kept stay found, instead of each new one evicting the
  // next layer's in turn and none ever being found; patterns no longer used (a pruning step
  // changed them) age out.
  void keep(std::shared_ptr<const Entry> entry) {
    std::vector<std::shared_ptr<const Entry>> dropped;  // freed outside the lock
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Slot& slot : slots_) {
      if (slot.entry->holds(entry->key, entry->row_ptr, entry->col_idx)) return;  // a twin
    }
    const uint64_t stale_after = 2 * std::max<uint64_t>(reuse_distance_, kMaxEntries);
    while (!slots_.empty() &&
           (bytes_ + entry->bytes > limit_ || slots_.size() + 1 > kMaxEntries) &&
           lookups_ - slots_.front().last_use > stale_after) {
      bytes_ -= slots_.front().entry->bytes;
      dropped.push_back(std::move(slots_.front().entry));
      slots_.pop_front();
    }
    if (bytes_ + entry->bytes > limit_ || slots_.size() + 1 > kMaxEntries) return;
    slots_.push_back({std::move(entry), lookups_});
    bytes_ += slots_.back().entry->bytes;
  }

  // Whether keep() could find `bytes` of room now (dropping only what it would drop).
  bool may_keep(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > limit_) return false;
    const uint64_t stale_after = 2 * std::max<uint64_t>(reuse_distance_, kMaxEntries);
    size_t used = bytes_, entries = slots_.size();
    for (const Slot& slot : slots_) {  // least recently used first, as keep() drops them
      if (used + bytes <= limit_ && entries + 1 <= kMaxEntries) break;
      if (lookups_ - slot.last_use <= stale_after) break;
      used -= slot.entry->bytes;
      --entries;
    }
    return used + bytes <= limit_ && entries + 1 <= kMaxEntries;
  }

  int64_t release_all() {
    std::list<Slot> released;  // freed after the lock
    std::lock_guard<std::mutex> lock(mutex_);
    released.swap(slots_);
    const size_t bytes = bytes_;
    bytes_ = 0;
    return static_cast<int64_t>(bytes);
  }

  size_t limit() const { return limit_; }

  static PatternCache& instance() {
    // Never destroyed: a backward may run during interpreter shutdown.
    static auto* cache = new PatternCache();
    return *cache;
  }

 private:
  std::mutex mutex_;
  std::list<Slot> slots_;  // least recently used first
  size_t bytes_ = 0;
  uint64_t lookups_ = 0;
  uint64_t reuse_distance_ = 0;  // the most lookups seen between two finds of one entry
  const size_t limit_ = megabytes_from_env("TSC_PATTERN_CACHE_MB", 256);
};

thread_local const RegroupedPattern* innermost_trusted = nullptr;

// pattern_cache_counters(): relaxed atomics, read by tests between calls.
std::atomic<int64_t> patterns_found{0}, patterns_built{0}, plans_found{0}, plans_built{0};

// Room for a pattern's plans (PlanRoom), each up to 32 chunk bounds per row and a key of
// about one element per filter column (4 KiB: 512 input channels of a 3x3 kernel), a tap
// offset per tap where it has them. A plan that needs more is built for its call only. The
// forward keeps two plans: a layer called at two batch sizes (served at batch 1 and 8, or
// evaluated at one and trained at another) lays its input out in two geometries, and with
// room for one the second was planned anew at every call (batch 1 512x7x7 at 90 %, called
// after batch 8: 1.5x the time).
int64_t plan_room(PlanRoom plans, const at::Tensor& row_ptr, const at::Tensor& col_idx,
                  const at::Tensor& built_row_ptr) {
  constexpr int64_t kKey = 4096;
  auto bounds = [](const at::Tensor& rows) {
    return rows.numel() * 33 * int64_t(sizeof(int64_t));
  };
  switch (plans) {
    case PlanRoom::kNone:
      return 0;
    case PlanRoom::kForward:
      return 2 * (col_idx.nbytes() + 2 * (bounds(row_ptr) + kKey));
    case PlanRoom::kBackward:
      return 2 * col_idx.nbytes() + bounds(row_ptr) + bounds(built_row_ptr) + 2 * kKey;
  }
  return 0;
}

// A pattern kept nowhere, built from the caller's tensors for one call; no room for plans
// (which would be built from the caller's tensors too).
std::shared_ptr<const RegroupedPattern> built_for_this_call(
    const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const std::function<RegroupedPattern(const at::Tensor&, const at::Tensor&)>& build) {
  patterns_built.fetch_add(1, std::memory_order_relaxed);
  RegroupedPattern p = build(row_ptr, col_idx);
  p.built_from_row_ptr = row_ptr;
  p.built_from_col_idx = col_idx;
  p.plans = std::make_shared<const DerivedPlans>(0);
  return std::make_shared<const RegroupedPattern>(std::move(p));
}

}  // namespace

std::shared_ptr<const void> DerivedPlans::find(const std::vector<int64_t>& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [k, plan] : plans_) {
    if (k == key) {
      plans_found.fetch_add(1, std::memory_order_relaxed);
      return plan;
    }
  }
  return nullptr;
}

void DerivedPlans::keep(const std::vector<int64_t>& key, std::shared_ptr<const void> plan,
                        int64_t bytes) const {
  plans_built.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& kept : plans_) {
    if (kept.first == key) return;  // another thread's, the same
  }
  if (used_ + bytes > room_) return;
  try {
    plans_.emplace_back(key, std::move(plan));
  } catch (const std::bad_alloc&) {
    return;  // not kept: this call has its plan all the same
  }
  used_ += bytes;
}

TrustedPatternScope::TrustedPatternScope(const RegroupedPattern* pattern)
    : previous_(innermost_trusted) {
  innermost_trusted = pattern;
}

TrustedPatternScope::~TrustedPatternScope() { innermost_trusted = previous_; }

const RegroupedPattern* trusted_pattern(const at::Tensor& row_ptr, const at::Tensor& col_idx) {
  const RegroupedPattern* p = innermost_trusted;
  return p != nullptr && row_ptr.is_same(p->row_ptr) && col_idx.is_same(p->col_idx) ? p
                                                                                     : nullptr;
}

std::shared_ptr<const RegroupedPattern> regrouped_pattern(
    const RegroupKey& key, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const std::function<RegroupedPattern(const at::Tensor&, const at::Tensor&)>& build,
    PlanRoom plans) {
  PatternCache& cache = PatternCache::instance();
  if (cache.limit() == 0) return built_for_this_call(row_ptr, col_idx, build);
  if (auto kept = cache.find(key, row_ptr, col_idx)) {
    patterns_found.fetch_add(1, std::memory_order_relaxed);
    return kept;
  }
  // About what the entry will hold: the copies and the plans' room. Where that cannot be
  // kept (a model whose patterns outgrow the limit), no copies are made for nothing: a
  // forward whose pattern is not kept then costs what it did before patterns were kept
  // (the check and the walks), not a copy more.
  const size_t least = row_ptr.nbytes() + col_idx.nbytes() +
                       size_t(col_idx.numel()) * sizeof(int16_t) +  // the narrow copy, if int16
                       size_t(plan_room(plans, row_ptr, col_idx, row_ptr));
  if (!cache.may_keep(least)) return built_for_this_call(row_ptr, col_idx, build);
  // Built from copies, the ones the entry keeps: what it is found by is what it was built
  // from, even if another thread wrote the caller's tensors meanwhile.
  patterns_built.fetch_add(1, std::memory_order_relaxed);
  auto entry = std::make_shared<Entry>();
  entry->key = key;
  entry->row_ptr = row_ptr.clone();
  entry->col_idx = col_idx.clone();
  RegroupedPattern built = build(entry->row_ptr, entry->col_idx);
  built.built_from_row_ptr = entry->row_ptr;
  built.built_from_col_idx = entry->col_idx;
  const int64_t room = plan_room(plans, row_ptr, col_idx, built.row_ptr);
  built.plans = std::make_shared<const DerivedPlans>(room);
  entry->pattern = std::make_shared<const RegroupedPattern>(std::move(built));
  entry->col_idx_narrow = narrow_copy(entry->col_idx);
  const RegroupedPattern& p = *entry->pattern;
  // (A checked pattern's row_ptr and col_idx are the entry's copies, counted once.)
  auto own_bytes = [&](const at::Tensor& t) {
    return !t.defined() || t.is_same(entry->row_ptr) || t.is_same(entry->col_idx) ? size_t(0)
                                                                                  : t.nbytes();
  };
  entry->bytes = entry->row_ptr.nbytes() + entry->col_idx.nbytes() +
                 (entry->col_idx_narrow.defined() ? entry->col_idx_narrow.nbytes() : 0) +
                 own_bytes(p.row_ptr) +
                 own_bytes(p.col_idx) + own_bytes(p.source) + size_t(room);
  std::shared_ptr<const RegroupedPattern> pattern = entry->pattern;
  if (entry->bytes <= cache.limit()) {
    try {
      cache.keep(std::move(entry));
    } catch (const std::bad_alloc&) {
      // Not kept: this call has its pattern all the same.
    }
  }
  return pattern;
}

PatternCacheCounters pattern_cache_counters() {
  return {patterns_found.load(std::memory_order_relaxed),
          patterns_built.load(std::memory_order_relaxed),
          plans_found.load(std::memory_order_relaxed), plans_built.load(std::memory_order_relaxed)};
}

int64_t release_cached_patterns() { return PatternCache::instance().release_all(); }

}  // namespace torch_sparse_conv
