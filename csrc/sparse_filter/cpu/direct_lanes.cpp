// The 'direct' method on CPU with the batch in the vector lanes: blocks of lanes<scalar_t>()
// samples (8 float32, 4 float64) laid out as x[channel][polyphase position][sample], so
// that each tap at each output pixel is one aligned vector load and one multiply-add for
// the whole block. Used when the batch fills most of the lanes, or for strips of one sample
// (direct.cpp decides).
//
// Layout of the work:
// * The output plane is cut into tiles of R rows x T vectors (R * T accumulators, up to 28
//   on AVX-512, where a vector holds two pixels); a task computes one tile of one sample
//   block for a range of output channels.
// * Input channels are visited in chunks small enough that the input a tile reads from them
//   stays in L1 while every output channel of the task reads it; the chunks' partial sums
//   wait in a per-task buffer (L2).
// * The layout is written by 8x8 (float64: 4x4) in-register transposes, and the output read
//   back by the same, straight into the (N, C_out, H_out, W_out) result. For inference on
//   NCHW blocks each thread lays out only the rows of the tile it computes next, into a
//   window of its own that stays in L2 (RowWindow). A channels-last input is read as it is
//   (a pixel's channels transposed with the block's samples) and its output written
//   channels-last the same way: no conversion of either.
// * A single sample (batch 1) of a strided layer or a large plane takes the lanes too, as
//   horizontal strips of its rows, one a lane (strips_geometry).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "csrc/common/aligned_buffer.h"
#include "csrc/common/arithmetic.h"
#include "csrc/common/balanced_parallel.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/memory_format.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/sparse_filter/cpu/direct.h"
#include "csrc/sparse_filter/cpu/lanes_layout.h"
#include "csrc/sparse_filter/cpu/lanes_simd.h"
#include "csrc/sparse_filter/cpu/sorted_taps.h"
#include "csrc/sparse_filter/polyphase.h"

