// The 'direct' method on CPU: each output plane is a sum of shifted input runs, one per kept
// tap, read in place from the polyphase layout (csrc/sparse_filter/geometry.h). Work is
// proportional to the kept taps; there is no im2col buffer.
//
// Layout of the work:
// * Samples are interleaved in groups of `interleave` (1 for large planes): position
//   p = pixel * interleave + sample, so the small planes of late layers still give runs long
//   enough for full vector tiles.
// * The wide run is cut into blocks of positions; a task computes one block for a range of
//   output channels. Each thread lays out its sample group in a buffer of its own that
//   lives across calls (no allocation; the group is in cache when the block loop reads it),
//   a single sample only in the rows its own blocks read.
// * Input channels are visited in chunks whose rows fit in L1; the chunks' partial sums
//   accumulate in a small per-task buffer.
// * float16 and bfloat16 are read and written as they are and computed in float32: the input
//   is widened as it is laid out and each output rounded once as it is scattered, so the
//   reduced-precision call costs no extra pass or buffer.
#include "csrc/sparse_filter/cpu/direct.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <type_traits>
#include <vector>

#include "csrc/common/aligned_buffer.h"
#include "csrc/common/arithmetic.h"
#include "csrc/common/balanced_parallel.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/memory_format.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/sparse_filter/cpu/pick_pixels.h"
#include "csrc/sparse_filter/cpu/simd.h"
#include "csrc/sparse_filter/cpu/sorted_taps.h"
#include "csrc/sparse_filter/pattern.h"
#include "csrc/sparse_filter/polyphase.h"

