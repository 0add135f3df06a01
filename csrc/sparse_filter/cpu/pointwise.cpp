// The 'direct' method for 1x1 convolutions without padding, read and written in place (a
// strided one's sampled pixels through copies, below). There the polyphase layout
// (geometry.h) is the (N, C, H, W) input itself (channel c of a sample at c * H * W) and the
// wide run is the output plane, so the one-sample kernel's input copy and output scatter
// move data for nothing, and the batch-in-lanes layout's transposes cost more than the
// multiply-adds: a 1x1 layer reuses each input element only C_out x density times (6.4 for
// 256->64 at 90 %), and 64->256 @56 transposed 26 MB of output at batch 8.
//
// Layout of the work: a task computes one block of positions of one sample for a range of
// output channels, the partial sums accumulated in the output itself. Inside it the inner
// loop (simd.h's pointwise_tiles) takes tiles of 8 full-width vectors, every output channel
// of a tile before the next tile, all input channels at once; a tap costs one index load,
// one broadcast and 8 loads and multiply-adds. Input and output are read and written in
// place. Large inputs (batch 8 at 28x28 and 56x56) come from memory in 64-256 row streams at
// once, more than the hardware follows: their input channels are visited in chunks
// (sorted_taps.h) whose rows of one tile fit L1, and while a tile computes, its output
// channels prefetch the next chunk's or tile's rows into L2.
//
// Where a plane is not whole vectors (14x14; H*W not a multiple of 16 float32 / 8 float64)
// its last vector reads on into the next plane, lanes whose sums are dropped: each output
// channel's last vector waits in a small buffer until the last chunk and only its valid
// positions are copied out. Such planes also start off the vectors' alignment (a 14x14
// plane 4 floats on from the last), so most input loads cross a cache line: where each input
// element is read often enough (kAlignedReuse), the input is first copied into planes padded
// to whole vectors (aligned_planes); else the last sample, whose last plane would read past
// the tensor, is read from a copy. (The output stays in place: computed in padded planes
// and copied out, 256->1024 @14 took 1.2x the time of the padded input alone.)
//
// A strided layer (ResNet-50's downsampling shortcuts) reads every stride-th pixel: where
// each block of positions is one task (batch 8), the task copies its block's pixels of every
// input channel into a buffer of its own, in L2, and reads them there; else (a block split
// among tasks) they are copied out of the input first. Copied out first, they went out to
// memory and came back: batch 8, 90 %, 2 threads, Zen 4 VM, 9 alternated rounds in one
// process, 256->512 @56->28 0.94x the time in tasks, 512->1024 @28->14 0.92x. The copies
// wait for memory either way (a third of the 256->512 shortcut's time).
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "csrc/common/aligned_buffer.h"
#include "csrc/common/arithmetic.h"
#include "csrc/common/balanced_parallel.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/memory_format.h"
#include "csrc/sparse_filter/cpu/direct.h"
#include "csrc/sparse_filter/cpu/pick_pixels.h"
#include "csrc/sparse_filter/cpu/simd.h"
#include "csrc/sparse_filter/cpu/sorted_taps.h"

namespace torch_sparse_conv {
namespace {

// Positions per task: two tiles, so that a task's output block (its channels x 256) stays in
// L2 while the chunks add to it. Blocks of 256 to 2048 positions measured within 3 % of each
// other (ResNet-50's 1x1 layers at 90 %, batch 8).
constexpr int64_t kBlockPositions = 256;
// Bytes of L1 that one chunk's input rows of one tile may fill (32 KiB L1d on Zen 4).
constexpr int64_t kChunkBytes = 32 * 1024;
// Inputs from this size on are prefetched row by row into L2, a tile ahead (PrefetchRows,
// simd.h): they come from memory, not from the shared L3. At batch 8, 2 threads, 90 % and
// 95 % (interleaved A/B): 256->64 @56 (25.7 MB) 0.76-0.79x the time, 512->128 @28 (12.8 MB)
// 0.90-0.93x; an hour later, the VM 25-40 % faster, 0.83-0.92x and 0.97-1.0x; inputs of
// 6.4 MB and less (and every layer at batch 1) 0.95-1.03x, no gain.
constexpr int64_t kPrefetchInputBytes = 8 << 20;
// Taps per input channel (the times each input element is read) from which the input is
// copied into aligned planes where its planes are not whole vectors. Measured on the Intel
// Xeon VM at 2 threads against reading the planes in place (interleaved, the copy included),
// on 14x14 planes: 256->1024 at 90 % (102 taps a channel) 0.81-0.89x the time at batch 1 and
// 8, at 95 % (51) 0.86-0.89x; 1024->256 at 90 % (26) 0.93-0.95x; 1024->256 at 95 % (13)
// 1.01-1.30x, 512->128 at 90 % and 95 % (13, 6) 1.20-1.44x.
constexpr int64_t kAlignedReuse = 24;

// The input's planes copied into planes of `run` (whole vectors) elements, zeros after
// each plane's own.
template <typename scalar_t>
at::Tensor aligned_planes(const at::Tensor& input, int64_t plane, int64_t run) {
  const int64_t planes = input.size(0) * input.size(1);
  at::Tensor padded = at::empty({planes * run}, input.options());
  const scalar_t* src = input.data_ptr<scalar_t>();
  scalar_t* dst = padded.data_ptr<scalar_t>();
  at::parallel_for(0, planes, std::max<int64_t>(1, 32768 / run), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::copy(src + i * plane, src + (i + 1) * plane, dst + i * run);
      std::fill(dst + i * run + plane, dst + (i + 1) * run, scalar_t(0));
    }
  });
  return padded;
}