namespace torch_sparse_conv {
namespace {

// Bytes of L1 the input of one chunk may fill: three quarters of it (24 KiB of Zen 4's 32,
// 36 of Intel's 48); the rest holds the partial sums in flight and the taps. On the Intel
// Xeon VM (48 KiB), 36 KiB against 24: 512@7 at 90 %, batch 8, 0.91x the time, the other
// 3x3 layers at 90 % and 95 % 0.97-1.0x (2 threads, 12 interleaved rounds).
inline int64_t chunk_bytes() { return l1_data_cache_bytes() * 3 / 4; }
// A task's partial sums (its output channels x its tile) at most this many bytes: every
// chunk of input channels reads and writes all of them. 229 KB a task (128@28 and 256@14 at
// batch 8, all output channels in one task) against 115 KB on the Intel Xeon VM (2 MiB L2),
// 2 threads, 10 interleaved rounds: 128@28 0.92-0.94x the time, 256@14 0.96-0.97x, the
// other 3x3 layers 0.99-1.01x; batch 32 0.95-1.01x; a training step 0.96-1.01x. 64 KiB gained
// no more.
constexpr int64_t kMaxPartialBytes = 128 * 1024;
// At most how many consecutive tasks of one tile run together: one where a block's input fits
// a core's L2; else as many as keep their partial sums within a quarter of L2 (the rest holds
// the chunk of input streaming through and the taps).
// Split by output channels, every task reads the whole input: 2048->512 @7 (a 3.2 MB block,
// 8 tasks of 64 output channels) streamed it from L3 once a task. Batch 8, 90 %, 2 threads,
// Intel Xeon VM (2 MiB L2: 512 KiB of partial sums), two alternated rounds: 2048->512 @7
// 1.76-1.82 -> 1.56-1.60 ms; partial sums of up to 256 KiB 1.60-1.68, 1 MiB 1.53-1.57 but
// 512->2048 @7 (whose 0.9 MB input fits L2) 1.29-1.32 -> 1.38-1.40. On Zen 4 (1 MiB L2)
// 512 KiB of partial sums left L2 for L3 at every chunk, which both cores then shared: at 2
// threads (batch 8, 7 alternated rounds) 256 KiB took 0.87-0.91x the time of 512 on 256@14
// at 90 / 95 %, 0.83-0.88x on 512@7, 0.93-0.95x on the stride-2 3x3 layers at 28 and 14;
// the 1x1 layers at 7 and 14 0.96-1.05x, 1 thread unchanged.
inline int64_t tasks_at_once(int64_t block_bytes, int64_t task_partial_bytes) {
  if (block_bytes <= l2_cache_bytes()) return 1;
  return std::max<int64_t>(1, l2_cache_bytes() / 4 / std::max<int64_t>(1, task_partial_bytes));
}
// At most this many chunks of input channels, however many channels: each chunk walks the
// task group's output channels again, reloading and storing their partial sums (up to a
// quarter of L2, tasks_at_once) and reading each channel's taps in a short run. Layers of
// 256 and 512 channels (at 90 % 9 channels a chunk by the L1 rule, 28 and 57 chunks) then
// read their input from L2 in chunks of 32 and 64. Measured inside the fused ResNet-50 at
// batch 8, 90 %, 2 threads, Zen 4 VM (one process alternating both rules forward by forward,
// per-layer medians): 256x14x14 0.88-0.94x the time, 512x7x7 0.83-0.86x, stride-2 512@14
// 0.84x and 256@28 0.95x, 128x28x28 (16 channels a chunk, not 9) 1.00-1.06x, the model
// 0.96x; at batch 1 (strips) stride-2 256@28 0.83x, the others 0.98-0.99x. Alone (NCHW,
// caches flushed between calls / warm): 256x14x14 0.91x / 0.98x, 512x7x7 0.83x / 0.93x;
// 4 chunks at most took 1.06-1.12x the time on 128x28x28.
constexpr int64_t kMaxChunks = 8;
// Sample blocks laid out at a time: at least one, else as many as fit this many bytes.
constexpr int64_t kLayoutBytes = int64_t(64) << 20;

// A tile of the output plane: rows x cols vectors of pixels_per_vector pixels each.
struct TileShape {
  int64_t rows, cols, pixels_per_vector;
  int64_t pixel_cols() const { return cols * pixels_per_vector; }
};

// The output plane as the tiles cut it: h rows of w pixels, `stride` pixels apart in the
// layout. Where the layout's rows have no halo columns (1x1 kernels: a layout row is an
// output row, padding included) the plane is one row of out_h * out_w pixels, so that tiles
// need not stop at a row's end: a 7x7 plane is one tile of 25 vectors (the last half wide).
struct TiledPlane {
  int64_t h, w, stride;
};

TiledPlane tiled_plane(const SparseFilterGeometry& g) {
  if (g.kernel_h == 1 && g.kernel_w == 1 && g.phase_w == g.out_w) {
    return {1, g.out_h * g.out_w, g.out_h * g.out_w};
  }
  return {g.out_h, g.out_w, g.phase_w};
}

// Output tiles as wide as the row allows up to half of max_tile vectors (rows cut evenly),
// then as many rows as the accumulators allow: on AVX-512 (two pixels a vector) 56 -> 2 x 14,
// 28 -> 2 x 14, 14 -> 4 x 7 (at most: the 14 rows go 3, 4, 3, 4), 7 -> 7 x 4 (the last
// vector of each row half wide). At least two rows: a 1 x 28 tile of 56 pixels reads 3 x 58
// pixels of each input channel, so its chunk of input channels (8 taps at 90 %) overflowed L1.
template <typename scalar_t>
TileShape choose_tile(const TiledPlane& plane, const LaneKernels<scalar_t>& kernels) {
  const int64_t pixels = kernels.pixels_per_vector;
  const int64_t row_vectors = ceil_div(plane.w, pixels);
  const int64_t max_cols = plane.h > 1 ? kernels.max_tile / 2 : kernels.max_tile;
  const int64_t cols = ceil_div(row_vectors, ceil_div(row_vectors, max_cols));
  const int64_t rows = std::max<int64_t>(
      1, std::min({kernels.max_tile / cols, int64_t(kernels.max_rows), plane.h}));
  return {rows, cols, pixels};
}

// The deinterleave's writes go to lanes<scalar_t>() output planes a channel, a run of a row
// or a few rows in each: too short and too scattered for the hardware prefetcher, so every
// store missed in turn. Asking for the lines kPrefetchChannels channels ahead overlaps those
// misses: measured at batch 8, 90 %, 2 threads, 64@56 2.7-3.0 -> 2.3 ms and 128@28 2.1 ->
// 1.9 ms; the layers of 14 and 7 unchanged.
constexpr int64_t kPrefetchChannels = 2;

// Prefetches the cache lines of [p, p + bytes) for writing.
inline void prefetch_for_writing(const void* p, int64_t bytes) {
  const auto first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const auto end = reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes);
  for (uintptr_t line = first; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line), /*rw=*/1, /*locality=*/3);
  }
}