namespace torch_sparse_conv {
namespace {

constexpr int64_t kBlockPositions = 512;
// Not the processor's L1 size (cpu_isa.h): on the Intel Xeon VM (48 KiB L1d) chunks of 48 KiB
// took 1.0-1.13x the time of 32 KiB ones at batch 1 (3x3 layers at 90 % and 95 %, 2 threads).
constexpr int64_t kL1Bytes = 32 * 1024;
constexpr int64_t kMinRunForOneSample = 128;  // shorter wide runs interleave samples

// Whether a task whose runs are `block` positions reads all its input channels as one chunk
// (input_bytes: what it reads of them) rather than in L1-sized chunks: where the runs are
// short (a single 7x7 plane: 49 positions, 63 with a 3x3 kernel's halo columns) and the
// input fits half of L2. A chunk's tap of a short run is a few vector loads, so what each
// chunk adds (reloading the partial sums, and a walk over every output channel's row of taps
// in short runs, which the caches do not see coming when the taps come from memory)
// outweighs reading the input from L2. Measured at batch 1, 90 %, 2 threads, Zen 4 VM,
// inside the fused ResNet-50 (per-layer medians, two alternated processes each way):
// 2048->512 @7 0.62-0.63x the time, the strided 1024->2048 shortcut (on its picked 7x7
// pixels) 0.66x, 512->2048 @7 0.87-0.90x, 512x7x7 3x3 0.95-1.01x, stride-2 512@14 0.92x;
// alone, with the caches flushed between calls, 2048->512 @7 0.69x, warm 0.92x. Not on
// longer runs: one chunk took 1.02-1.24x the time on the 14x14 to 56x56 layers.
constexpr int64_t kMaxShortRun = 64;
inline bool one_chunk_pays(int64_t block, int64_t input_bytes) {
  return block <= kMaxShortRun && input_bytes <= l2_cache_bytes() / 2;
}

// Lays out samples [first, first + interleave) (those < batch; zeros for the rest)
// interleaved: element e of sample s goes to dst[e * interleave + s]. A single sample
// (interleave 1) only in phase rows [first_row, last_row) of each channel's phase planes.
template <typename io_t, typename scalar_t>
void fill_sample_group(const io_t* input, int64_t first, int64_t interleave,
                       const SparseFilterGeometry& g, std::vector<scalar_t>& scratch,
                       scalar_t* dst, int64_t first_row, int64_t last_row) {
  const int64_t sample_in = g.in_channels * g.in_h * g.in_w;
  const int64_t sample_block = g.in_channels * g.channel_block();
  if (interleave == 1) {
    fill_polyphase_sample(input + first * sample_in, g, dst, first_row, last_row);
    return;
  }
  scratch.resize(sample_block);
  for (int64_t s = 0; s < interleave; ++s) {
    if (first + s < g.batch) {
      fill_polyphase_sample(input + (first + s) * sample_in, g, scratch.data());
      for (int64_t e = 0; e < sample_block; ++e) dst[e * interleave + s] = scratch[e];
    } else {
      for (int64_t e = 0; e < sample_block; ++e) dst[e * interleave + s] = scalar_t(0);
    }
  }
}

// Copies positions [begin, begin + count) of one output channel's interleaved wide run into
// the output planes of the group's samples, dropping padding columns and absent samples, and
// applies the epilogue there (residual: nullptr or laid out as the output). A single
// sample's float32/float64 rows go through store_rows (the copy and the epilogue in one
// vector pass, the whole rows between the block's ends in one call); float16/bfloat16 ones
// are rounded first, then finished.
template <typename scalar_t, typename io_t>
void scatter_block(const scalar_t* wide, int64_t begin, int64_t count, int64_t first,
                   int64_t interleave, int64_t oc, const SparseFilterGeometry& g,
                   io_t* output, const io_t* residual, bool relu,
                   const SparseFilterSimd<scalar_t>& simd) {
  const int64_t plane = g.out_h * g.out_w;
  if (interleave == 1) {
    const int64_t at = (first * g.out_channels + oc) * plane;
    for (int64_t q = begin, end = begin + count; q < end;) {
      const int64_t oh = q / g.phase_w, ow = q % g.phase_w;
      // From a row's start, every whole row before `end` at once; else the rest of this row.
      const int64_t whole_rows = ow == 0 ? (end - q) / g.phase_w : 0;
      const int64_t rows = std::max<int64_t>(whole_rows, 1);
      const int64_t next = whole_rows > 0 ? q + rows * g.phase_w
                                          : std::min(end, (oh + 1) * g.phase_w);
      const int64_t n = std::min(next, oh * g.phase_w + g.out_w) - q;  // the valid columns
      if (n > 0) {
        const int64_t to = at + oh * g.out_w + ow;
        if constexpr (std::is_same_v<io_t, scalar_t>) {
          simd.store_rows(wide + (q - begin), g.phase_w, output + to, g.out_w, rows, n,
                          {residual ? residual + to : nullptr, relu});
        } else {
          for (int64_t r = 0; r < rows; ++r) {
            const scalar_t* src = wide + (q - begin) + r * g.phase_w;
            io_t* dst = output + to + r * g.out_w;
            std::copy(src, src + n, dst);
            apply_epilogue_run(dst, residual ? residual + to + r * g.out_w : nullptr, n, relu);
          }
        }
      }
      q = next;
    }
    return;
  }
  const int64_t samples = std::min(interleave, g.batch - first);
  const int64_t first_pixel = begin / interleave;
  const int64_t last_pixel = (begin + count - 1) / interleave;
  for (int64_t pixel = first_pixel; pixel <= last_pixel; ++pixel) {
    const int64_t oh = pixel / g.phase_w, ow = pixel % g.phase_w;
    if (ow >= g.out_w) continue;
    for (int64_t s = 0; s < samples; ++s) {
      const int64_t q = pixel * interleave + s;
      if (q < begin || q >= begin + count) continue;
      const int64_t to = ((first + s) * g.out_channels + oc) * plane + oh * g.out_w + ow;
      output[to] = wide[q - begin];
      apply_epilogue_run(output + to, residual ? residual + to : nullptr, 1, relu);
    }
  }
}

// The geometry the one-sample layout is laid out in: rows of phase_w rounded up to whole
// vectors of the one-sample kernel where that adds at most an eighth more columns (58 -> 64
// for 56x56, 30 -> 32 for 28x28; 9 stays 9). Then every row and channel plane starts on a
// vector (the layout itself starts on a cache line), so the taps at column offset 0 load
// whole aligned vectors, where any phase_w not a multiple of the vector put all but a few
// across a cache line; the extra columns are computed and dropped. Measured on the Intel Xeon
// VM (64-byte vectors), batch 1, 90 %, 2 threads: 64@56 and 128@28 0.96-0.97x the time; 256@14
// (16 columns already) gains from the aligned layout alone (0.90x); rounding 512@7's 9 up
// to 16 took 1.26x. Not where samples are interleaved (small planes).
SparseFilterGeometry one_sample_geometry(const SparseFilterGeometry& g, int64_t vector_elements) {
  SparseFilterGeometry aligned = g;
  const int64_t phase_w = ceil_div(g.phase_w, vector_elements) * vector_elements;
  if (g.wide_len() >= kMinRunForOneSample && 8 * (phase_w - g.phase_w) <= g.phase_w) {
    aligned.phase_w = phase_w;
  }
  return aligned;
}

// io_t: the dtype of input and output; scalar_t: the one computed in (float for float16 and
// bfloat16).
template <typename io_t>
void direct_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                    const at::Tensor& col_idx, const at::Tensor& values,
                    const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& layer,
                    const Epilogue& epilogue, at::Tensor& output) {
  using scalar_t = at::opmath_type<io_t>;
  constexpr at::ScalarType compute_dtype = c10::CppTypeToScalarType<scalar_t>::value;
  constexpr int64_t lanes = vector_lanes<scalar_t>();
  const auto& simd = sparse_filter_simd<scalar_t>();
  const SparseFilterGeometry g =
      one_sample_geometry(layer, simd.conv_block_bytes / int64_t(sizeof(scalar_t)));
  const at::Tensor input_c = nchw_contiguous(input);
  const io_t* in = input_c.data_ptr<io_t>();
  at::Tensor bias_c = bias.has_value() && bias->defined()
                          ? bias->to(compute_dtype).contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  io_t* out = output.data_ptr<io_t>();
  const at::Tensor residual = epilogue.residual_in(at::MemoryFormat::Contiguous);
  const io_t* res = residual.defined() ? residual.data_ptr<io_t>() : nullptr;

  const int64_t one_run = g.wide_len();
  const int64_t interleave =
      one_run >= kMinRunForOneSample
          ? 1
          : std::min(g.batch, ceil_div(kBlockPositions, one_run));
  const int64_t sample_groups = ceil_div(g.batch, interleave);
  const int64_t len = one_run * interleave;
  // Blocks of equal size (whole vectors) rather than full ones and a short last one: the
  // threads take consecutive tasks, so 128@28 at batch 1 (840 positions: 512 + 328) left one
  // thread a third idle (0.93x the time with 432 + 408).
  const int64_t block =
      std::min(len, ceil_div(ceil_div(len, ceil_div(len, kBlockPositions)), lanes) * lanes);
  const int64_t blocks = ceil_div(len, block);
  const int64_t block_stride = ceil_div(block, lanes) * lanes;
  const int64_t group_elements = g.in_channels * g.channel_block() * interleave;

  // The kernel's reach in a phase plane past a position: rows and columns (phase_padding).
  const std::array<int64_t, 2> shift = phase_padding(g);
  // Input channels per chunk: the rows a block reads from one channel span the block plus
  // the kernel's reach, in each of the stride_h * stride_w phase planes.
  const int64_t reach = (shift[0] + 1) * g.phase_w;
  const int64_t channel_bytes = g.stride_h * g.stride_w * sizeof(scalar_t) *
                                std::min(g.phase_h * g.phase_w * interleave,
                                         block + reach * interleave);
  const int64_t chunk_channels =
      one_chunk_pays(block, channel_bytes * g.in_channels_per_group())
          ? g.in_channels_per_group()
          : chunk_channels_for(g, col_idx.size(0), kL1Bytes / channel_bytes);
  const SortedTaps<scalar_t> taps = sort_taps<scalar_t>(
      row_ptr, col_idx, values.to(compute_dtype), g, chunk_channels, interleave);
  const int64_t* offsets = taps.tap_offsets();

  // Split output channels too when (sample group, block) pairs are too few for the threads:
  // about 4 tasks a thread where there are channels enough, so that no thread waits long for
  // the last (64@56 at batch 1 has 7 blocks: on 2 threads 7 tasks ran 1.09x the time of 14).
  const int64_t wanted_tasks = 4 * at::get_num_threads();
  const int64_t wanted_splits = std::min<int64_t>(
      std::max<int64_t>(1, g.out_channels), ceil_div(wanted_tasks, sample_groups * blocks));
  const int64_t oc_per_task = ceil_div(g.out_channels, wanted_splits);
  // No task without channels (it would lay out its group for nothing): 10 channels in 8
  // splits are 5 of 2.
  const int64_t oc_splits = oc_per_task > 0 ? ceil_div(g.out_channels, oc_per_task) : 1;

  // The phase rows that blocks [first, last] of a one-sample group read: their positions,
  // the kernel's reach past them, and the last vector's overhang.
  const int64_t reach_positions = shift[0] * g.phase_w + shift[1];
  auto rows_read = [&](int64_t first, int64_t last) {
    const int64_t end = std::min(len, (last + 1) * block) + reach_positions + lanes;
    return std::array<int64_t, 2>{first * block / g.phase_w,
                                  std::min(g.phase_h, ceil_div(end, g.phase_w))};
  };
  const int64_t group_tasks = blocks * oc_splits;
  // Each thread's scratch: its tasks' partial sums, a sample's planes, and which rows of which
  // group it has laid out in its own layout buffer (below) during this call.
  struct Scratch {
    AlignedBuffer<scalar_t> partial;
    std::vector<scalar_t> planes;
    int64_t group = -1, first_row = 0, last_row = 0;
  };
  PerThread<Scratch> scratch_of;
  auto run_task = [&](int64_t task) {
    Scratch& own = scratch_of.mine();
    AlignedBuffer<scalar_t>& partial = own.partial;
    partial.resize(oc_per_task * block_stride);
    // Vector loads overhang the last run by up to one vector: slack after the group.
    thread_local AlignedBuffer<scalar_t> laid_out;
    laid_out.resize(group_elements + lanes);
    const int64_t group = task / group_tasks;
    const int64_t block_index = task / oc_splits % blocks;
    const int64_t p0 = block_index * block;
    const int64_t oc0 = task % oc_splits * oc_per_task;
    const int64_t oc1 = std::min(g.out_channels, oc0 + oc_per_task);
    const int64_t count = std::min(block, len - p0);
    // Only the rows the thread's tasks of the group read, laid out as its tasks come (the
    // rows past them in its buffer, stale, reach only lanes past the run, which scatter_block
    // drops): a block whose rows meet the ones the thread has (its own consecutive blocks)
    // extends them, one whose rows do not (taken from the back of the other's share,
    // parallel_tasks) starts a new range, so that the rows between are not laid out. Each
    // thread used to lay out the whole sample, both threads the same rows
    // (9 % of the CPU time of a ResNet-50 forward at batch 1, 2 threads). Measured at batch
    // 1, 2 threads, 15 alternated rounds, Intel Xeon VM: 64@56 at 90 / 95 % 0.92x / 0.88x the
    // time, 128@28 0.94x / 0.90x; 256@14 and 512@7 (one block: every thread reads every row)
    // unchanged; the whole ResNet-50 0.99x / 1.00x.
    const std::array<int64_t, 2> rows = interleave == 1
                                            ? rows_read(block_index, block_index)
                                            : std::array<int64_t, 2>{0, g.phase_h};
    auto lay_out = [&](int64_t first_row, int64_t last_row) {
      fill_sample_group(in, group * interleave, interleave, g, own.planes, laid_out.data(),
                        first_row, last_row);
    };
    if (group != own.group || rows[1] < own.first_row || rows[0] > own.last_row) {
      lay_out(rows[0], rows[1]);
      own.group = group;
      own.first_row = rows[0];
      own.last_row = rows[1];
    } else {
      if (rows[0] < own.first_row) {
        lay_out(rows[0], own.first_row);
        own.first_row = rows[0];
      }
      if (rows[1] > own.last_row) {
        lay_out(own.last_row, rows[1]);
        own.last_row = rows[1];
      }
    }
    const scalar_t* run = laid_out.data() + p0;
    for (int64_t j = 0; j < taps.chunks; ++j) {
      for (int64_t oc = oc0; oc < oc1; ++oc) {
        const int64_t k0 = taps.bounds(oc)[j], k1 = taps.bounds(oc)[j + 1];
        if (j > 0 && k0 == k1) continue;
        simd.conv_block(run, offsets + k0, taps.values + k0, k1 - k0,
                        /*accumulate=*/j > 0, b ? b[oc] : scalar_t(0),
                        partial.data() + (oc - oc0) * block_stride, count);
      }
    }
    for (int64_t oc = oc0; oc < oc1; ++oc) {
      scatter_block(partial.data() + (oc - oc0) * block_stride, p0, count,
                    group * interleave, interleave, oc, g, out, res, epilogue.relu, simd);
    }
  };
  parallel_tasks(sample_groups * group_tasks, run_task);
}

}  // namespace