template <typename scalar_t>
void pointwise_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                       const at::Tensor& col_idx, const at::Tensor& values,
                       const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& g,
                       const Epilogue& epilogue, at::Tensor& output) {
  constexpr int64_t lanes = vector_lanes<scalar_t>();
  const auto& simd = sparse_filter_simd<scalar_t>();
  at::Tensor input_c = nchw_contiguous(input);
  const at::Tensor bias_c =
      bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* out = output.data_ptr<scalar_t>();
  const at::Tensor residual = epilogue.residual_in(at::MemoryFormat::Contiguous);
  const scalar_t* res = residual.defined() ? residual.data_ptr<scalar_t>() : nullptr;

  const bool strided = g.stride_h != 1 || g.stride_w != 1;
  TORCH_INTERNAL_ASSERT(strided || (g.out_h == g.in_h && g.out_w == g.in_w));
  const int64_t plane = g.out_h * g.out_w;
  // Positions are computed in whole vectors: `run` a plane.
  const bool whole_vectors = plane % lanes == 0;
  const int64_t run = ceil_div(plane, lanes) * lanes;
  const int64_t block = std::min(run, kBlockPositions);  // a multiple of lanes
  const int64_t blocks = ceil_div(run, block);
  const int64_t items = g.batch * blocks;
  const int64_t oc_splits = std::clamp<int64_t>(4 * at::get_num_threads() / items, 1,
                                                std::max<int64_t>(1, g.out_channels));
  // A strided layer's pixels: copied by each task (one a block), else out of the input first.
  const bool pick_in_tasks = strided && oc_splits == 1;
  if (strided && !pick_in_tasks) {
    input_c = pick_pixels(input_c, 0, g.out_h, g.stride_h, 0, g.out_w, g.stride_w);
  }
  // The input's planes, in_plane elements apart: in place, or copied to whole vectors, or
  // each task's block of picked pixels.
  const bool aligned_copy = !pick_in_tasks && !whole_vectors &&
                            col_idx.size(0) >= kAlignedReuse * g.in_channels;
  if (aligned_copy) input_c = aligned_planes<scalar_t>(input_c, plane, run);
  const int64_t in_plane = pick_in_tasks ? block : aligned_copy ? run : plane;
  const scalar_t* in = input_c.data_ptr<scalar_t>();

  // Large inputs come from memory and are prefetched a chunk ahead (below); chunks whose rows
  // fit L1 keep those prefetched rows few. Every other input is read as one chunk of all its
  // channels: each further chunk reloads and stores the partial sums in the output, and
  // walks every output channel's taps in short runs, which cost more than reading a tile's
  // rows from L2. Measured inside the fused ResNet-50 (90 %, 2 threads, Zen 4 VM, one
  // process alternating both rules forward by forward, per-layer medians): at batch 1 (no
  // layer prefetched) the 1x1 layers at 14x14 0.76-0.85x the time, at 28x28 0.81-0.91x, at
  // 56x56 0.82-1.04x, the model 0.95x; at batch 8 the layers not prefetched 0.65-0.94x. The
  // prefetched ones gained less or lost: 256->64 @56 0.93-0.97x, 256->128 @56 0.88x, but
  // 512->128 @28 1.09-1.14x, 512->256 @28 1.04-1.05x (and 1.02-1.09x with 256 channels a
  // chunk).
  const bool prefetch = g.groups == 1 && !pick_in_tasks &&
                        g.batch * g.in_channels * plane * int64_t(sizeof(scalar_t)) >=
                            kPrefetchInputBytes;
  const int64_t chunk_channels =
      prefetch ? chunk_channels_for(g, col_idx.size(0),
                                    kChunkBytes / (std::min(block, simd.pointwise_tile) *
                                                   int64_t(sizeof(scalar_t))))
               : g.in_channels_per_group();
  // Tap k reads input channel first_channel(oc) + cols[k] (a 1x1 filter's column is its
  // channel), at that channel's plane, in_plane positions apart: the offsets of a geometry
  // whose channel block is one such plane, kept with the pattern's plan (sorted_taps.h).
  // Built here every call, they cost a pass over the pattern each (a std::vector zeroed, then
  // written): at batch 1, where every tap serves one 7x7 to 56x56 plane, that pass and its
  // memory traffic were ~2 % of a ResNet-50 forward.
  SparseFilterGeometry planes = g;
  planes.stride_h = planes.stride_w = 1;
  planes.phase_h = 1;
  planes.phase_w = in_plane;
  const SortedTaps<scalar_t> taps = sort_taps<scalar_t>(
      row_ptr, col_idx, values, planes, chunk_channels, /*interleave=*/1);
  const int64_t* offsets = taps.tap_offsets();

  const int64_t sample_in = g.in_channels * (pick_in_tasks ? g.in_h * g.in_w : in_plane);
  // Input chunk j's rows, from the position of a sample that `at` points to. (Prefetched
  // only with one group: then every output channel's chunk j is the same input channels.)
  auto chunk_rows = [&](const scalar_t* at, int64_t j) {
    const int64_t first = j * chunk_channels;
    return PrefetchRows<scalar_t>{at + first * in_plane,
                                  std::min(chunk_channels, g.in_channels - first), in_plane};
  };
  const int64_t oc_per_task = ceil_div(g.out_channels, oc_splits);

  // The final sums written past the caches (non-temporal stores) where the output is large
  // enough to leave the shared cache before it is read, and the final stores are the only
  // ones (one chunk: with several, the output holds the partial sums, in cache). The writes
  // then need no read of each line first. Zen 4 VM, batch 8, 90 %, 2 threads: 64->256 @56
  // (25.7 MB, one chunk) 0.72-0.79x the time, fused with its residual and ReLU 0.70-0.76x;
  // the whole fused ResNet-50 0.91x the median time over 10 alternated processes in one of
  // the VM's slow phases (its fastest rounds equal); a bound of 8 MB against 16 (which left
  // out the 12.8 MB outputs at 28x28) 0.94x. With several chunks (128->512 @28 at 90 %)
  // streaming took 1.1-1.7x the time; and 4 MB as the bound, 1.05x the model's.
  const bool stream = taps.chunks == 1 &&
                      output.numel() * int64_t(sizeof(scalar_t)) >= l3_cache_bytes() / 4 &&
                      plane % simd.pointwise_vector == 0 &&
                      reinterpret_cast<uintptr_t>(out) % 64 == 0;
  // Each thread's scratch: the copy of the last sample where planes are not whole vectors
  // (and were not copied to whole vectors), the last vectors of a block's output channels,
  // and a block's picked pixels.
  struct Scratch {
    std::vector<scalar_t> padded_in, tails;
    int64_t padded_sample = -1;
    AlignedBuffer<scalar_t> picked;
  };
  PerThread<Scratch> scratch_of;
  const int64_t tasks = items * oc_splits;
  auto run_task = [&](int64_t task) {
    Scratch& scratch = scratch_of.mine();
    std::vector<scalar_t>& padded_in = scratch.padded_in;
    std::vector<scalar_t>& tails = scratch.tails;
    int64_t& padded_sample = scratch.padded_sample;
    // Channel ranges outermost: each thread's contiguous range of tasks then spans the
    // positions evenly.
    const int64_t item = task % items;
    const int64_t oc0 = task / items * oc_per_task;
    const int64_t oc1 = std::min(g.out_channels, oc0 + oc_per_task);
    if (oc0 >= oc1) return;  // the last splits may be empty
    const int64_t n = item / blocks;
    const int64_t p0 = item % blocks * block;
    const int64_t count = std::min(block, run - p0);
    const scalar_t* x = in + n * sample_in;
    const int64_t valid = std::min(count, plane - p0);
    const scalar_t* block_in;  // the block's first position in input channel 0
    if (pick_in_tasks) {
      // Channel c's pixels of the block at c * block, zeros after the valid ones.
      AlignedBuffer<scalar_t>& picked = scratch.picked;
      picked.resize(g.in_channels * block);
      for (int64_t c = 0; c < g.in_channels; ++c) {
        scalar_t* dst = picked.data() + c * block;
        pick_positions(x + c * g.in_h * g.in_w, g.in_w, g.stride_h, g.stride_w, g.out_w, p0,
                       valid, dst);
        std::fill(dst + valid, dst + count, scalar_t(0));
      }
      block_in = picked.data();
    } else {
      if (!whole_vectors && !aligned_copy && n == g.batch - 1) {
        // The last vector of a plane reads into the next plane; past the last sample's last
        // plane that would be past the tensor, so the last sample is read from a copy with
        // a vector of zeros after it.
        if (padded_sample != n) {
          padded_in.resize(sample_in + lanes);
          std::copy(x, x + sample_in, padded_in.data());
          std::fill(padded_in.data() + sample_in, padded_in.data() + sample_in + lanes,
                    scalar_t(0));
          padded_sample = n;
        }
        x = padded_in.data();
      }
      block_in = x + p0;
    }
    scalar_t* y = out + (n * g.out_channels + oc0) * plane + p0;
    const int64_t vector = simd.pointwise_vector;
    tails.resize((oc1 - oc0) * vector);
    // The epilogue as the last chunk stores the block's full vectors; the tails below.
    const StoreEpilogue<scalar_t> last_stores{res ? res + (y - out) : nullptr,
                                              epilogue.relu, stream};
    for (int64_t j = 0; j < taps.chunks; ++j) {
      // The rows chunk j reads and those read next: chunk j + 1's here, or chunk 0's of the
      // next task (its sample as the tensor holds it), this thread's next unless the other
      // has taken it.
      PrefetchRows<scalar_t> rows, after;
      if (prefetch) {
        rows = chunk_rows(block_in, j);
        if (j + 1 < taps.chunks) {
          after = chunk_rows(block_in, j + 1);
        } else if (task + 1 < tasks && (task + 1) % items != 0) {
          const int64_t next = (task + 1) % items;
          after = chunk_rows(in + next / blocks * sample_in + next % blocks * block, 0);
        }
      }
      simd.pointwise_tiles(block_in, offsets, taps.values,
                           taps.chunk_ptr() + oc0 * (taps.chunks + 1) + j,
                           taps.chunks + 1, oc1 - oc0, /*accumulate=*/j > 0,
                           b ? b + oc0 : nullptr, y, plane, valid, tails.data(), rows, after,
                           j + 1 == taps.chunks ? last_stores : StoreEpilogue<scalar_t>{});
    }
    if (stream) fence_streamed_stores();
    const int64_t tail = valid % vector;
    if (tail == 0) return;
    for (int64_t oc = oc0; oc < oc1; ++oc) {
      const scalar_t* from = tails.data() + (oc - oc0) * vector;
      scalar_t* sums = y + (oc - oc0) * plane + (valid - tail);
      std::copy(from, from + tail, sums);
      apply_epilogue_run(sums, res ? res + (sums - out) : nullptr, tail, epilogue.relu);
    }
  };
  parallel_tasks(tasks, run_task);
}

}  // namespace