// The geometry the lanes forward lays its input out in. Where a vector holds two pixels, an
// odd phase_w puts every other row (and phase plane, and channel) half a vector off, so that
// half the loads of taps at even column offsets cross a cache line; one more column of zeros
// aligns them all (those at odd offsets cross a line either way). Measured at batch 8, 90 %,
// 2 threads on the Intel Xeon VM: kernels one column wide (all taps at offset 0; a 1x1
// layer's 7x7 plane is then tiled as 7 rows of 4 vectors, the last half wide, instead of
// one run of 25) 2048->512 @7 0.95x the time, 512->2048 @7 0.90-0.92x; ResNet-50's stride-2
// 3x3 layers (phase planes 29, 15 and 8 wide) 0.92-0.96x; 512@7 3x3 at stride 1 1.01-1.03x,
// so left as it is. Not where the layout is kept for another reader (layout_shared): the
// values' gradient, which reads it with the layer's phase_w, or the next phase convolution
// of a strided layer's input gradient (backward.cpp), which computes its geometry anew.
SparseFilterGeometry lanes_geometry(const SparseFilterGeometry& g, bool layout_shared,
                                    int64_t pixels_per_vector) {
  SparseFilterGeometry aligned = g;
  if (!layout_shared && pixels_per_vector == 2 && (g.kernel_w == 1 || g.stride_w > 1) &&
      g.phase_w % 2 == 1) {
    aligned.phase_w += 1;
  }
  return aligned;
}

// A single sample in the lanes as strips (direct_lanes_strip_rows): its output rows cut into
// lanes<scalar_t>() horizontal strips of `rows` rows, strip s in lane s. Each lane is then a
// sample of this geometry: `rows` output rows, and phase planes of those rows and the
// kernel's reach below them. in_h and pad_h stay the sample's: the layout finds each lane's
// input rows from them (lay_out_lanes_channel's lane_rows).
SparseFilterGeometry strips_geometry(const SparseFilterGeometry& g, int64_t rows, int64_t lanes) {
  SparseFilterGeometry strips = g;
  strips.batch = lanes;
  strips.out_h = rows;
  strips.phase_h = rows + (g.kernel_h - 1) * g.dilation_h / g.stride_h;
  return strips;
}

// Where a single sample takes the lanes as strips (direct_lanes_strip_rows): at least two
// rows a strip, and a strided layer or an output plane of at least kMinStripsPlane pixels.
// Each tap is then one aligned vector load for 8 output rows at once, where the one-sample
// layout's loads start at any column, half of them across a cache line (and a strided
// layer's one-sample runs are padded more). Measured at batch 1, float32, 90 %, Zen 4 VM, 2
// threads, against the one-sample layout: inside the fused ResNet-50 (per-layer medians, 4
// alternated processes each way) the stride-2 128@56 0.85-0.88x the time, 256@28
// 0.90-0.92x, the 7x7 stem (3 channels, 224 -> 112) 0.96x, the whole model 0.98-1.03x
// (noise); alone (one process, alternated, 5-9 rounds) 128@56 0.79-0.89x, 256@28
// 0.86-0.89x (0.82-1.0x at 95 %), 64@112 0.82x (0.96x at 95 %), 32@224 0.72x (0.76x). Not
// taken: stride-1 layers of smaller planes, faster alone but not in the model: 128x28x28
// alone 0.92-0.99x (0.87x at 95 %), in the model 1.00-1.02x; 256x14x14 alone 0.92-0.96x, in
// the model 1.30-1.34x (its strips' layout, 2 rows and 2 of reach each, is twice the
// one-sample one; with the caches flushed between calls alone 1.2x too); 64x56x56
// 0.93-0.96x but 1.08-1.34x at 95 %. Strips of one row (7x7 outputs: a row of four vectors,
// too few accumulators): 512x7x7 0.96x, the stride-2 512@14 1.35x.
constexpr int64_t kMinStripsPlane = 84 * 84;  // between the 56x56 and 112x112 measured

// A thread's window on the lanes layout of one sample block: phase rows [first, last) of
// every input channel's phase planes, each plane held.count rows (one row tile's rows and the
// kernel's reach below them), laid out just before the thread computes that tile, so that
// the tile reads its input from L2. (The whole block laid out first went out to L3 and came
// back, each core's trips slowing the other's: measurements where the forward decides.)
// Consecutive row tiles of a block overlap by the kernel's reach: rows held already move up,
// not laid out again, so a thread's rows are laid out once where it takes its tiles in order.
template <typename scalar_t>
struct RowWindow {
  AlignedBuffer<scalar_t> data;
  int64_t block = -1, first = 0, last = 0;
};

