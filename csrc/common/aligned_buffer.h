// Scratch memory for the CPU kernels that starts on a cache line. std::vector's memory is
// only 16-byte aligned, so a 64-byte vector loaded from or stored to it crossed a cache line
// every time: the lanes forward's partial sums (each tile's accumulators read and written
// once a chunk of input channels) cost 1.05-1.11x the time of aligned ones on ResNet-50's 3x3
// layers at batch 8, 90 %, the one-sample forward's 1.02-1.03x at batch 1 (Intel Xeon VM,
// 2 threads).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace torch_sparse_conv {

// Bytes the buffer's data is aligned to: a cache line, and the widest vector.
constexpr std::size_t kScratchAlignment = 64;

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(int64_t size) { resize(size); }
  // Scratch belongs to one task or thread: neither copied nor moved.
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // At least `size` elements from data(), zeros where the memory is new: growing drops the
  // old contents (every user writes what it reads, or, where a vector overhangs a run, drops
  // the lanes that read stale elements).
  void resize(int64_t size) {
    if (size <= capacity_) return;
    const std::size_t bytes = (static_cast<std::size_t>(size) * sizeof(T) +
                               kScratchAlignment - 1) / kScratchAlignment * kScratchAlignment;
    T* memory = static_cast<T*>(std::aligned_alloc(kScratchAlignment, bytes));
    if (memory == nullptr) throw std::bad_alloc();
    std::fill_n(memory, size, T(0));
    data_.reset(memory);
    capacity_ = size;
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  int64_t capacity_ = 0;
};

}  // namespace torch_sparse_conv
