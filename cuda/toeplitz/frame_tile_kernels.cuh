// toeplitz_conv2d's 'direct' method on CUDA for frames that fit in shared memory: one block
// per image (grid-stride over images) holds the image densely, H*W stored-entry counts and
// H*W values, and computes every output pixel by a gather over the kernel taps, in a fixed
// order (deterministic, no floating-point atomics). Work per image follows the frame
// (H_out*W_out*kH*kW), memory the block's shared tile; the sort-based kernels
// (cuda/toeplitz/conv2d_kernels.cuh) serve frames too big for it.
//
// Two launches of the same kernel: kFill = false counts each image's covered output pixels,
// kFill = true writes them, in row-major order, from the image's offset in out_crow. The
// host keeps H*W and H_out*W_out within int (frame_tile_fits).
// A pixel is covered (stored, even when its sum is zero) when a stored entry lies within the
// kernel's reach; only stored entries enter a sum, so an infinite kernel tap never meets an
// unstored zero (as in the CPU kernels). Row pointers and columns are clamped where they are
// read, so the count pass may run before the CSR checks (its results are then discarded).
#pragma once

#include <ATen/OpMathType.h>

#include "cuda/toeplitz/frame.cuh"

namespace torch_sparse_conv {

// 512 threads: a tile too big for two blocks per SM still keeps 16 warps busy.
constexpr int kFrameTileThreads = 512;

// Shared memory of one image's tile: an int per input pixel (stored entries), the block's
// scan scratch and a flag, padded to 16 bytes; then, in the fill pass only, a value (acc_t)
// per input pixel.
inline __host__ __device__ size_t frame_tile_int_bytes(int64_t in_pixels) {
  return (size_t(in_pixels + kFrameTileThreads + 1) * sizeof(int) + 15) / 16 * 16;
}
inline size_t frame_tile_bytes(const ToeplitzGeometry& g, size_t acc_bytes, bool fill) {
  const int64_t pixels = g.in_h * g.in_w;
  return frame_tile_int_bytes(pixels) + (fill ? size_t(pixels) * acc_bytes : 0);
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
  const int in_h = int(f.in_h), in_w = int(f.in_w), out_w = int(f.out_w);
  const int kernel_h = int(f.kernel_h), kernel_w = int(f.kernel_w);
  int* stored = reinterpret_cast<int*>(shared_bytes);  // entries per input pixel
  int* scratch = stored + in_pixels;
  int* duplicates = scratch + blockDim.x;
  acc_t* dense = reinterpret_cast<acc_t*>(shared_bytes + frame_tile_int_bytes(in_pixels));
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
        // Taps (u, t) that read inside the image: a = r + offset_h - u in [0, in_h).
        const int64_t ra = p / out_w + f.offset_h, cb = p % out_w + f.offset_w;
        const int u_lo = int(max(int64_t(0), ra - in_h + 1));
        const int u_hi = int(min(int64_t(kernel_h), ra + 1));
        const int t_lo = int(max(int64_t(0), cb - in_w + 1));
        const int t_hi = int(min(int64_t(kernel_w), cb + 1));
        for (int u = u_lo; u < u_hi; ++u) {
          const int row = (int(ra) - u) * in_w + int(cb);
          for (int t = t_lo; t < t_hi; ++t) {
            const int q = row - t;
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
