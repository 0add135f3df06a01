// The epilogue (csrc/sparse_filter/epilogue.h) as the CPU kernels' vector loops apply it to
// the sums they store last: add the residual, then ReLU. Light on purpose: the kernels'
// headers (simd.h, lanes_simd.h) include it.
#pragma once

namespace torch_sparse_conv {

// residual: laid out as the output the sums go to (null: none). stream: the stores bypass
// the caches (non-temporal, where the kernel supports it and the destination is aligned to
// its vectors), for outputs too large to stay in cache until they are read.
template <typename scalar_t>
struct StoreEpilogue {
  const scalar_t* residual = nullptr;
  bool relu = false;
  bool stream = false;
};

// Orders the non-temporal stores a thread made (StoreEpilogue::stream) before its later
// stores, so that whoever is told the work is done sees them.
inline void fence_streamed_stores() {
#if defined(__x86_64__)
  asm volatile("sfence" ::: "memory");
#endif
}

// One vector of sums (a csrc/common/vector.h Vec) with the epilogue applied, its residual
// read at `residual` (null: none). Not max(x, 0): NaN and -0.0 stay, as in torch.relu.
template <typename V, typename scalar_t>
inline __attribute__((always_inline)) typename V::type finished_vector(
    typename V::type sums, const scalar_t* residual, bool relu) {
  if (residual) sums += V::load(residual);
  if (relu) {
    const typename V::type zero = V::broadcast(0);
    sums = sums < zero ? zero : sums;
  }
  return sums;
}

// The same for one element.
template <typename scalar_t>
inline scalar_t finished_scalar(scalar_t sum, const scalar_t* residual, bool relu) {
  if (residual) sum += *residual;
  return relu && sum < scalar_t(0) ? scalar_t(0) : sum;
}

}  // namespace torch_sparse_conv
