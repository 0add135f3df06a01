// 'direct' sparse-filter forward on CUDA: implicit unfold, no im2col buffer.
//
// A block owns a tile of output pixels (a few images x rows x columns) and up to 32 output
// channels of one group. It walks the group's input channels in chunks: the chunk's input
// window, zero padded at the borders, is staged in shared memory, then every thread adds,
// for each output channel of the block, the kept taps that read this chunk. The taps come
// from a table sorted by (output channel, input channel) and built once per packed filter,
// so a chunk's taps of one channel are one contiguous range, and each tap carries its offset
// in the window (built once per window shape). All threads of a block walk the same taps
// (uniform loads, no divergence); each input element is read from global memory once per
// block. Shapes the window does not fit (huge dilated kernels) use a one-thread-per-output
// kernel instead.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "sparse_filter_cuda.cuh"

namespace torch_sparse_conv {
namespace {

constexpr int64_t kWindowBytes = 48 * 1024;  // the default shared-memory limit per block

struct TileGeometry {
  int nb, th, tw;     // output tile: images x rows x columns
  int in_th, in_tw;   // the input window it reads
  int chunk;          // input channels per window
  int oc_block;       // output channels per block: 8, 16 or 32
  int64_t tiles_n, tiles_h, tiles_w, oc_blocks_per_group;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Output channels per block: more reuse each staged window, fewer let more blocks share an
// SM (registers). TSC_CUDA_OC_BLOCK=8|16|32 overrides, for tuning.
int choose_oc_block(int64_t out_channels_per_group) {
  static const int forced = [] {
    const char* env = std::getenv("TSC_CUDA_OC_BLOCK");
    return env ? std::atoi(env) : 0;
  }();
  if (forced == 8 || forced == 16 || forced == 32) return forced;
  return out_channels_per_group <= 8 ? 8 : out_channels_per_group <= 16 ? 16 : 32;
}

// Splits n into the fewest pieces of at most `most`, as even as possible.
int64_t even_piece(int64_t n, int64_t most) { return ceil_div(n, ceil_div(n, most)); }

// False when the shape needs the fallback kernel.
bool plan_tiles(const SparseFilterGeometry& g, size_t element_bytes, TileGeometry& t) {
  const int64_t tw = even_piece(g.out_w, 32);
  const int64_t th = even_piece(g.out_h, std::max<int64_t>(1, kCudaThreads / tw));
  const int64_t nb = std::min<int64_t>(g.batch, std::max<int64_t>(1, kCudaThreads / (th * tw)));
  const int64_t in_th = (th - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1;
  const int64_t in_tw = (tw - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1;
  const int64_t plane_bytes = nb * in_th * in_tw * int64_t(element_bytes);
  const int64_t cin_g = g.in_channels_per_group();
  if (plane_bytes > kWindowBytes || cin_g == 0) return false;
  t.nb = int(nb);
  t.th = int(th);
  t.tw = int(tw);
  t.in_th = int(in_th);
  t.in_tw = int(in_tw);
  t.chunk = int(even_piece(cin_g, kWindowBytes / plane_bytes));
  t.tiles_n = ceil_div(g.batch, nb);
  t.tiles_h = ceil_div(g.out_h, th);
  t.tiles_w = ceil_div(g.out_w, tw);
  t.oc_block = choose_oc_block(g.out_channels_per_group());
  t.oc_blocks_per_group = ceil_div(g.out_channels_per_group(), t.oc_block);
  const int64_t tiles = t.tiles_n * t.tiles_h * t.tiles_w;
  return tiles < std::numeric_limits<int>::max() &&
         g.groups * t.oc_blocks_per_group <= 65535 &&
         cin_g * in_th * in_tw < std::numeric_limits<int>::max();
}

// The taps sorted by (output channel, input channel): tap_ptr[oc * cin_g + c] is where the
// taps of output channel oc reading input channel c begin. Cached with the packed filter.
std::vector<at::Tensor> build_tap_table(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        const at::Tensor& values,
                                        const SparseFilterGeometry& g) {
  const int64_t nnz = col_idx.size(0), cin_g = g.in_channels_per_group();
  const int64_t taps_per_channel = g.kernel_h * g.kernel_w;
  const at::Tensor row_of = row_of_nonzeros(row_ptr, g.out_channels, nnz);
  const at::Tensor channel = at::div(col_idx, taps_per_channel, "floor");
  const at::Tensor key = row_of * cin_g + channel;
  const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
  at::Tensor tap_ptr = at::zeros({g.out_channels * cin_g + 1}, row_ptr.options());
  if (nnz > 0) {
    tap_ptr.narrow(0, 1, g.out_channels * cin_g)
        .copy_(at::cumsum(at::bincount(key, {}, g.out_channels * cin_g), 0));
  }
  return {tap_ptr, channel.index_select(0, order),
          col_idx.remainder(taps_per_channel).index_select(0, order),
          values.detach().index_select(0, order).contiguous()};
}

// Each tap's offset in the window of one input channel (int32), for a window shape.
at::Tensor window_offsets(const std::vector<at::Tensor>& table, const SparseFilterGeometry& g,
                          const TileGeometry& t) {
  const at::Tensor& channel = table[1];
  const at::Tensor& tap = table[2];
  const at::Tensor ki = at::div(tap, g.kernel_w, "floor"), kj = tap.remainder(g.kernel_w);
  return (channel * (int64_t(t.in_th) * t.in_tw) + ki * (g.dilation_h * t.in_tw) +
          kj * g.dilation_w)
      .to(at::kInt);
}

template <typename scalar_t, typename acc_t, int kOcBlock>
__global__ void __launch_bounds__(kCudaThreads)
    tiled_direct_kernel(const scalar_t* __restrict__ input, const int64_t* __restrict__ tap_ptr,
                        const int* __restrict__ tap_window, const scalar_t* __restrict__ tap_value,
                        const scalar_t* __restrict__ bias, ConvShape s, TileGeometry t,
                        scalar_t* __restrict__ output) {
  extern __shared__ unsigned char shared_bytes[];
  scalar_t* window = reinterpret_cast<scalar_t*>(shared_bytes);
  const int64_t tile = blockIdx.x;
  const int64_t n0 = tile / (t.tiles_h * t.tiles_w) * t.nb;
  const int64_t oh0 = tile / t.tiles_w % t.tiles_h * t.th;
  const int64_t ow0 = tile % t.tiles_w * t.tw;
  const int64_t cin_g = s.in_channels / s.groups, ocpg = s.out_channels / s.groups;
  const int64_t group = blockIdx.y / t.oc_blocks_per_group;
  const int64_t oc_begin = group * ocpg + blockIdx.y % t.oc_blocks_per_group * kOcBlock;
  const int oc_count = int(min(int64_t(kOcBlock), (group + 1) * ocpg - oc_begin));

  // This thread's output pixel.
  const int img = threadIdx.x / (t.th * t.tw), y = threadIdx.x / t.tw % t.th;
  const int x = threadIdx.x % t.tw;
  const int64_t n = n0 + img, oh = oh0 + y, ow = ow0 + x;
  const bool active = img < t.nb && n < s.batch && oh < s.out_h && ow < s.out_w;
  const int in_plane = t.in_th * t.in_tw;
  const int base = img * t.chunk * in_plane + y * int(s.stride_h) * t.in_tw + x * int(s.stride_w);

  acc_t acc[kOcBlock];
#pragma unroll
  for (int o = 0; o < kOcBlock; ++o) acc[o] = acc_t(0);

  const int64_t ih0 = oh0 * s.stride_h - s.pad_h, iw0 = ow0 * s.stride_w - s.pad_w;
  for (int64_t c0 = 0; c0 < cin_g; c0 += t.chunk) {
    const int cn = int(min(int64_t(t.chunk), cin_g - c0));
    __syncthreads();  // the previous chunk's reads are done
    // Stage the window: rows of in_tw, walked with counters instead of divisions.
    const int rows = t.nb * cn * t.in_th;
    for (int row = threadIdx.x / 32; row < rows; row += kCudaThreads / 32) {
      const int yy = row % t.in_th, plane = row / t.in_th;
      const int c = plane % cn, im = plane / cn;
      const int64_t ni = n0 + im, ih = ih0 + yy;
      const bool row_inside = ni < s.batch && ih >= 0 && ih < s.in_h;
      const scalar_t* src =
          input + ((ni * s.in_channels + group * cin_g + c0 + c) * s.in_h + ih) * s.in_w;
      scalar_t* dst = window + (im * t.chunk + c) * in_plane + yy * t.in_tw;
      for (int xx = threadIdx.x % 32; xx < t.in_tw; xx += 32) {
        const int64_t iw = iw0 + xx;
        dst[xx] = row_inside && iw >= 0 && iw < s.in_w ? src[iw] : scalar_t(0);
      }
    }
    __syncthreads();
    if (active) {
      const int window_base = base - int(c0) * in_plane;
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
  if (!active) return;
#pragma unroll
  for (int o = 0; o < kOcBlock; ++o) {
    if (o < oc_count) {
      const int64_t oc = oc_begin + o;
      const acc_t b = bias ? acc_t(bias[oc]) : acc_t(0);
      output[((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow] = scalar_t(acc[o] + b);
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

}  // namespace

at::Tensor row_of_nonzeros(const at::Tensor& row_ptr, int64_t rows, int64_t nnz) {
  const at::Tensor rp = row_ptr.contiguous();
  const at::Tensor counts = rp.narrow(0, 1, rows) - rp.narrow(0, 0, rows);
  return at::repeat_interleave(at::arange(rows, rp.options()), counts, 0, nnz);
}

void sparse_filter_direct_forward_cuda(const at::Tensor& input, PackedFilterFacts& facts,
                                       const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                       const at::Tensor& values, const at::Tensor& bias,
                                       const SparseFilterGeometry& g, at::Tensor& output) {
  const int64_t total = output.numel();
  if (total == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  TileGeometry t;
  if (plan_tiles(g, input.element_size(), t)) {
    const auto& table = facts.derived("cuda_tap_table", [&] {
      return build_tap_table(row_ptr, col_idx, values, g);
    });
    const std::string window_key = "cuda_tap_window_" + std::to_string(t.in_th) + "x" +
                                   std::to_string(t.in_tw) + "_" +
                                   std::to_string(g.dilation_h) + "x" +
                                   std::to_string(g.dilation_w);
    const at::Tensor tap_window =
        facts.derived(window_key, [&] { return std::vector<at::Tensor>{
                                            window_offsets(table, g, t)}; })[0];
    const dim3 grid(unsigned(t.tiles_n * t.tiles_h * t.tiles_w),
                    unsigned(g.groups * t.oc_blocks_per_group));
    const size_t shared = size_t(t.nb) * t.chunk * t.in_th * t.in_tw * input.element_size();
    TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto kernel = t.oc_block == 8    ? tiled_direct_kernel<scalar_t, acc_t, 8>
                    : t.oc_block == 16 ? tiled_direct_kernel<scalar_t, acc_t, 16>
                                       : tiled_direct_kernel<scalar_t, acc_t, 32>;
      kernel<<<grid, kCudaThreads, shared, stream>>>(
          input.data_ptr<scalar_t>(), table[0].data_ptr<int64_t>(), tap_window.data_ptr<int>(),
          table[3].data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
          to_conv_shape(g), t, output.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return;
  }
  TSC_DISPATCH_CUDA_FLOATS(input.scalar_type(), "sparse_filter_direct_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    per_output_direct_kernel<scalar_t, acc_t>
        <<<cuda_blocks_for(total), kCudaThreads, 0, stream>>>(
            input.data_ptr<scalar_t>(), row_ptr.data_ptr<int64_t>(), col_idx.data_ptr<int64_t>(),
            values.data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
            to_conv_shape(g), output.data_ptr<scalar_t>(), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace torch_sparse_conv