// Makes `window` hold phase rows [first, last) of `block` from its row 0, planes of
// held_rows rows (planes: input channels x phases, row_elements apart a row);
// lay_out(window, from, to, held) writes rows [from, to) of every plane. Returns the
// window's first element.
template <typename scalar_t, typename LayOut>
scalar_t* hold_rows(RowWindow<scalar_t>& window, int64_t block, int64_t first, int64_t last,
                    int64_t held_rows, int64_t planes, int64_t row_elements,
                    const LayOut& lay_out) {
  const int64_t plane_elements = held_rows * row_elements;
  window.data.resize(planes * plane_elements);
  int64_t from = first;
  if (window.block == block && window.first <= first && first < window.last) {
    const int64_t kept = std::min(window.last, last) - first;
    if (first > window.first) {
      for (int64_t p = 0; p < planes; ++p) {
        scalar_t* plane = window.data.data() + p * plane_elements;
        std::memmove(plane, plane + (first - window.first) * row_elements,
                     kept * row_elements * sizeof(scalar_t));
      }
    }
    from = first + kept;
  }
  if (from < last) lay_out(window.data.data(), from, last, PhaseRowsHeld{first, held_rows});
  window.block = block;
  window.first = first;
  window.last = last;
  return window.data.data();
}

template <typename io_t>
void direct_lanes_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                          const at::Tensor& col_idx, const at::Tensor& values,
                          const c10::optional<at::Tensor>& bias,
                          const SparseFilterGeometry& layer, const Epilogue& epilogue,
                          at::Tensor& output, at::Tensor* lanes_layout) {
  using scalar_t = at::opmath_type<io_t>;
  constexpr at::ScalarType compute_dtype = c10::CppTypeToScalarType<scalar_t>::value;
  constexpr int64_t L = lanes<scalar_t>();
  const LaneKernels<scalar_t>& kernels = *lane_kernels<scalar_t>();
  // A single sample's strips in the lanes (direct_lanes_strip_rows): output rows a lane.
  const int64_t strip_rows =
      lanes_layout == nullptr ? direct_lanes_strip_rows(layer, input.scalar_type()) : 0;
  const SparseFilterGeometry g = lanes_geometry(
      strip_rows > 0 ? strips_geometry(layer, strip_rows, L) : layer, lanes_layout != nullptr,
      kernels.pixels_per_vector);
  // float16/bfloat16 are widened from NCHW planes (fill_polyphase_channel).
  const bool channels_last =
      std::is_same_v<io_t, scalar_t> && direct_lanes_channels_last(input, layer);
  const at::Tensor input_c = channels_last ? input : nchw_contiguous(input);
  const io_t* in = input_c.data_ptr<io_t>();
  at::Tensor bias_c = bias.has_value() && bias->defined()
                          ? bias->to(compute_dtype).contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  io_t* out = output.data_ptr<io_t>();
  // The residual laid out as the output: its element for out[i] at res[i].
  const at::Tensor residual = epilogue.residual_in(
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const io_t* res = residual.defined() ? residual.data_ptr<io_t>() : nullptr;
  // The epilogue of the deinterleave that writes float32/float64 output at dst.
  auto stores_at = [&](const io_t* dst) {
    StoreEpilogue<scalar_t> stores;
    if constexpr (std::is_same_v<io_t, scalar_t>) {
      stores = {res ? res + (dst - out) : nullptr, epilogue.relu};
    }
    return stores;
  };

  const TiledPlane plane = tiled_plane(g);
  const TileShape tile = choose_tile(plane, kernels);
  const int64_t row_tiles = ceil_div(plane.h, tile.rows);
  const int64_t col_tiles = ceil_div(plane.w, tile.pixel_cols());
  // What a tile reads of one input channel: in each phase plane, its rows and columns plus
  // the kernel's reach.
  // Phase rows below a tile's last that its kernel reads.
  const int64_t row_reach = (g.kernel_h - 1) * g.dilation_h / g.stride_h;
  const int64_t rows_read = tile.rows + row_reach;
  const int64_t cols_read = tile.pixel_cols() + (g.kernel_w - 1) * g.dilation_w / g.stride_w;
  const int64_t channel_bytes =
      g.stride_h * g.stride_w * rows_read * cols_read * L * int64_t(sizeof(scalar_t));
  const int64_t chunk_channels =
      std::max(chunk_channels_for(g, col_idx.size(0), chunk_bytes() / channel_bytes),
               ceil_div(g.in_channels_per_group(), kMaxChunks));
  // NCHW full blocks of a plane of several row tiles are laid out by rows: into each thread's
  // window (RowWindow) where no caller keeps the layout, else into the whole layout (below).
  // The layout of a single row tile is read whole by every task anyway. Windows against the
  // whole layout, Zen 4 VM, batch 8, 90 %, 7 alternated rounds of two builds: at 2 threads
  // 64@56 0.99x the time, 128@28 1.01x, 256@14 0.96x (0.92x at 95 %), stride 2 128@56 0.84x,
  // 256@28 0.94x, 512@14 1.01x; at 1 thread 0.85-1.02x, at batch 32 0.85-0.93x.
  const bool by_rows = !channels_last && std::is_same_v<io_t, scalar_t> && strip_rows == 0 &&
                       g.batch % L == 0 && row_tiles > 1 && plane.h == g.out_h;
  // Strips always in windows (the whole-block layouts below lay samples out, not strips).
  const bool windowed = strip_rows > 0 || (by_rows && lanes_layout == nullptr);
  // The geometry of what the tiles read: a window's phase planes hold a row tile's rows and
  // the kernel's reach.
  SparseFilterGeometry read_g = g;
  if (windowed) {
    read_g.phase_h = std::min(g.phase_h, ceil_div(plane.h, row_tiles) + row_reach);
  }
  const SortedTaps<scalar_t> taps = sort_taps<scalar_t>(
      row_ptr, col_idx, values.to(compute_dtype), read_g, chunk_channels, L);
  const int64_t* offsets = taps.tap_offsets();

  const int64_t channel_block = g.channel_block();
  const int64_t block_elements = g.in_channels * channel_block * L;
  const int64_t blocks = ceil_div(g.batch, L);
  const int64_t wave = windowed ? blocks : std::clamp<int64_t>(
      kLayoutBytes / std::max<int64_t>(1, block_elements * int64_t(sizeof(scalar_t))), 1, blocks);
  // A layout an earlier call left of this same input (direct.h): read, not laid out again.
  const bool given = std::is_same_v<io_t, scalar_t> && lanes_layout != nullptr &&
                     lanes_layout->defined() && wave == blocks &&
                     lanes_layout->scalar_type() == compute_dtype &&
                     lanes_layout->numel() == blocks * block_elements;
  const at::Tensor laid_out =
      given ? *lanes_layout
            : empty_output(windowed ? 0 : wave * block_elements, compute_dtype);
  scalar_t* x = laid_out.data_ptr<scalar_t>();
  const int64_t in_plane = g.in_h * g.in_w;
  // Input rows and elements between one lane's and the next: samples', or strips' (a strip's
  // rows lane_rows below the last's).
  const int64_t lane_rows = strip_rows * g.stride_h;
  const int64_t lane_stride = strip_rows > 0 ? lane_rows * g.in_w : g.in_channels * in_plane;
  const int64_t out_plane = layer.out_h * layer.out_w;  // the output's (not a strip's)
  const int64_t tile_elements = tile.rows * tile.pixel_cols() * L;

  for (int64_t first_block = 0; first_block < blocks; first_block += wave) {
    const int64_t wave_blocks = std::min(wave, blocks - first_block);
    if (given || windowed) {
      // laid out already, or by each task (run_group)
    } else if (channels_last) {
      if constexpr (std::is_same_v<io_t, scalar_t>) {  // (else never channels-last)
        // Lay out the wave: each (block, padded phase row) from its samples' rows.
        const int64_t padded_rows = g.stride_h * g.phase_h;
        at::parallel_for(0, wave_blocks * padded_rows, 1, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t block = item / padded_rows, a = item % padded_rows / g.phase_h;
            const int64_t i = item % g.phase_h;
            const int64_t n0 = (first_block + block) * L;
            lay_out_lanes_row_channels_last(in + n0 * g.in_channels * in_plane,
                                            g.in_channels * in_plane, std::min(L, g.batch - n0),
                                            a, i, g, kernels, x + block * block_elements);
          }
        });
      }
    } else if (by_rows) {
      if constexpr (std::is_same_v<io_t, scalar_t>) {  // (else never by rows)
        // Lay out the wave: each (block, row tile) the phase rows from the tile's first
        // output row to the next tile's, in the order of the tile tasks below, so that
        // parallel_for gives a thread the rows its own tiles read (all but the kernel's reach
        // past its last tile). Split by channels, each thread wrote half of every tile's
        // input and read the other half from the other core: a forward of 128x28x28 or
        // 64x56x56 at 95 %, batch 8, took 1.2-1.6x the time when the VM places its two vCPUs
        // far apart (BENCHMARKS.md, "The two speeds measured, and layouts each thread writes for
        // itself"). This relies on OpenMP's fixed split of a parallel_for among its threads,
        // which the tile tasks start from (parallel_tasks), and holds about where the threads
        // do not divide the tiles or one thread takes the other's last tasks (speed only).
        at::parallel_for(0, wave_blocks * row_tiles, 1, [&](int64_t begin, int64_t end) {
          // A thread's consecutive row tiles of one block as one band of rows, laid out
          // channel by channel: long runs of each sample's rows (tile by tile, runs of a
          // few hundred bytes from 8 x 64 planes cost 1.04-1.11x a layer's time at 1 thread).
          for (int64_t item = begin; item < end;) {
            const int64_t block = item / row_tiles;
            const int64_t stop = std::min(end, (block + 1) * row_tiles);
            const int64_t first_row = item % row_tiles * plane.h / row_tiles;
            const int64_t last_tile = (stop - 1) % row_tiles;
            const int64_t last_row =
                last_tile + 1 == row_tiles ? g.phase_h : (last_tile + 1) * plane.h / row_tiles;
            const int64_t n0 = (first_block + block) * L;
            for (int64_t c = 0; c < g.in_channels; ++c) {
              lay_out_lanes_channel(in + (n0 * g.in_channels + c) * in_plane,
                                    g.in_channels * in_plane, g, kernels,
                                    x + block * block_elements + c * channel_block * L,
                                    first_row, last_row, whole_phase_planes(g));
            }
            item = stop;
          }
        });
      }
    } else {
      // Lay out the wave: each (block, channel) from its samples' planes.
      at::parallel_for(0, wave_blocks * g.in_channels, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> planes;
        for (int64_t item = begin; item < end; ++item) {
          const int64_t block = item / g.in_channels, c = item % g.in_channels;
          scalar_t* dst = x + block * block_elements + c * channel_block * L;
          const int64_t n0 = (first_block + block) * L;
          if constexpr (std::is_same_v<io_t, scalar_t>) {
            if (n0 + L <= g.batch) {
              lay_out_lanes_channel(in + (n0 * g.in_channels + c) * in_plane,
                                    g.in_channels * in_plane, g, kernels, dst, 0, g.phase_h,
                                    whole_phase_planes(g));
              continue;
            }
          }
          planes.resize(L * channel_block);
          for (int64_t s = 0; s < L; ++s) {
            const int64_t n = (first_block + block) * L + s;
            scalar_t* plane = planes.data() + s * channel_block;
            if (n < g.batch) {
              fill_polyphase_channel(in + (n * g.in_channels + c) * in_plane, g, plane);
            } else {
              std::fill(plane, plane + channel_block, scalar_t(0));
            }
          }
          kernels.interleave(planes.data(), channel_block, L, channel_block, dst, L);
        }
      });
    }

    const int64_t threads = at::get_num_threads();
    // Split output channels too when the tiles are too few for the threads, or when a task's
    // partial sums would outgrow kMaxPartialBytes.
    const int64_t tiles = wave_blocks * row_tiles * col_tiles;
    const int64_t partial_bytes = g.out_channels * tile_elements * int64_t(sizeof(scalar_t));
    const int64_t oc_splits = std::clamp<int64_t>(
        std::max(4 * threads / tiles, ceil_div(partial_bytes, kMaxPartialBytes)), 1,
        std::max<int64_t>(1, g.out_channels));
    const int64_t oc_per_task = ceil_div(g.out_channels, oc_splits);
    // Where a block's input outgrows a core's L2, consecutive tasks of one tile run together
    // (each chunk of input channels against all their output channels), so that the thread
    // streams the input from L3 once, not once a task (tasks_at_once). (The block's
    // input, not a tile's rows of it: 128@28's two tasks a tile are grouped too, 1.67-1.70 ->
    // 1.63 ms at batch 8, 90 %.)
    const int64_t group_tasks = tasks_at_once(
        block_elements * int64_t(sizeof(scalar_t)),
        oc_per_task * tile_elements * int64_t(sizeof(scalar_t)));
    // A tile's tasks in groups of at most group_tasks, of even sizes, the units the threads
    // share out (balanced_parallel.h); as many groups a thread where the tasks allow (8 tasks
    // of a tile in groups of at most 5 are 2 groups of 4, in groups of 3 are 4 of 2 where 2
    // threads share one tile).
    const int64_t threads_step = threads / std::gcd(tiles, threads);
    const int64_t groups_per_tile = std::min(
        oc_splits, ceil_div(ceil_div(oc_splits, group_tasks), threads_step) * threads_step);
    // Each thread's scratch: each task of a group its own oc_per_task output channels'
    // partial sums; its window of the input (where windowed); float16/bfloat16 output rows
    // before rounding.
    PerThread<AlignedBuffer<scalar_t>> partials_of;
    PerThread<RowWindow<scalar_t>> windows_of;
    PerThread<std::vector<scalar_t>> rounded_of;
    auto run_group = [&](int64_t unit) {
      const int64_t t = unit / groups_per_tile;
      const int64_t in_tile = unit % groups_per_tile;
      const int64_t group_begin = t * oc_splits + in_tile * oc_splits / groups_per_tile;
      const int64_t group_end = t * oc_splits + (in_tile + 1) * oc_splits / groups_per_tile;
      AlignedBuffer<scalar_t>& partials = partials_of.mine();
      partials.resize(std::min(group_tasks, oc_splits) * oc_per_task * tile_elements);
      const int64_t block = t / (row_tiles * col_tiles);
      // The rows dealt out evenly (14 -> 3, 4, 3, 4, not 4, 4, 4, 2), so that tasks of one
      // thread do as much as the other's.
      const int64_t row_tile = t / col_tiles % row_tiles;
      const int64_t oh0 = row_tile * plane.h / row_tiles;
      const int64_t ow0 = t % col_tiles * tile.pixel_cols();
      const int rows = static_cast<int>((row_tile + 1) * plane.h / row_tiles - oh0);
      const int cols = static_cast<int>(std::min(tile.pixel_cols(), plane.w - ow0));
      const scalar_t* base =
          windowed ? nullptr : x + block * block_elements + (oh0 * plane.stride + ow0) * L;
      if constexpr (std::is_same_v<io_t, scalar_t>) {  // (else never windowed)
        if (windowed) {
          const int64_t n0 = (first_block + block) * L;
          const int64_t held_channel = read_g.channel_block() * L;
          const scalar_t* window = hold_rows(
              windows_of.mine(), first_block + block, oh0,
              std::min(g.phase_h, oh0 + rows + row_reach),
              read_g.phase_h, g.in_channels * g.stride_h * g.stride_w, g.phase_w * L,
              [&](scalar_t* held_layout, int64_t from, int64_t to, PhaseRowsHeld held) {
                for (int64_t c = 0; c < g.in_channels; ++c) {
                  lay_out_lanes_channel(in + (n0 * g.in_channels + c) * in_plane,
                                        lane_stride, g, kernels,
                                        held_layout + c * held_channel, from, to, held,
                                        lane_rows);
                }
              });
          base = window + ow0 * L;
        }
      }
      // The group's output channels, consecutive (tasks past the last channel have none).
      const int64_t group_oc0 = group_begin % oc_splits * oc_per_task;
      const int64_t group_oc1 =
          std::min(g.out_channels, group_oc0 + (group_end - group_begin) * oc_per_task);
      for (int64_t j = 0; j < taps.chunks; ++j) {
        for (int64_t oc = group_oc0; oc < group_oc1; ++oc) {
          const int64_t k0 = taps.bounds(oc)[j], k1 = taps.bounds(oc)[j + 1];
          if (j > 0 && k0 == k1) continue;
          kernels.tile(base, plane.stride, offsets + k0, taps.values + k0, k1 - k0,
                       /*accumulate=*/j > 0, b ? b[oc] : scalar_t(0),
                       partials.data() + (oc - group_oc0) * tile_elements, rows, cols);
        }
      }
      // The group's output channels back to the output, as one task's: their partial sums
      // are consecutive.
      const int64_t n0 = (first_block + block) * L;
      const int64_t samples = std::min(L, g.batch - n0);
      // Strips: lane s writes the output rows strip_rows * s below lane 0's.
      const int64_t sample_stride =
          strip_rows > 0 ? strip_rows * g.out_w : g.out_channels * out_plane;
      if (channels_last) {
        if constexpr (std::is_same_v<io_t, scalar_t>) {
          // Each pixel's output channels of the group, transposed with the samples.
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t col = 0; col < cols; ++col) {
              const int64_t pixel = (oh0 + r) * plane.w + ow0 + col;
              io_t* dst = out + (n0 * out_plane + pixel) * g.out_channels + group_oc0;
              kernels.deinterleave(partials.data() + (r * cols + col) * L, tile_elements,
                                   group_oc1 - group_oc0, samples, dst, sample_stride,
                                   stores_at(dst));
            }
          }
        }
        return;
      }
      // Back to (N, C_out, H_out, W_out): each tile row to its samples' output rows.
      // The lanes written of tile row r: the samples, or the strips whose row is inside the
      // output (the last strips' rows may reach past it).
      auto lanes_of_row = [&](int64_t r) {
        return strip_rows > 0
                   ? std::min(L, ceil_div(layer.out_h - (oh0 + r), strip_rows))
                   : samples;
      };
      // A tile of whole rows is one run in each output plane.
      const bool whole_rows = cols == plane.w && lanes_of_row(0) == lanes_of_row(rows - 1);
      const int64_t run = whole_rows ? rows * cols : cols;
      const int64_t runs = whole_rows ? 1 : rows;
      auto destination = [&](int64_t oc, int64_t r) {
        return out + (n0 * g.out_channels + oc) * out_plane + (oh0 + r) * plane.w + ow0;
      };
      for (int64_t oc = group_oc0; oc < group_oc1; ++oc) {
        if (oc + kPrefetchChannels < group_oc1) {
          for (int64_t r = 0; r < runs; ++r) {
            for (int64_t s = 0; s < lanes_of_row(r); ++s) {
              io_t* ahead = destination(oc + kPrefetchChannels, r) + s * sample_stride;
              prefetch_for_writing(ahead, run * int64_t(sizeof(io_t)));
              if (res != nullptr) {
                prefetch_for_writing(res + (ahead - out), run * int64_t(sizeof(io_t)));
              }
            }
          }
        }
        for (int64_t r = 0; r < runs; ++r) {
          const scalar_t* src = partials.data() + (oc - group_oc0) * tile_elements + r * cols * L;
          io_t* dst = destination(oc, r);
          if constexpr (std::is_same_v<io_t, scalar_t>) {
            kernels.deinterleave(src, L, run, lanes_of_row(r), dst, sample_stride,
                                 stores_at(dst));
          } else {
            // Rounded first, then the epilogue on the rounded values (as the separate ops).
            // (Never strips: those are float32/float64 only.)
            std::vector<scalar_t>& rounded = rounded_of.mine();
            rounded.resize(samples * run);
            kernels.deinterleave(src, L, run, samples, rounded.data(), run, {});
            for (int64_t s = 0; s < samples; ++s) {
              io_t* sums = dst + s * sample_stride;
              std::copy(rounded.data() + s * run, rounded.data() + (s + 1) * run, sums);
              apply_epilogue_run(sums, res ? res + (sums - out) : nullptr, run,
                                 epilogue.relu);
            }
          }
        }
      }
    };
    parallel_tasks(tiles * groups_per_tile, run_group);
  }
  if (lanes_layout != nullptr && wave == blocks && std::is_same_v<io_t, scalar_t>) {
    *lanes_layout = laid_out;
  }
}

}  // namespace

