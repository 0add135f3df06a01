// The 'direct' method for 1x1 convolutions with stride 1 and no padding, read and written in
// place. There the polyphase layout (geometry.h) is the (N, C, H, W) input itself (channel c
// of a sample at c * H * W) and the wide run is the output plane, so the one-sample kernel's
// input copy and output scatter move data for nothing, and the batch-in-lanes layout's
// transposes cost more than the multiply-adds: a 1x1 layer reuses each input element only
// C_out x density times (6.4 for 256->64 at 90 %), and 64->256 @56 transposed 26 MB of
// output at batch 8.
//
// Layout of the work: a task computes one block of positions of one sample for a range of
// output channels, the partial sums accumulated in the output itself. Inside it the inner
// loop (simd.h's pointwise_tiles) takes tiles of 8 full-width vectors, every output channel
// of a tile before the next tile, the input channels visited in chunks (sorted_taps.h) whose
// rows of one tile fit L1; a tap costs one index load, one broadcast and 8 aligned-or-not
// loads and multiply-adds. Only whole vectors are read and written in place: the last
// H*W mod vector_lanes positions of each plane are gathered, several samples' side by side,
// into a zero-padded vector per channel, so no load or store crosses into the next plane or
// past the tensor.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/sparse_filter/cpu/direct.h"
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

template <typename scalar_t>
void pointwise_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                       const at::Tensor& col_idx, const at::Tensor& values,
                       const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& g,
                       at::Tensor& output) {
  constexpr int64_t lanes = vector_lanes<scalar_t>();
  const auto& simd = sparse_filter_simd<scalar_t>();
  const at::Tensor input_c = input.contiguous();
  const scalar_t* in = input_c.data_ptr<scalar_t>();
  const at::Tensor bias_c =
      bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* out = output.data_ptr<scalar_t>();

  TORCH_INTERNAL_ASSERT(g.out_h == g.in_h && g.out_w == g.in_w && g.phase_h == g.in_h &&
                        g.phase_w == g.in_w);
  const int64_t plane = g.in_h * g.in_w;  // also out_h * out_w
  const int64_t body = plane / lanes * lanes;
  const int64_t tail = plane - body;
  const int64_t block = std::min(body, kBlockPositions);  // a multiple of lanes
  const int64_t body_blocks = block > 0 ? ceil_div(body, block) : 0;
  // The tails of `per_tail` samples side by side fill one zero-padded vector per channel.
  const int64_t per_tail = tail > 0 ? lanes / tail : 1;
  const int64_t tail_groups = tail > 0 ? ceil_div(g.batch, per_tail) : 0;

  const int64_t chunk_channels = chunk_channels_for(
      g, col_idx.size(0),
      kChunkBytes / (std::clamp<int64_t>(body, lanes, simd.pointwise_tile) * int64_t(sizeof(scalar_t))));
  const SortedTaps<scalar_t> taps =
      sort_taps<scalar_t>(row_ptr, col_idx, values, g, chunk_channels, /*interleave=*/1);
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const std::vector<int64_t> offsets = taps.tap_offsets(rp);
  // Tap k's offset in the tails' buffer, where channel c of the sample's group starts at
  // c * lanes.
  std::vector<int64_t> tail_offsets;
  if (tail > 0) {
    tail_offsets.resize(col_idx.size(0));
    const int64_t cpg = g.in_channels_per_group(), ocpg = g.out_channels_per_group();
    at::parallel_for(0, g.out_channels, 64, [&](int64_t oc_begin, int64_t oc_end) {
      for (int64_t oc = oc_begin; oc < oc_end; ++oc) {
        const int64_t first_channel = oc / ocpg * cpg;  // a 1x1 filter's column is its channel
        for (int64_t k = rp[oc]; k < rp[oc + 1]; ++k) {
          tail_offsets[k] = (first_channel + taps.cols[k]) * lanes;
        }
      }
    });
  }

  const int64_t sample_in = g.in_channels * plane;
  const int64_t body_tasks = g.batch * body_blocks;
  const int64_t wanted_tasks = 4 * at::get_num_threads();
  const int64_t oc_splits =
      std::clamp<int64_t>(wanted_tasks / std::max<int64_t>(1, body_tasks + tail_groups), 1,
                          std::max<int64_t>(1, g.out_channels));
  const int64_t oc_per_task = ceil_div(g.out_channels, oc_splits);

  at::parallel_for(0, (body_tasks + tail_groups) * oc_splits, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tail_in, tail_out;
    for (int64_t task = begin; task < end; ++task) {
      // Channel ranges outermost: each thread's contiguous range of tasks then holds body
      // and tail items alike (a tail item is a vector, a body item up to 16).
      const int64_t item = task % (body_tasks + tail_groups);
      const int64_t oc0 = task / (body_tasks + tail_groups) * oc_per_task;
      const int64_t oc1 = std::min(g.out_channels, oc0 + oc_per_task);
      if (oc0 >= oc1) continue;  // the last splits may be empty
      if (item < body_tasks) {
        const int64_t n = item / body_blocks;
        const int64_t p0 = item % body_blocks * block;
        const int64_t count = std::min(block, body - p0);
        const scalar_t* sample = in + n * sample_in + p0;
        scalar_t* sample_out = out + (n * g.out_channels + oc0) * plane + p0;
        for (int64_t j = 0; j < taps.chunks; ++j) {
          simd.pointwise_tiles(sample, offsets.data(), taps.values,
                               taps.chunk_ptr.data() + oc0 * (taps.chunks + 1) + j,
                               taps.chunks + 1, oc1 - oc0, /*accumulate=*/j > 0,
                               b ? b + oc0 : nullptr, sample_out, plane, count);
        }
        continue;
      }
      // A group of samples' tails: element s * tail + i of channel c's vector is position
      // body + i of sample n0 + s.
      const int64_t n0 = (item - body_tasks) * per_tail;
      const int64_t samples = std::min(per_tail, g.batch - n0);
      tail_in.assign(g.in_channels * lanes, scalar_t(0));
      for (int64_t s = 0; s < samples; ++s) {
        const scalar_t* sample = in + (n0 + s) * sample_in + body;
        for (int64_t c = 0; c < g.in_channels; ++c) {
          std::copy(sample + c * plane, sample + c * plane + tail,
                    tail_in.data() + c * lanes + s * tail);
        }
      }
      tail_out.resize((oc1 - oc0) * lanes);
      simd.pointwise_tiles(tail_in.data(), tail_offsets.data(), taps.values, rp + oc0, 1,
                           oc1 - oc0, /*accumulate=*/false, b ? b + oc0 : nullptr,
                           tail_out.data(), lanes, lanes);
      for (int64_t s = 0; s < samples; ++s) {
        for (int64_t oc = oc0; oc < oc1; ++oc) {
          const scalar_t* from = tail_out.data() + (oc - oc0) * lanes + s * tail;
          std::copy(from, from + tail, out + ((n0 + s) * g.out_channels + oc) * plane + body);
        }
      }
    }
  });
}

}  // namespace

