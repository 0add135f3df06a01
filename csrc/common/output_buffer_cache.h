// Large CPU outputs of the Toeplitz kernels (and the sparse filter's per-call dense weight),
// in memory reused from earlier outputs.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace torch_sparse_conv {

// at::empty({size}, dtype) on the CPU. Buffers of 64 KiB and more come from a cache of
// outputs the caller has since freed: a fresh buffer of tens of megabytes costs a page fault
// per 4 KiB on first write, which took as long as the convolution that fills it (measured:
// 100x100 images, batch 500, density 0.1, about 22 ms a call with fresh memory, 9 ms reused).
// Freed buffers are kept up to TSC_OUTPUT_CACHE_MB megabytes in all (default 512; 0 turns the
// cache off), the least recently freed dropped first, and a buffer is reused only for a
// request of at least half its size.
at::Tensor empty_output(int64_t size, at::ScalarType dtype);

// at::empty(sizes, options) in `format` (Contiguous, or ChannelsLast for 4-D sizes) for an
// activation-sized result of the sparse-filter CPU kernels: from the cache above (when it is
// enabled) at 32 MiB and more, from which size glibc's malloc maps fresh pages for every
// request whatever its thresholds (the bench's raised ones included); below that, at::empty,
// which malloc then serves from memory it kept. A 51 MB output (ResNet's stem at batch 16) cost 13 ms of page
// faults a call, twice the convolution's 6.5 ms.
at::Tensor empty_activation(at::IntArrayRef sizes, const at::TensorOptions& options,
                            at::MemoryFormat format);

// The same memory without a tensor around it (for outputs handed to numpy): `bytes` bytes,
// from the cache at 64 KiB and more, else from ATen's CPU allocator.
c10::DataPtr allocate_output(size_t bytes);

// A 1-D tensor of `size` elements over `data`, a buffer of `capacity` (at least size) elements
// of dtype (from allocate_output).
at::Tensor tensor_over(c10::DataPtr data, int64_t size, int64_t capacity, at::ScalarType dtype);

// Frees every cached buffer (what torch_sparse_conv.empty_output_cache() calls); returns the
// bytes it released.
int64_t release_cached_outputs();

}  // namespace torch_sparse_conv
