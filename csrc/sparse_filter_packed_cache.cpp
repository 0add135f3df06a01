#include "sparse_filter_packed_cache.h"

#include <list>
#include <mutex>
#include <vector>

#include "sparse_filter_conv2d_method.h"

namespace torch_sparse_conv {
namespace {

constexpr size_t kMaxEntries = 16;

std::mutex cache_mutex;
std::list<std::shared_ptr<PackedFilterFacts>> cache;  // most recently used first

bool cacheable(const at::Tensor& row_ptr, const at::Tensor& col_idx, const at::Tensor& values) {
  return !row_ptr.is_inference() && !col_idx.is_inference() && !values.is_inference() &&
         !(values.requires_grad() && !values.is_leaf());
}

}  // namespace

PackedFilterFacts::PackedFilterFacts(at::Tensor row_ptr, at::Tensor col_idx, at::Tensor values,
                                     const SparseFilterGeometry& g, at::IntArrayRef weight_size)
    : row_ptr_(std::move(row_ptr)),
      col_idx_(std::move(col_idx)),
      values_(std::move(values)),
      versions_{0, 0, 0},
      weight_size_(weight_size.vec()),
      groups_(g.groups) {
  if (!row_ptr_.is_inference() && !col_idx_.is_inference() && !values_.is_inference()) {
    versions_[0] = row_ptr_._version();
    versions_[1] = col_idx_._version();
    versions_[2] = values_._version();
  }
}

const std::vector<std::vector<int64_t>>& PackedFilterFacts::kept_columns() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (has_kept_columns_) return kept_columns_;
  const at::Tensor rp = row_ptr_.contiguous(), ci = col_idx_.contiguous();
  const int64_t* r = rp.data_ptr<int64_t>();
  const int64_t* c = ci.data_ptr<int64_t>();
  const int64_t taps = weight_size_[1] * weight_size_[2] * weight_size_[3];
  const int64_t ocpg = groups_ > 0 ? weight_size_[0] / groups_ : 0;
  std::vector<char> seen(taps);
  kept_columns_.assign(groups_, {});
  for (int64_t group = 0; group < groups_; ++group) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t k = r[group * ocpg]; k < r[(group + 1) * ocpg]; ++k) seen[c[k]] = 1;
    for (int64_t col = 0; col < taps; ++col) {
      if (seen[col]) kept_columns_[group].push_back(col);
    }
  }
  has_kept_columns_ = true;
  return kept_columns_;
}

double PackedFilterFacts::union_fraction() {
  const auto& kept = kept_columns();
  const int64_t taps = weight_size_[1] * weight_size_[2] * weight_size_[3];
  int64_t union_size = 0;
  for (const auto& columns : kept) union_size += static_cast<int64_t>(columns.size());
  return groups_ * taps == 0 ? 0.0 : double(union_size) / double(groups_ * taps);
}

at::Tensor PackedFilterFacts::dense_weight() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!dense_.defined()) {
    dense_ = unpack_sparse_filter_dense(row_ptr_, col_idx_, values_.detach(), weight_size_);
  }
  return dense_;
}

const std::vector<at::Tensor>& PackedFilterFacts::derived(
    const std::string& name, const std::function<std::vector<at::Tensor>()>& build) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = derived_.find(name);
  if (it == derived_.end()) it = derived_.emplace(name, build()).first;
  return it->second;  // std::map keeps references valid while entries are added
}

std::shared_ptr<PackedFilterFacts> packed_filter_facts(const at::Tensor& row_ptr,
                                                       const at::Tensor& col_idx,
                                                       const at::Tensor& values,
                                                       const SparseFilterGeometry& g,
                                                       at::IntArrayRef weight_size) {
  const bool remember = cacheable(row_ptr, col_idx, values);
  if (remember) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      const PackedFilterFacts& f = **it;
      if (f.row_ptr_.unsafeGetTensorImpl() == row_ptr.unsafeGetTensorImpl() &&
          f.col_idx_.unsafeGetTensorImpl() == col_idx.unsafeGetTensorImpl() &&
          f.values_.unsafeGetTensorImpl() == values.unsafeGetTensorImpl() &&
          f.versions_[0] == row_ptr._version() && f.versions_[1] == col_idx._version() &&
          f.versions_[2] == values._version() && f.weight_size_ == weight_size.vec() &&
          f.groups_ == g.groups) {
        cache.splice(cache.begin(), cache, it);
        return cache.front();
      }
    }
  }
  check_csr_contents(row_ptr, col_idx, g.taps_per_filter());
  auto facts = std::make_shared<PackedFilterFacts>(row_ptr, col_idx, values, g, weight_size);
  if (remember) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    cache.push_front(facts);
    while (cache.size() > kMaxEntries) cache.pop_back();
  }
  return facts;
}

SparseFilterGeometry check_sparse_filter_backward_args(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size,
                                      c10::nullopt, stride, padding, dilation, groups);
  packed_filter_facts(row_ptr, col_idx, values, g, weight_size);  // validates the indices
  check_grad_output(grad_output, input, g);
  return g;
}

}  // namespace torch_sparse_conv