bool direct_pointwise_applies(const SparseFilterGeometry& g, at::ScalarType dtype) {
  if (g.kernel_h != 1 || g.kernel_w != 1 || g.stride_h != 1 || g.stride_w != 1 || g.pad_h != 0 ||
      g.pad_w != 0 || (dtype != at::kFloat && dtype != at::kDouble)) {
    return false;
  }
  // At least one full tile of positions per plane. Below it (ResNet-50's 7x7 planes: three
  // vectors and a tail) the tiles are too short to hide the multiply-add latency and the
  // per-call plan outweighs them: 2048->512 @7 at 90 % took 0.72 ms at batch 1 against 0.63
  // for the one-sample layout, and at batch 8 the lanes layout was as fast (2 threads).
  const int64_t tile = dtype == at::kFloat ? sparse_filter_simd<float>().pointwise_tile
                                           : sparse_filter_simd<double>().pointwise_tile;
  return g.in_h * g.in_w >= tile;
}

void sparse_filter_direct_pointwise_forward_cpu(const at::Tensor& input,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const at::Tensor& values,
                                                const c10::optional<at::Tensor>& bias,
                                                const SparseFilterGeometry& g,
                                                at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_direct_pointwise_forward_cpu",
                             [&] {
    pointwise_forward<scalar_t>(input, row_ptr, col_idx, values, bias, g, output);
  });
}

}  // namespace torch_sparse_conv