at::Tensor sparse_filter_direct_forward_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                            const at::Tensor& col_idx, const at::Tensor& values,
                                            const c10::optional<at::Tensor>& bias,
                                            const SparseFilterGeometry& g,
                                            const Epilogue& epilogue,
                                            at::Tensor* lanes_layout) {
  if (g.kernel_h == 1 && g.kernel_w == 1 && g.pad_h == 0 && g.pad_w == 0 &&
      (g.stride_h != 1 || g.stride_w != 1)) {
    // A strided 1x1 convolution without padding reads every stride-th pixel (ResNet-50's
    // downsampling shortcuts): on those pixels, copied out, it is a stride-1 one. (The
    // layouts would otherwise lay out every phase plane of which it reads one.) The in-place
    // 1x1 kernels copy them block by block themselves (pointwise.cpp).
    if (input.is_contiguous() && direct_pointwise_applies(g, input.scalar_type())) {
      at::Tensor output = empty_activation({g.batch, g.out_channels, g.out_h, g.out_w},
                                           input.options(), at::MemoryFormat::Contiguous);
      sparse_filter_direct_pointwise_forward_cpu(input, row_ptr, col_idx, values, bias, g,
                                                 epilogue, output);
      return output;
    }
    const at::Tensor picked =
        pick_pixels(input, 0, g.out_h, g.stride_h, 0, g.out_w, g.stride_w);
    SparseFilterGeometry unit = g;
    unit.in_h = unit.phase_h = g.out_h;
    unit.in_w = unit.phase_w = g.out_w;
    unit.stride_h = unit.stride_w = 1;
    TORCH_INTERNAL_ASSERT(picked.size(2) == g.out_h && picked.size(3) == g.out_w);
    return sparse_filter_direct_forward_cpu(picked, row_ptr, col_idx, values, bias, unit,
                                            epilogue);
  }
  const bool channels_last = direct_lanes_channels_last(input, g);
  at::Tensor output = empty_activation(
      {g.batch, g.out_channels, g.out_h, g.out_w}, input.options(),
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  // A channels-last input takes the lanes even with a 1x1 kernel: the in-place 1x1 kernels
  // read NCHW planes, and converting there and back costs more than the lanes' layout.
  if (!channels_last && direct_pointwise_applies(g, input.scalar_type())) {
    sparse_filter_direct_pointwise_forward_cpu(input, row_ptr, col_idx, values, bias, g,
                                               epilogue, output);
  } else if (channels_last || direct_lanes_pay(g, input.scalar_type()) ||
             (lanes_layout == nullptr && direct_lanes_strip_rows(g, input.scalar_type()) > 0)) {
    sparse_filter_direct_lanes_forward_cpu(input, row_ptr, col_idx, values, bias, g, epilogue,
                                           output, lanes_layout);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "sparse_filter_direct_forward_cpu", [&] {
      direct_forward<scalar_t>(input, row_ptr, col_idx, values, bias, g, epilogue, output);
    });
  }
  return output;
}

}  // namespace torch_sparse_conv