bool direct_lanes_channels_last(const at::Tensor& input, const SparseFilterGeometry& g) {
  const at::ScalarType dtype = input.scalar_type();
  return (dtype == at::kFloat || dtype == at::kDouble) && input.dim() == 4 &&
         input.suggest_memory_format() == at::MemoryFormat::ChannelsLast &&
         input.is_contiguous(at::MemoryFormat::ChannelsLast) && direct_lanes_pay(g, dtype);
}

bool direct_lanes_layout_has_layer_geometry(const SparseFilterGeometry& g,
                                            at::ScalarType dtype) {
  const bool is_double = dtype == at::kDouble;
  const int64_t pixels_per_vector =
      is_double ? (lane_kernels<double>() ? lane_kernels<double>()->pixels_per_vector : 0)
                : (lane_kernels<float>() ? lane_kernels<float>()->pixels_per_vector : 0);
  return pixels_per_vector > 0 &&
         lanes_geometry(g, /*layout_shared=*/false, pixels_per_vector).phase_w == g.phase_w;
}

namespace {
// The lanes of the kernels that compute `dtype` (float64's, else float32's: float16 and
// bfloat16 are computed in float32), or 0 where the instruction set has none.
int64_t lanes_of_kernels(at::ScalarType dtype) {
  if (dtype == at::kDouble) return lane_kernels<double>() ? lanes<double>() : 0;
  return lane_kernels<float>() ? lanes<float>() : 0;
}
}  // namespace

