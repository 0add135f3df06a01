#include "csrc/common/output_buffer_cache.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "csrc/common/env_megabytes.h"

namespace torch_sparse_conv {
namespace {

// Below this, malloc reuses memory itself. Above glibc's mmap threshold (128 KiB) it does not:
// each buffer is mapped fresh and faults a page per 4 KiB on first write, which was 40 % of a
// Toeplitz call writing a few hundred kilobytes (sparse_convolution's 100x100, batch 50).
constexpr size_t kSmallest = size_t(64) << 10;
// At most this many freed buffers are kept (the least recently freed dropped first), so the
// scan for a fitting one stays short.
constexpr size_t kMaxBuffers = 64;

size_t cache_limit_bytes() { return megabytes_from_env("TSC_OUTPUT_CACHE_MB", 512); }

// Freed buffers, least recently freed first. A buffer in use belongs to its tensor; its
// deleter brings it back.
class OutputBufferCache final : public c10::Allocator {
  struct Block {
    void* data;
    size_t bytes;
  };

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
    std::vector<Block> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      released.assign(free_.begin(), free_.end());
      free_.clear();
      cached_bytes_ = 0;
    }
    int64_t bytes = 0;
    for (const Block& block : released) {
      c10::free_cpu(block.data);
      bytes += static_cast<int64_t>(block.bytes);
    }
    return bytes;
  }

  static OutputBufferCache& instance() {
    // Never destroyed: tensors may free their buffers during interpreter shutdown.
    static auto* cache = new OutputBufferCache();
    return *cache;
  }

 private:
  // The smallest free buffer of at least `bytes` and at most twice that (its size in
  // *size), or nullptr. At most kMaxBuffers are kept, so a scan per allocation costs
  // nothing next to filling it.
  void* take(size_t bytes, size_t* size) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->bytes >= bytes && it->bytes / 2 <= bytes &&
          (best == free_.end() || it->bytes < best->bytes)) {
        best = it;
      }
    }
    if (best == free_.end()) return nullptr;
    void* data = best->data;
    *size = best->bytes;
    cached_bytes_ -= best->bytes;
    free_.erase(best);
    return data;
  }

  static void give_back(void* context) {
    auto* block = static_cast<Block*>(context);
    instance().keep(*block);
    delete block;
  }

  // Keeps a freed buffer, evicting the least recently freed ones beyond the limit, so the
  // sizes in use now always find room (sizes no longer asked for age out).
  void keep(const Block& block) {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (block.bytes > limit_) {
        evicted.push_back(block);
      } else {
        free_.push_back(block);
        cached_bytes_ += block.bytes;
        while (cached_bytes_ > limit_ || free_.size() > kMaxBuffers) {
          evicted.push_back(free_.front());
          cached_bytes_ -= free_.front().bytes;
          free_.pop_front();
        }
      }
    }
    for (const Block& old : evicted) c10::free_cpu(old.data);
  }

  std::mutex mutex_;
  std::list<Block> free_;  // least recently freed first
  size_t cached_bytes_ = 0;
  const size_t limit_ = cache_limit_bytes();
};

// Whether TSC_OUTPUT_CACHE_MB lets the cache keep anything, read once.
bool cache_enabled() {
  static const bool enabled = cache_limit_bytes() > 0;
  return enabled;
}

// The allocator for a buffer of this size: the cache from 64 KiB up (when enabled), else
// ATen's CPU allocator.
c10::Allocator* output_allocator(size_t bytes) {
  if (bytes < kSmallest || !cache_enabled()) return c10::GetCPUAllocator();
  return &OutputBufferCache::instance();
}

}  // namespace

at::Tensor empty_output(int64_t size, at::ScalarType dtype) {
  // empty_generic rather than at::empty: no dispatch, which a batch-1 call would notice.
  const size_t bytes = static_cast<size_t>(size) * c10::elementSize(dtype);
  return at::detail::empty_generic({size}, output_allocator(bytes),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   std::nullopt);
}

at::Tensor empty_activation(at::IntArrayRef sizes, const at::TensorOptions& options,
                            at::MemoryFormat format) {
  // glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
  constexpr int64_t kAlwaysMappedBytes = int64_t(32) << 20;
  const int64_t numel = c10::multiply_integers(sizes);
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  TORCH_INTERNAL_ASSERT(format == at::MemoryFormat::Contiguous ||
                        (channels_last && sizes.size() == 4));
  const int64_t bytes = numel * int64_t(options.dtype().itemsize());
  if (options.device().type() != c10::DeviceType::CPU || bytes < kAlwaysMappedBytes ||
      !cache_enabled()) {
    return at::empty(sizes, options.memory_format(format));
  }
  const at::Tensor flat = empty_output(numel, options.dtype().toScalarType());
  if (!channels_last) return flat.view(sizes);
  return flat.view({sizes[0], sizes[2], sizes[3], sizes[1]}).permute({0, 3, 1, 2});
}

c10::DataPtr allocate_output(size_t bytes) { return output_allocator(bytes)->allocate(bytes); }

int64_t release_cached_outputs() { return OutputBufferCache::instance().release_all(); }

at::Tensor tensor_over(c10::DataPtr data, int64_t size, int64_t capacity, at::ScalarType dtype) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), capacity * c10::elementSize(dtype),
                       std::move(data), /*allocator=*/nullptr, /*resizable=*/false);
  return at::empty({0}, at::TensorOptions().dtype(dtype)).set_(storage, 0, {size}, {1});
}

}  // namespace torch_sparse_conv
