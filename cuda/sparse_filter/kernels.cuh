// The sparse-filter CUDA kernels (device code) and the plain structs they take as arguments;
// the host side that plans their launches is cuda/sparse_filter/plan.h. Plain of ATen's CUDA
// parts, so tests/cpp/test_cuda_kernels_emulated.cpp runs the same kernels on the CPU
// (cuda/common/kernel_emulation.h); the .cu files launch them on a GPU.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "csrc/sparse_filter/geometry.h"
// After the library headers: on host compilers it defines CUDA's keywords as macros.
#include "cuda/common/launch_shape.h"
#include "cuda/common/kernel_portability.cuh"

namespace torch_sparse_conv {

// The geometry as plain values for kernels.
struct ConvShape {
  int64_t batch, in_channels, in_h, in_w, out_channels, groups, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w;
};

inline ConvShape to_conv_shape(const SparseFilterGeometry& g) {
  return {g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.groups, g.kernel_h,
          g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w,
          g.out_h, g.out_w};
}

// ------------------------------------------------------------------ tiled 'direct' forward
//
// A block owns a tile of output pixels (nb images x th rows x tw columns, one thread per
// pixel) and `oc_loops` blocks of kOcBlock output channels of one group. It walks the
// group's input channels in chunks: the chunk's input window, zero padded at the borders, is
// staged in shared memory, laid out (channel, image, row, column), then every thread adds,
// for each output channel of the block, the kept taps that read this chunk. Taps come from a
// table sorted by (output channel, input channel), so a chunk's taps of one output channel
// are one contiguous range, each with its offset in the window. All threads walk the same
// taps (uniform loads, no divergence).
//
// When one chunk holds all input channels of the group, the window is staged once and the
// block loops over several output-channel blocks (oc_loops > 1): staging, not the taps,
// dominated the kernel's time on an H100 (scripts/gpu/NOTES.md). Such a window may take more
// than the default 48 KiB of shared memory (plan_tiles). Shapes whose window does not
// fit in shared memory use per_output_direct_kernel instead.

constexpr int64_t kWindowBytes = 48 * 1024;  // shared memory any block may have
// A one-window plan may opt in to more (cudaFuncAttributeMaxDynamicSharedMemorySize), up to
// this or the device's limit, whichever is lower: two such blocks still share an H100 SM.
constexpr int64_t kMergedWindowBytes = 100 * 1024;
// Loads in flight per thread while staging: 2 kept the registers of the float64, 32-channel
// kernel at 128 (4 took 184: one block per SM instead of two; ptxas, sm_90).
constexpr int kStageUnroll = 2;

struct TileGeometry {
  int nb, th, tw;     // output tile: images x rows x columns
  int in_th, in_tw;   // the input window it reads
  int chunk;          // input channels per window
  int chunks;         // windows per group: ceil(in_channels_per_group / chunk)
  int oc_block;       // output channels per pass: 8, 16 or 32
  int oc_loops;       // passes (output-channel blocks) per block; > 1 only when chunks == 1
  int64_t tiles_n, tiles_h, tiles_w;
  int64_t oc_blocks_per_group;  // ceil(out_channels_per_group / oc_block)
  int64_t y_blocks_per_group;   // ceil(oc_blocks_per_group / oc_loops)
  int64_t tiles() const { return tiles_n * tiles_h * tiles_w; }
};

template <typename scalar_t, typename acc_t, int kOcBlock>
__global__ void __launch_bounds__(kCudaThreads)
    tiled_direct_kernel(const scalar_t* __restrict__ input, const int64_t* __restrict__ tap_ptr,
                        const int* __restrict__ tap_window, const scalar_t* __restrict__ tap_value,
                        const scalar_t* __restrict__ bias, ConvShape s, TileGeometry t,
                        scalar_t* __restrict__ output) {
  TSC_DYNAMIC_SHARED_MEMORY(shared_bytes);
  scalar_t* window = reinterpret_cast<scalar_t*>(shared_bytes);
  const int64_t tile = blockIdx.x;
  const int64_t n0 = tile / (t.tiles_h * t.tiles_w) * t.nb;
  const int64_t oh0 = tile / t.tiles_w % t.tiles_h * t.th;
  const int64_t ow0 = tile % t.tiles_w * t.tw;
  const int64_t cin_g = s.in_channels / s.groups, ocpg = s.out_channels / s.groups;
  const int64_t group = blockIdx.y / t.y_blocks_per_group;
  const int64_t pass_begin = blockIdx.y % t.y_blocks_per_group * t.oc_loops;
  const int64_t pass_end = min(pass_begin + t.oc_loops, t.oc_blocks_per_group);
  const int64_t ih0 = oh0 * s.stride_h - s.pad_h, iw0 = ow0 * s.stride_w - s.pad_w;
  const int in_plane = t.in_th * t.in_tw;
  const int channel_stride = t.nb * in_plane;  // one input channel of the window

  // This thread's output pixel and where its window starts.
  const int img = threadIdx.x / (t.th * t.tw), y = threadIdx.x / t.tw % t.th;
  const int x = threadIdx.x % t.tw;
  const int64_t n = n0 + img, oh = oh0 + y, ow = ow0 + x;
  const bool active = img < t.nb && n < s.batch && oh < s.out_h && ow < s.out_w;
  const int base = img * in_plane + y * int(s.stride_h) * t.in_tw + x * int(s.stride_w);

  // Steps of the staging walk: element i of the window is (c, image, row, column) in
  // row-major order, and each thread advances by blockDim.x elements, carrying counters
  // instead of dividing per element.
  const int step = blockDim.x;
  const int step_x = step % t.in_tw, step_rows = step / t.in_tw;
  const int step_y = step_rows % t.in_th, step_planes = step_rows / t.in_th;
  const int step_img = step_planes % t.nb, step_c = step_planes / t.nb;

  for (int64_t pass = pass_begin; pass < pass_end; ++pass) {
    const int64_t oc_begin = group * ocpg + pass * kOcBlock;
    const int oc_count = int(min(int64_t(kOcBlock), (group + 1) * ocpg - oc_begin));
    acc_t acc[kOcBlock];
#pragma unroll
    for (int o = 0; o < kOcBlock; ++o) acc[o] = acc_t(0);

    for (int64_t c0 = 0; c0 < cin_g; c0 += t.chunk) {
      const int cn = int(min(int64_t(t.chunk), cin_g - c0));
      if (t.chunks > 1 || pass == pass_begin) {  // one chunk: staged once for every pass
        __syncthreads();  // the previous chunk's reads are done
        const int elements = cn * channel_stride;
        int xx = threadIdx.x % t.in_tw;
        int yy = threadIdx.x / t.in_tw % t.in_th;
        int im = threadIdx.x / in_plane % t.nb;
        int c = threadIdx.x / channel_stride;
        for (int i0 = threadIdx.x; i0 < elements; i0 += kStageUnroll * step) {
          scalar_t staged[kStageUnroll];
#pragma unroll
          for (int u = 0; u < kStageUnroll; ++u) {
            const int64_t ni = n0 + im, ih = ih0 + yy, iw = iw0 + xx;
            const bool inside = i0 + u * step < elements && ni < s.batch && ih >= 0 &&
                                ih < s.in_h && iw >= 0 && iw < s.in_w;
            staged[u] = inside ? input[((ni * s.in_channels + group * cin_g + c0 + c) * s.in_h +
                                        ih) * s.in_w + iw]
                               : scalar_t(0);
            // Advance (c, im, yy, xx) by `step` elements; each carry is at most one.
            xx += step_x;
            yy += step_y;
            im += step_img;
            c += step_c;
            if (xx >= t.in_tw) { xx -= t.in_tw; ++yy; }
            if (yy >= t.in_th) { yy -= t.in_th; ++im; }
            if (im >= t.nb) { im -= t.nb; ++c; }
          }
#pragma unroll
          for (int u = 0; u < kStageUnroll; ++u) {
            if (i0 + u * step < elements) window[i0 + u * step] = staged[u];
          }
        }
        __syncthreads();
      }
      if (active) {
        const int window_base = base - int(c0) * channel_stride;
#pragma unroll
        for (int o = 0; o < kOcBlock; ++o) {
          if (o < oc_count) {
            const int64_t first = (oc_begin + o) * cin_g + c0;
            const int64_t end = tap_ptr[first + cn];
            acc_t sum = acc[o];
            for (int64_t k = tap_ptr[first]; k < end; ++k) {
              sum += acc_t(tap_value[k]) * acc_t(window[window_base + tap_window[k]]);
            }
            acc[o] = sum;
          }
        }
      }
    }
    if (active) {
#pragma unroll
      for (int o = 0; o < kOcBlock; ++o) {
        if (o < oc_count) {
          const int64_t oc = oc_begin + o;
          const acc_t b = bias ? acc_t(bias[oc]) : acc_t(0);
          output[((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow] = scalar_t(acc[o] + b);
        }
      }
    }
  }
}

// One thread per output element, for shapes whose window does not fit in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void per_output_direct_kernel(const scalar_t* __restrict__ input,
                                         const int64_t* __restrict__ row_ptr,
                                         const int64_t* __restrict__ col_idx,
                                         const scalar_t* __restrict__ values,
                                         const scalar_t* __restrict__ bias, ConvShape s,
                                         scalar_t* __restrict__ output, int64_t total) {
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t ocpg = s.out_channels / s.groups;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t ow = index % s.out_w;
    const int64_t oh = index / s.out_w % s.out_h;
    const int64_t oc = index / (s.out_w * s.out_h) % s.out_channels;
    const int64_t n = index / (s.out_w * s.out_h * s.out_channels);
    const scalar_t* sample = input + (n * s.in_channels + (oc / ocpg) * cin_g) * s.in_h * s.in_w;
    acc_t acc = bias ? acc_t(bias[oc]) : acc_t(0);
    for (int64_t k = row_ptr[oc]; k < row_ptr[oc + 1]; ++k) {
      const int64_t col = col_idx[k];
      const int64_t c = col / taps_per_channel;
      const int64_t ki = col % taps_per_channel / s.kernel_w, kj = col % s.kernel_w;
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
      if (ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w) {
        acc += acc_t(values[k]) * acc_t(sample[(c * s.in_h + ih) * s.in_w + iw]);
      }
    }
    output[index] = scalar_t(acc);
  }
}

// ------------------------------------------------------------------------------ backward

// grad_input[n, gc, ih, iw] = sum over taps (ki, kj) and the output channels keeping column
// (c, ki, kj) of value * grad_output[n, oc, oh, ow], where (oh, ow) reads (ih, iw); csc_*
// from sort_weight_by_column.
template <typename scalar_t, typename acc_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_output,
                                  const int64_t* __restrict__ csc_ptr,
                                  const int64_t* __restrict__ csc_row,
                                  const scalar_t* __restrict__ csc_value, ConvShape s,
                                  scalar_t* __restrict__ grad_input, int64_t total) {
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t taps = cin_g * taps_per_channel;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iw = index % s.in_w;
    const int64_t ih = index / s.in_w % s.in_h;
    const int64_t gc = index / (s.in_w * s.in_h) % s.in_channels;
    const int64_t n = index / (s.in_w * s.in_h * s.in_channels);
    const int64_t group = gc / cin_g, c = gc % cin_g;
    acc_t acc = 0;
    for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
      const int64_t row = ih + s.pad_h - ki * s.dilation_h;
      if (row < 0 || row % s.stride_h != 0 || row / s.stride_h >= s.out_h) continue;
      const int64_t oh = row / s.stride_h;
      for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
        const int64_t column = iw + s.pad_w - kj * s.dilation_w;
        if (column < 0 || column % s.stride_w != 0 || column / s.stride_w >= s.out_w) continue;
        const int64_t ow = column / s.stride_w;
        const int64_t key = group * taps + c * taps_per_channel + ki * s.kernel_w + kj;
        for (int64_t j = csc_ptr[key]; j < csc_ptr[key + 1]; ++j) {
          const int64_t oc = csc_row[j];
          acc += acc_t(csc_value[j]) *
                 acc_t(grad_output[((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow]);
        }
      }
    }
    grad_input[index] = scalar_t(acc);
  }
}

