#include "sparse_filter_dense_cache.h"

#include <list>
#include <mutex>
#include <vector>

#include "sparse_filter_conv2d_method.h"

namespace torch_sparse_conv {
namespace {

constexpr size_t kMaxEntries = 8;
constexpr int64_t kMaxBytes = int64_t(256) << 20;

struct Entry {
  at::Tensor row_ptr, col_idx, values;
  uint32_t row_ptr_version, col_idx_version, values_version;
  std::vector<int64_t> weight_size;
  at::Tensor dense;

  bool matches(const at::Tensor& r, const at::Tensor& c, const at::Tensor& v,
               at::IntArrayRef size) const {
    return r.unsafeGetTensorImpl() == row_ptr.unsafeGetTensorImpl() &&
           c.unsafeGetTensorImpl() == col_idx.unsafeGetTensorImpl() &&
           v.unsafeGetTensorImpl() == values.unsafeGetTensorImpl() &&
           r._version() == row_ptr_version && c._version() == col_idx_version &&
           v._version() == values_version && size.vec() == weight_size;
  }
};

std::mutex cache_mutex;
std::list<Entry> cache;  // most recently used first

int64_t cached_bytes() {
  int64_t total = 0;
  for (const Entry& e : cache) total += e.dense.numel() * e.dense.element_size();
  return total;
}

}  // namespace

at::Tensor cached_dense_weight(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const at::Tensor& values, at::IntArrayRef weight_size) {
  // Values computed in a graph (e.g. gathered from a dense weight each call) are new every
  // call: caching them would only keep their graphs alive.
  const bool cacheable = !row_ptr.is_inference() && !col_idx.is_inference() &&
                         !values.is_inference() && !(values.requires_grad() && !values.is_leaf());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      if (it->matches(row_ptr, col_idx, values, weight_size)) {
        cache.splice(cache.begin(), cache, it);
        return cache.front().dense;
      }
    }
  }
  at::Tensor dense = unpack_sparse_filter_dense(row_ptr, col_idx, values.detach(), weight_size);
  if (!cacheable || dense.numel() * dense.element_size() > kMaxBytes / 4) return dense;
  std::lock_guard<std::mutex> lock(cache_mutex);
  cache.push_front(Entry{row_ptr, col_idx, values, row_ptr._version(),
                         col_idx._version(), values._version(), weight_size.vec(), dense});
  while (cache.size() > kMaxEntries || cached_bytes() > kMaxBytes) cache.pop_back();
  return dense;
}

}  // namespace torch_sparse_conv