bool direct_pointwise_applies(const SparseFilterGeometry& g, at::ScalarType dtype) {
  if (g.kernel_h != 1 || g.kernel_w != 1 || g.pad_h != 0 || g.pad_w != 0 ||
      (dtype != at::kFloat && dtype != at::kDouble)) {
    return false;
  }
  // At least one full tile of output positions per plane. Below it (ResNet-50's 7x7
  // planes: three vectors and a tail) the tiles are too short to hide the multiply-add
  // latency and the per-call plan outweighs them: 2048->512 @7 at 90 % took 0.72 ms at batch
  // 1 against 0.63 for the one-sample layout. Copying the planes of several samples one
  // after another into a run did not help there: 1.3-1.4x dense at batch 8 against 1.45-1.7x
  // for the lanes layout (2 threads).
  const int64_t tile = dtype == at::kFloat ? sparse_filter_simd<float>().pointwise_tile
                                           : sparse_filter_simd<double>().pointwise_tile;
  return g.out_h * g.out_w >= tile;
}

void sparse_filter_direct_pointwise_forward_cpu(const at::Tensor& input,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const at::Tensor& values,
                                                const c10::optional<at::Tensor>& bias,
                                                const SparseFilterGeometry& g,
                                                const Epilogue& epilogue, at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_direct_pointwise_forward_cpu",
                             [&] {
    pointwise_forward<scalar_t>(input, row_ptr, col_idx, values, bias, g, epilogue, output);
  });
}

}  // namespace torch_sparse_conv