// One block (kCudaThreads threads) per kept value: its gradient is a sum over the batch and
// the output plane, reduced in a fixed order.
template <typename scalar_t, typename acc_t>
__global__ void grad_values_kernel(const scalar_t* __restrict__ grad_output,
                                   const scalar_t* __restrict__ input,
                                   const int64_t* __restrict__ row_of,
                                   const int64_t* __restrict__ col_idx, ConvShape s,
                                   scalar_t* __restrict__ grad_values, int64_t nnz) {
  __shared__ acc_t partial[kCudaThreads];
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t ocpg = s.out_channels / s.groups;
  const int64_t plane = s.out_h * s.out_w;
  for (int64_t k = blockIdx.x; k < nnz; k += gridDim.x) {
    const int64_t oc = row_of[k], col = col_idx[k];
    const int64_t gc = (oc / ocpg) * cin_g + col / taps_per_channel;
    const int64_t ki = col % taps_per_channel / s.kernel_w, kj = col % s.kernel_w;
    acc_t acc = 0;
    for (int64_t i = threadIdx.x; i < s.batch * plane; i += blockDim.x) {
      const int64_t n = i / plane, oh = i % plane / s.out_w, ow = i % s.out_w;
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
      if (ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w) {
        acc += acc_t(grad_output[(n * s.out_channels + oc) * plane + oh * s.out_w + ow]) *
               acc_t(input[((n * s.in_channels + gc) * s.in_h + ih) * s.in_w + iw]);
      }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) grad_values[k] = scalar_t(partial[0]);
    __syncthreads();
  }
}

}  // namespace torch_sparse_conv