bool direct_lanes_pay(const SparseFilterGeometry& g, at::ScalarType dtype) {
  // A partly filled block costs as much as a full one: take the lanes layout only where
  // the empty lanes are at most 1/8 of the computed ones. Measured at 1 thread, 90 %
  // sparsity, batch 8 (BENCHMARKS.md): 1.5x faster than the one-sample layout on 512@7,
  // 1.1x on 128@28, equal on 256@14 and 64@56; at batch 4 and 6 (half and a quarter
  // empty) 1.2-2x slower on 64@56.
  const int64_t L = lanes_of_kernels(dtype);
  return L > 0 && g.batch >= L && 8 * ceil_div(g.batch, L) * L <= 9 * g.batch;
}

int64_t direct_lanes_strip_rows(const SparseFilterGeometry& g, at::ScalarType dtype) {
  if (g.batch != 1 || (dtype != at::kFloat && dtype != at::kDouble)) return 0;
  const int64_t L = lanes_of_kernels(dtype);
  if (L == 0) return 0;
  const int64_t rows = ceil_div(g.out_h, L);
  // Rows computed past the output's last at most an eighth of those computed.
  if (rows < 2 || 8 * g.out_h < 7 * L * rows) return 0;
  const bool strided = g.stride_h > 1 || g.stride_w > 1;
  return strided || g.out_h * g.out_w >= kMinStripsPlane ? rows : 0;
}

void sparse_filter_direct_lanes_forward_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                            const at::Tensor& col_idx, const at::Tensor& values,
                                            const c10::optional<at::Tensor>& bias,
                                            const SparseFilterGeometry& g,
                                            const Epilogue& epilogue, at::Tensor& output,
                                            at::Tensor* lanes_layout) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "sparse_filter_direct_lanes_forward_cpu", [&] {
    direct_lanes_forward<scalar_t>(input, row_ptr, col_idx, values, bias, g, epilogue, output,
                                   lanes_layout);
  });
}

}  // namespace torch_sparse_conv
