#include "output_buffer_cache.h"

#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

namespace torch_sparse_conv {
namespace {

constexpr size_t kSmallest = size_t(1) << 20;  // below this, malloc reuses memory itself

size_t cache_limit_bytes() {
  const char* megabytes = std::getenv("TSC_OUTPUT_CACHE_MB");
  const long long parsed = megabytes ? std::strtoll(megabytes, nullptr, 10) : 512;
  return static_cast<size_t>(std::max(0LL, std::min(parsed, 1LL << 30))) << 20;
}

// Free buffers by size. A buffer in use belongs to its tensor; its deleter brings it back.
class OutputBufferCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    auto block = std::make_unique<Block>();
    // A reused buffer keeps its own size, which may exceed the request.
    block->data = take(bytes, &block->bytes);
    if (block->data == nullptr) {
      block->data = c10::alloc_cpu(bytes);
      block->bytes = bytes;
    }
    void* data = block->data;
    return {data, block.release(), &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    int64_t released = 0;
    for (const auto& [bytes, data] : free_) {
      c10::free_cpu(data);
      released += static_cast<int64_t>(bytes);
    }
    free_.clear();
    cached_bytes_ = 0;
    return released;
  }

  static OutputBufferCache& instance() {
    // Never destroyed: tensors may free their buffers during interpreter shutdown.
    static auto* cache = new OutputBufferCache();
    return *cache;
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };

  // The smallest free buffer of at least `bytes` and at most twice that (its size in
  // *size), or nullptr.
  void* take(size_t bytes, size_t* size) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first / 2 > bytes) return nullptr;
    void* data = it->second;
    *size = it->first;
    cached_bytes_ -= it->first;
    free_.erase(it);
    return data;
  }

  static void give_back(void* context) {
    auto* block = static_cast<Block*>(context);
    instance().keep_or_free(block->data, block->bytes);
    delete block;
  }

  void keep_or_free(void* data, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= limit_) {
        free_.emplace(bytes, data);
        cached_bytes_ += bytes;
        return;
      }
    }
    c10::free_cpu(data);
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_bytes_ = 0;
  const size_t limit_ = cache_limit_bytes();
};

}  // namespace

at::Tensor empty_output(int64_t size, at::ScalarType dtype) {
  const size_t bytes = static_cast<size_t>(size) * c10::elementSize(dtype);
  static const bool enabled = cache_limit_bytes() > 0;
  if (bytes < kSmallest || !enabled) {
    return at::empty({size}, at::TensorOptions().dtype(dtype));
  }
  return at::detail::empty_generic({size}, &OutputBufferCache::instance(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   std::nullopt);
}

int64_t release_cached_outputs() { return OutputBufferCache::instance().release_all(); }

}  // namespace torch_sparse_conv
