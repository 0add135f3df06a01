// toeplitz_conv2d's 'direct' method on CUDA for frames that fit in shared memory: one block
// per image (grid-stride over images) holds the image densely, H*W stored-entry counts and
// H*W values, and computes every output pixel by a gather over the kernel taps, in a fixed
// order (deterministic, no floating-point atomics). Work per image follows the frame
// (H_out*W_out*kH*kW), memory the block's shared tile; the sort-based kernels
// (toeplitz_conv2d_kernels.cuh) serve frames too big for it.
//
// Two launches of the same kernel: kFill = false counts each image's covered output pixels,
// kFill = true writes them, in row-major order, from the image's offset in out_crow.
// A pixel is covered (stored, even when its sum is zero) when a stored entry lies within the
// kernel's reach; only stored entries enter a sum, so an infinite kernel tap never meets an
// unstored zero (as in the CPU kernels). Row pointers and columns are clamped where they are
// read, so the count pass may run before the CSR checks (its results are then discarded).
#pragma once

#include <ATen/OpMathType.h>

#include "toeplitz_frame.cuh"

namespace torch_sparse_conv {

constexpr int kFrameTileThreads = 256;

// Shared memory of one image's tile: values (acc_t) and counts (int) per input pixel, then
// the block's scan scratch.
inline size_t frame_tile_bytes(const ToeplitzGeometry& g, size_t acc_bytes) {
  const size_t pixels = size_t(g.in_h) * size_t(g.in_w);
  return pixels * acc_bytes + pixels * sizeof(int) + (kFrameTileThreads + 1) * sizeof(int);
}

namespace {

// Exclusive prefix sum of `flag` over the block (all threads take part); `total` receives
// the block's sum. `scratch` holds blockDim.x ints.
__device__ __forceinline__ int block_exclusive_scan(int flag, int* scratch, int& total) {
  const int tid = threadIdx.x;
  scratch[tid] = flag;
  __syncthreads();
  for (int offset = 1; offset < int(blockDim.x); offset *= 2) {
    const int add = tid >= offset ? scratch[tid - offset] : 0;
    __syncthreads();
    scratch[tid] += add;
    __syncthreads();
  }
  total = scratch[blockDim.x - 1];
  const int exclusive = scratch[tid] - flag;
  __syncthreads();  // scratch is reused by the next call
  return exclusive;
}

template <typename scalar_t, bool kFill>
__global__ void __launch_bounds__(kFrameTileThreads)
    frame_tile_kernel(const int64_t* __restrict__ crow, const int64_t* __restrict__ col,
                      const scalar_t* __restrict__ values, const scalar_t* __restrict__ kernel,
                      Frame f, int64_t batch, int64_t nnz, int64_t* __restrict__ covered_count,
                      const int64_t* __restrict__ out_crow, int64_t* __restrict__ out_col,
                      scalar_t* __restrict__ out_values) {
  using acc_t = at::opmath_type<scalar_t>;
  TSC_DYNAMIC_SHARED_MEMORY(shared_bytes);
  const int in_pixels = int(f.in_h * f.in_w), out_pixels = int(f.out_h * f.out_w);
  acc_t* dense = reinterpret_cast<acc_t*>(shared_bytes);
  int* stored = reinterpret_cast<int*>(dense + in_pixels);  // entries per input pixel
  int* scratch = stored + in_pixels;
  int* duplicates = scratch + blockDim.x;
  const int tid = threadIdx.x;
  for (int64_t image = blockIdx.x; image < batch; image += gridDim.x) {
    for (int q = tid; q < in_pixels; q += blockDim.x) {
      stored[q] = 0;
      if (kFill) dense[q] = acc_t(0);
    }
    if (tid == 0) *duplicates = 0;
    __syncthreads();
    const int64_t begin = min(max(crow[image], int64_t(0)), nnz);
    const int64_t end = max(begin, min(crow[image + 1], nnz));
    for (int64_t e = begin + tid; e < end; e += blockDim.x) {
      const int64_t q = col[e];
      if (q >= 0 && q < in_pixels) atomicAdd(&stored[q], 1);
    }
    __syncthreads();
    if (kFill) {
      for (int64_t e = begin + tid; e < end; e += blockDim.x) {
        if (stored[col[e]] > 1) *duplicates = 1;  // every writer writes the same value
      }
      __syncthreads();
      if (*duplicates == 0) {
        for (int64_t e = begin + tid; e < end; e += blockDim.x) dense[col[e]] = acc_t(values[e]);
      } else if (tid == 0) {  // repeated pixels: summed in entry order, by one thread
        for (int64_t e = begin; e < end; ++e) dense[col[e]] += acc_t(values[e]);
      }
      __syncthreads();
    }
    int64_t written = 0;  // covered pixels of this image so far (the same in every thread)
    for (int base = 0; base < out_pixels; base += blockDim.x) {
      const int p = base + tid;
      bool covered = false;
      acc_t sum = acc_t(0);
      if (p < out_pixels) {
        const int r = p / int(f.out_w), c = p % int(f.out_w);
        for (int u = 0; u < int(f.kernel_h); ++u) {
          const int a = r + int(f.offset_h) - u;
          if (a < 0 || a >= int(f.in_h)) continue;
          for (int t = 0; t < int(f.kernel_w); ++t) {
            const int b = c + int(f.offset_w) - t;
            if (b < 0 || b >= int(f.in_w)) continue;
            const int q = a * int(f.in_w) + b;
            if (stored[q] > 0) {
              covered = true;
              if (kFill) sum += acc_t(kernel[u * f.kernel_w + t]) * dense[q];
            }
          }
        }
      }
      int total;
      const int before = block_exclusive_scan(covered ? 1 : 0, scratch, total);
      if (kFill && covered) {
        const int64_t slot = out_crow[image] + written + before;
        out_col[slot] = p;
        out_values[slot] = scalar_t(sum);
      }
      written += total;
    }
    if (!kFill && tid == 0) covered_count[image] = written;
    __syncthreads();  // the tile is cleared for the next image
  }
}

}  // namespace
}  // namespace torch_sparse_conv
