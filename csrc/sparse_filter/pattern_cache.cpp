#include "csrc/sparse_filter/pattern_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

namespace torch_sparse_conv {
namespace {

size_t limit_bytes() {
  const char* megabytes = std::getenv("TSC_PATTERN_CACHE_MB");
  const long long parsed = megabytes ? std::strtoll(megabytes, nullptr, 10) : 256;
  return static_cast<size_t>(std::max(0LL, std::min(parsed, 1LL << 30))) << 20;
}

// At most this many entries (a whole ResNet-50 has 53 convolutions), so the scan for a key
// stays short whatever the byte limit.
constexpr size_t kMaxEntries = 256;

// memcmp of n int64s; empty arrays (an empty vector's data() may be null, which memcmp must
// not be given) are equal.
bool same_values(const int64_t* a, const int64_t* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(int64_t)) == 0;
}

struct Entry {
  RegroupKey key;
  std::vector<int64_t> row_ptr, col_idx;  // copies of what the pattern was built from
  std::shared_ptr<const RegroupedPattern> pattern;
  size_t bytes = 0;

  bool holds(const RegroupKey& k, const at::Tensor& rp, const at::Tensor& ci) const {
    const size_t rows = static_cast<size_t>(rp.numel()), nnz = static_cast<size_t>(ci.numel());
    // row_ptr first: two patterns of one shape and size differ there within a few rows.
    return key == k && row_ptr.size() == rows && col_idx.size() == nnz &&
           same_values(row_ptr.data(), rp.data_ptr<int64_t>(), rows) &&
           same_values(col_idx.data(), ci.data_ptr<int64_t>(), nnz);
  }
};

size_t tensor_bytes(const at::Tensor& t) { return static_cast<size_t>(t.nbytes()); }

class PatternCache {
 public:
  std::shared_ptr<const RegroupedPattern> find(const RegroupKey& key, const at::Tensor& rp,
                                               const at::Tensor& ci) {
    std::vector<std::shared_ptr<const Entry>> candidates;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& entry : entries_) {
        if (entry->key == key && entry->col_idx.size() == static_cast<size_t>(ci.numel())) {
          candidates.push_back(entry);
        }
      }
    }
    // Compared outside the lock: other threads' calls need not wait for it.
    for (const auto& entry : candidates) {
      if (!entry->holds(key, rp, ci)) continue;
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = std::find(entries_.begin(), entries_.end(), entry);
      if (it != entries_.end()) entries_.splice(entries_.end(), entries_, it);  // most recent
      return entry->pattern;
    }
    return nullptr;
  }

  void keep(const RegroupKey& key, const at::Tensor& rp, const at::Tensor& ci,
            std::shared_ptr<const RegroupedPattern> pattern) {
    auto entry = std::make_shared<Entry>();
    entry->bytes = tensor_bytes(rp) + tensor_bytes(ci) + tensor_bytes(pattern->row_ptr) +
                   tensor_bytes(pattern->col_idx) + tensor_bytes(pattern->source);
    if (entry->bytes > limit_) return;
    entry->key = key;
    const int64_t* r = rp.data_ptr<int64_t>();
    const int64_t* c = ci.data_ptr<int64_t>();
    entry->row_ptr.assign(r, r + rp.numel());
    entry->col_idx.assign(c, c + ci.numel());
    entry->pattern = std::move(pattern);
    std::vector<std::shared_ptr<const Entry>> dropped;  // freed outside the lock
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_back(std::move(entry));
    bytes_ += entries_.back()->bytes;
    while (bytes_ > limit_ || entries_.size() > kMaxEntries) {
      bytes_ -= entries_.front()->bytes;
      dropped.push_back(std::move(entries_.front()));
      entries_.pop_front();
    }
  }

  int64_t release_all() {
    std::list<std::shared_ptr<const Entry>> released;
    std::lock_guard<std::mutex> lock(mutex_);
    released.swap(entries_);
    const size_t bytes = bytes_;
    bytes_ = 0;
    return static_cast<int64_t>(bytes);
  }

  bool enabled() const { return limit_ > 0; }

  static PatternCache& instance() {
    // Never destroyed: a backward may run during interpreter shutdown.
    static auto* cache = new PatternCache();
    return *cache;
  }

 private:
  std::mutex mutex_;
  std::list<std::shared_ptr<const Entry>> entries_;  // least recently used first
  size_t bytes_ = 0;
  const size_t limit_ = limit_bytes();
};

}  // namespace

std::shared_ptr<const RegroupedPattern> regrouped_pattern(
    const RegroupKey& key, const at::Tensor& row_ptr, const at::Tensor& col_idx,
    const std::function<RegroupedPattern()>& build) {
  PatternCache& cache = PatternCache::instance();
  if (!cache.enabled()) return std::make_shared<const RegroupedPattern>(build());
  if (auto kept = cache.find(key, row_ptr, col_idx)) return kept;
  auto pattern = std::make_shared<const RegroupedPattern>(build());
  cache.keep(key, row_ptr, col_idx, pattern);
  return pattern;
}

int64_t release_cached_patterns() { return PatternCache::instance().release_all(); }

}  // namespace torch_sparse_conv
