// _sparse_filter_conv2d_backward on CPU.
//
// The gradient of the input is a forward convolution of grad_output, so it runs on the
// forward's kernels: with the transposed filter at stride 1, phase by phase of the input's
// polyphase layout otherwise (pattern.h). The gradient of the values is a sum per kept tap:
// with a block of samples in the vector lanes (the forward's lanes layout; grad_output read
// from the input gradient's lanes layout of it where the layer is 'same'), else one sample
// at a time on the polyphase layout of the input and the wide layout of grad_output (zeros
// in the padding columns), where each kept tap is one contiguous run:
//   grad_values[k] = sum_n dot(grad_output_wide[n, oc(k)], input_polyphase[n] + offset(k))
// and above the densities where those pay (method.h), oneDNN's weight gradient read at the
// kept taps.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "csrc/common/aligned_buffer.h"
#include "csrc/common/arithmetic.h"
#include "csrc/common/balanced_parallel.h"
#include "csrc/common/memory_format.h"
#include "csrc/common/output_buffer_cache.h"
#include "csrc/common/reduced_precision.h"
#include "csrc/sparse_filter/geometry.h"
#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/polyphase.h"
#include "csrc/sparse_filter/pattern.h"
#include "csrc/sparse_filter/pattern_cache.h"
#include "csrc/sparse_filter/cpu/backward.h"
#include "csrc/sparse_filter/cpu/direct.h"
#include "csrc/sparse_filter/cpu/forward.h"
#include "csrc/sparse_filter/cpu/lanes_layout.h"
#include "csrc/sparse_filter/cpu/lanes_simd.h"
#include "csrc/sparse_filter/cpu/pick_pixels.h"
#include "csrc/sparse_filter/cpu/simd.h"
#include "csrc/sparse_filter/cpu/sorted_taps.h"

namespace torch_sparse_conv {
namespace {

// gv[k] += dot(plane, base + offsets[k] * scale) over the segments, for the taps k in
// [first, last) of one output channel, up to kRuns a call: each load of the plane serves the
// 8 or 12 runs dot_runs takes at a time, and a tap's sum has the same bits however the taps
// are cut into runs.
template <typename scalar_t, typename DotRuns>
void add_tap_dots(DotRuns dot_runs, const scalar_t* plane, const scalar_t* base,
                  const int64_t* offsets, int64_t scale, int64_t first, int64_t last,
                  const std::vector<DotSegment>& segments, scalar_t* gv) {
  // A multiple of what each dot_runs kernel takes at a time (8 or 12, simd.cpp).
  constexpr int64_t kRuns = 24;
  const scalar_t* runs[kRuns];
  scalar_t sums[kRuns];
  for (int64_t k = first; k < last; k += kRuns) {
    const int64_t count = std::min(kRuns, last - k);
    for (int64_t t = 0; t < count; ++t) runs[t] = base + offsets[k + t] * scale;
    dot_runs(plane, runs, count, segments.data(), int64_t(segments.size()), sums);
    for (int64_t t = 0; t < count; ++t) gv[k + t] += sums[t];
  }
}

// Adds to grad_values each tap's sum over the batch, a dot product per sample; parallel over
// the kept taps. A task takes its taps sample by sample, so one sample's input (all its
// channels: 0.9 MB at 64x56x56) is read from L2 by every tap of the task; tap by tap, each
// tap read its planes of all samples from L3 (10 ms against dense's 7.5 on 64x56x56 at 90 %,
// batch 8). A task's taps of one output channel go to add_tap_dots together, so how the
// taps fall into tasks does not change their bits.
template <typename scalar_t>
void grad_values_cpu(const at::Tensor& grad_wide, const at::Tensor& polyphase,
                     const FilterTaps& taps, const SparseFilterGeometry& g,
                     at::Tensor& grad_values) {
  const auto& simd = sparse_filter_simd<scalar_t>();
  const scalar_t* go = grad_wide.data_ptr<scalar_t>();
  const scalar_t* in = polyphase.data_ptr<scalar_t>();
  scalar_t* gv = grad_values.data_ptr<scalar_t>();
  const int64_t len = g.wide_len();
  const int64_t wide_plane = g.out_h * g.phase_w;
  const int64_t sample_block = g.in_channels * g.channel_block();
  const int64_t nnz = grad_values.size(0);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, len * g.batch));
  // One run of the whole plane: rows of one sample's plane are too short to go apart.
  const std::vector<DotSegment> whole{{0, len}};
  at::parallel_for(0, nnz, grain, [&](int64_t begin, int64_t end) {
    for (int64_t n = 0; n < g.batch; ++n) {
      for (int64_t k = begin; k < end;) {
        const int64_t oc = taps.out_channel[k];
        int64_t last = k + 1;
        while (last < end && taps.out_channel[last] == oc) ++last;
        add_tap_dots(simd.dot_runs, go + (n * g.out_channels + oc) * wide_plane,
                     in + n * sample_block, taps.input_offset.get(), 1, k, last, whole, gv);
        k = last;
      }
    }
  });
}

// grad_output in the wide lanes layout: per block of lanes<scalar_t>() samples and per
// channel, out_h rows of phase_w positions of lanes elements, zeros past out_w.
template <typename scalar_t>
struct WideLanes {
  const scalar_t* first = nullptr;  // block 0, channel 0, position 0
  int64_t channel_stride = 0, block_stride = 0;  // elements
  const scalar_t* plane(int64_t block, int64_t channel) const {
    return first + block * block_stride + channel * channel_stride;
  }
};

// grad_output's wide lanes planes inside the lanes layout that the input's gradient laid out
// (direct.h, lanes_layout), where the two agree: a stride-1 convolution padded d (k - 1) / 2
// both ways ('same') pads grad_output by as much for the gradient, so its padded rows are
// phase_w long and a plane's wide run starts at (pad, pad): a row's right halo and the next
// row's left halo are the zeros past out_w. Elsewhere `first` is null.
template <typename scalar_t>
WideLanes<scalar_t> wide_lanes_in(const at::Tensor& layout, const SparseFilterGeometry& g) {
  WideLanes<scalar_t> wide;
  if (!layout.defined() || layout.scalar_type() != c10::CppTypeToScalarType<scalar_t>::value) {
    return wide;
  }
  constexpr int64_t L = lanes<scalar_t>();
  const std::array<int64_t, 2> pad = transposed_padding(g);
  const int64_t phase_h = g.out_h + 2 * pad[0], phase_w = g.out_w + 2 * pad[1];
  if (g.stride_h != 1 || g.stride_w != 1 || pad[0] < 0 || pad[1] < 0 || phase_w != g.phase_w) {
    return wide;
  }
  wide.channel_stride = phase_h * phase_w * L;
  wide.block_stride = g.out_channels * wide.channel_stride;
  TORCH_INTERNAL_ASSERT(layout.numel() >= ceil_div(g.batch, L) * wide.block_stride,
                        "the input gradient's lanes layout is smaller than grad_output");
  wide.first = layout.data_ptr<scalar_t>() + (pad[0] * phase_w + pad[1]) * L;
  return wide;
}

// The bands of positions grad_values_lanes_cpu cuts a wide plane of `wide` positions into:
// at most kBandPixels positions each (down to a quarter of that: their number is rounded up
// to a multiple of 4 where there are several, so that 2 or 4 threads get as many positions
// each; smaller bands let the input channels go in larger chunks).
constexpr int64_t kBandPixels = 256;
inline int64_t band_count(int64_t wide) {
  const int64_t bands = ceil_div(wide, kBandPixels);
  return bands <= 1 ? 1 : ceil_div(bands, 4) * 4;
}

// What the lanes values' gradient derives from the pattern and the geometry, not from the
// values (a TapPlan, sorted_taps.h): each output channel's first tap in each chunk of
// chunk_channels input channels (its row as it is where there is one chunk or its columns are
// not sorted: a hand-made CSR), and each tap's offset in a sample's layout, from one walk.
TapPlan values_gradient_plan(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                             const SparseFilterGeometry& g,
                             const std::vector<int64_t>& column_offset, int64_t chunk_channels) {
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const TapLayout layout{column_offset.data(), g.in_channels_per_group() * g.channel_block(),
                         g.out_channels_per_group()};
  bool sorted = false;
  TapPlan plan = plan_taps(rp, col_idx.data_ptr<int64_t>(), col_idx.size(0), g, chunk_channels,
                           layout, sorted);
  if (plan.chunks == 1 || !sorted) {
    plan.chunks = 1;
    plan.chunk_ptr.resize(g.out_channels * 2);
    for (int64_t oc = 0; oc < g.out_channels; ++oc) {
      plan.chunk_ptr[2 * oc] = rp[oc];
      plan.chunk_ptr[2 * oc + 1] = rp[oc + 1];
    }
  }
  return plan;
}

// grad_values with a block of lanes<scalar_t>() samples in the vector lanes: the block's input in
// the forward's lanes layout (lanes_layout.h: [channel][polyphase position][lane], zeros in the
// padding) and grad_output as [channel][out row][phase_w][lane] (what lies past out_w in a row is
// not read), so a tap's sum over the block is one dot product over the output rows, each a run of
// out_w x lanes elements, 8x longer than one sample's (a 7x7 plane's runs were 61 elements: 1.9
// million dots at 512x7x7, batch 8), at any stride: a tap is a shift in one phase plane. The rows
// go in bands of at most kBandPixels positions and the input channels in chunks, so a chunk's band
// of input stays in L2 while every output channel of the task reads it (a band of all channels is
// 1.3 MB at 512x7x7). Parallel over bands (each band's sums apart, then added in band order) or
// over output channels: each tap's sum is its own, added band by band and block by block in a fixed
// order, whatever the split. Adds to grad_values the sums over the whole blocks of the batch; the
// caller takes the samples after them one at a time (a block of one sample in eight lanes cost 4x
// dense's time at batch 1). grad_output is read from `shared` where the input's gradient left it so
// laid out (wide_lanes_in), else laid out here; the input from `forward_layout` where the forward
// kept its layout (all the batch's blocks, block_elements apart), else laid out here.
template <typename scalar_t>
void grad_values_lanes_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                           const at::Tensor& row_ptr, const at::Tensor& col_idx,
                           const RegroupedPattern* kept, const SparseFilterGeometry& g,
                           const WideLanes<scalar_t>& shared, const scalar_t* forward_layout,
                           at::Tensor& grad_values) {
  constexpr int64_t L = lanes<scalar_t>();
  // Half of L2: measured at 2 threads, batch 8, against one chunk of all channels, the
  // values' gradient took 1.01-1.14x less time on the four 3x3 layers at 90 % and 95 %
  // (most on 512@7 and 256@14, whose band of all channels is 1.3 and 2 MB); 256 and 512 KiB
  // equal, 1 MiB 3-8 % slower, 16-32 KiB (L1) up to 1.5x slower.
  constexpr int64_t kChunkBytes = int64_t(256) << 10;
  const LaneKernels<scalar_t>& kernels = *lane_kernels<scalar_t>();
  const auto& simd = sparse_filter_simd<scalar_t>();
  const bool lay_out_go = shared.first == nullptr;
  const bool lay_out_x = forward_layout == nullptr;
  const at::Tensor x = lay_out_x ? nchw_contiguous(input) : at::Tensor();
  const at::Tensor go = lay_out_go ? nchw_contiguous(grad_output) : at::Tensor();
  const scalar_t* xp = lay_out_x ? x.data_ptr<scalar_t>() : nullptr;
  const scalar_t* gp = lay_out_go ? go.data_ptr<scalar_t>() : nullptr;
  scalar_t* gv = grad_values.data_ptr<scalar_t>();
  const int64_t channel_block = g.channel_block();
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  const int64_t run = g.out_h * g.phase_w;  // positions of a wide output plane
  // Not zeroed (a zeroed buffer cost a pass over all of it: the fill was 2 % of a 64@56
  // training step at 95 %): the input's layout writes every position, its padding included;
  // grad_output's its rows' out_w positions, all that the segments below read.
  const int64_t block_elements = g.in_channels * channel_block * L;
  at::Tensor x_lanes = at::empty({lay_out_x ? block_elements : int64_t(0)}, input.options());
  scalar_t* own_xl = x_lanes.data_ptr<scalar_t>();
  const scalar_t* xl = own_xl;  // this block's input layout
  // Up to the last row's out_w pixels (the wide run): a tap never reads past its plane.
  const int64_t wide = g.wide_len();
  // The input channels in chunks whose band of input (with the taps' reach into it) fits
  // kChunkBytes, each output channel's taps in a chunk found by their sorted columns (one
  // chunk: its row as it is, also for a hand-made CSR with unsorted columns).
  const int64_t bands = band_count(wide);
  const int64_t band = ceil_div(wide, bands);
  const std::array<int64_t, 2> reach = phase_padding(g);
  const int64_t channel_band = std::min(
      channel_block, g.stride_h * g.stride_w * (band + reach[0] * g.phase_w + reach[1]));
  const int64_t chunk_channels = std::clamp<int64_t>(
      kChunkBytes / std::max<int64_t>(1, g.groups * channel_band * L * int64_t(sizeof(scalar_t))),
      1, std::max<int64_t>(1, g.in_channels_per_group()));
  const std::vector<int64_t> column_offset = g.column_offsets();
  std::shared_ptr<const TapPlan> plan;
  if (kept != nullptr) {
    // Everything the plan depends on besides the pattern: the chunks, the groups, the
    // layout. Built from the entry's own copies of the pattern, which equalled row_ptr and
    // col_idx when this call found it (another thread may write those since).
    std::vector<int64_t> key = {int64_t(PlanType::kValuesGradient), chunk_channels,
                                g.out_channels,  g.out_channels_per_group(),
                                g.in_channels_per_group() * g.channel_block(),
                                g.kernel_h * g.kernel_w};
    append_layout_key(key, g, column_offset, 1);
    plan = kept->plans->get<TapPlan>(key, [&] {
      return std::make_shared<const TapPlan>(values_gradient_plan(
          kept->built_from_row_ptr, kept->built_from_col_idx, g, column_offset,
          chunk_channels));
    });
  } else {
    plan = std::make_shared<const TapPlan>(
        values_gradient_plan(row_ptr, col_idx, g, column_offset, chunk_channels));
  }
  const int64_t chunks = plan->chunks;
  const int64_t* chunk_ptr = plan->chunk_ptr.data();
  const int64_t* input_offset = plan->tap_offsets.data.get();
  // The bands: as even as whole vector pairs allow (each starts an even number of positions
  // from the plane's start), their number fixed by the layer alone, so that each tap's sum
  // is added band by band in the same order however the work is split.
  auto band_start = [&](int64_t b) {
    return b == bands ? wide : b * wide / bands / 2 * 2;
  };
  // Split by bands where there are several and their sums are small beside the input's
  // layout, so that a thread lays out and reads the rows of its own bands, as the lanes
  // forward does for grad_output's layout (split by output channels, each thread read all
  // the rows the other wrote: with both split so, a training step of 128x28x28 or 64x56x56
  // at 95 %, batch 8, took 1.1-1.3x the time when the VM places its two vCPUs far apart);
  // else by output channels. (A thread starts on the bands it laid out: OpenMP's fixed split
  // of a parallel_for among its threads, which parallel_tasks starts from; a thread that
  // finishes first takes the other's last band. That affects speed only.)
  const int64_t nnz = grad_values.size(0);
  const bool by_bands = bands > 1 && bands * nnz <= block_elements;
  // grad_output's lanes layout of a whole block, where it is not shared and the split is by
  // output channels (by bands, each band lays out its own rows).
  at::Tensor go_lanes = at::empty(
      {lay_out_go && !by_bands ? g.out_channels * run * L : int64_t(0)}, input.options());
  scalar_t* gl = go_lanes.data_ptr<scalar_t>();
  std::vector<scalar_t> band_sums(by_bands ? bands * nnz : 0);
  // The rows of band b in a plane of `rows` rows: from its first position's row to the next
  // band's, the last band to the plane's end (the phase planes' bottom rows included).
  auto band_rows = [&](int64_t b, int64_t rows) {
    const int64_t first = b == 0 ? 0 : band_start(b) / g.phase_w;
    const int64_t last = b + 1 == bands ? rows : band_start(b + 1) / g.phase_w;
    return std::array<int64_t, 2>{first, std::max(first, std::min(last, rows))};
  };
  // Each band's output pixels as dot_runs' segments, one a row, relative to the band's
  // start: not grad_output's zeros past out_w (a 7x7 plane's run of 61 positions holds 12).
  // Measured against one run a band, batch 8, 2 threads, Intel Xeon VM: the values'
  // gradient of 512@7 at 90 % 0.955x the time, a training step of it 0.976-0.988x, the
  // other 3x3 layers 0.98-1.0x (the runs stream from L2: fewer multiply-adds on the same
  // cache lines save little).
  std::vector<std::vector<DotSegment>> segments(bands);
  for (int64_t b = 0; b < bands; ++b) {
    const int64_t q0 = band_start(b), q1 = band_start(b + 1);
    for (int64_t row = q0 / g.phase_w; row * g.phase_w < q1; ++row) {
      const int64_t first = std::max(q0, row * g.phase_w);
      const int64_t last = std::min(q1, row * g.phase_w + g.out_w);
      if (first < last) segments[b].push_back({(first - q0) * L, (last - first) * L});
    }
  }
  // The input's rows start on 64-byte boundaries where phase_w is even (a position is 32
  // bytes): there the taps at even column offsets load whole cache lines with 64-byte
  // vectors (dot_runs_wide); with odd rows, every other row's loads would cross lines (512@7:
  // 1.07-1.09x the time of 32-byte vectors).
  const auto dot_runs = g.phase_w % 2 == 0 ? simd.dot_runs_wide : simd.dot_runs;
  // This block's own layout: one block at a time, so every block's planes are the same.
  const WideLanes<scalar_t> own{gl, run * L, /*block_stride=*/0};
  for (int64_t n0 = 0; n0 + L <= g.batch; n0 += L) {
    const int64_t block = n0 / L;
    const WideLanes<scalar_t>& go_planes = lay_out_go ? own : shared;
    if (!lay_out_x) xl = forward_layout + block * block_elements;
    auto lay_out_input = [&](int64_t c, int64_t first_row, int64_t last_row) {
      lay_out_lanes_channel(xp + (n0 * g.in_channels + c) * in_plane, g.in_channels * in_plane,
                            g, kernels, own_xl + c * channel_block * L, first_row, last_row,
                            whole_phase_planes(g));
    };
    // Rows [first_row, last_row) of grad_output's channel oc, row r at
    // dst + (r - dst_row) * phase_w * L.
    auto lay_out_grad_output = [&](int64_t oc, int64_t first_row, int64_t last_row,
                                   scalar_t* dst, int64_t dst_row) {
      for (int64_t r = first_row; r < last_row; ++r) {
        scalar_t* row = dst + (r - dst_row) * g.phase_w * L;
        kernels.interleave(gp + (n0 * g.out_channels + oc) * out_plane + r * g.out_w,
                           g.out_channels * out_plane, L, g.out_w, row, L);
      }
    };
    // Adds the dots of band b of output channels [begin, end) to sums, grad_output's
    // position q0 of channel oc at band_go(oc).
    auto add_band = [&](int64_t b, int64_t begin, int64_t end, scalar_t* sums,
                        auto&& band_go) {
      const int64_t q0 = band_start(b);
      for (int64_t j = 0; j < chunks; ++j) {
        for (int64_t oc = begin; oc < end; ++oc) {
          const int64_t* bounds = chunk_ptr + oc * (chunks + 1);
          if (bounds[j] == bounds[j + 1]) continue;
          add_tap_dots(dot_runs, band_go(oc), xl + q0 * L, input_offset, L, bounds[j],
                       bounds[j + 1], segments[b], sums);
        }
      }
    };
    if (by_bands) {
      if (lay_out_x) {
        at::parallel_for(0, bands, 1, [&](int64_t begin, int64_t end) {
          const int64_t first_row = band_rows(begin, g.phase_h)[0];
          const int64_t last_row = band_rows(end - 1, g.phase_h)[1];
          for (int64_t c = 0; c < g.in_channels; ++c) {
            lay_out_input(c, first_row, last_row);
          }
        });
      }
      // Each thread's scratch: grad_output's rows of a band.
      PerThread<AlignedBuffer<scalar_t>> rows_of;
      auto band_task = [&](int64_t b) {
        AlignedBuffer<scalar_t>& rows = rows_of.mine();
        scalar_t* sums = band_sums.data() + b * nnz;
        std::fill_n(sums, nnz, scalar_t(0));
        const int64_t q0 = band_start(b);
        if (!lay_out_go) {
          add_band(b, 0, g.out_channels, sums,
                   [&](int64_t oc) { return shared.plane(block, oc) + q0 * L; });
          return;
        }
        // grad_output's rows of the band, every channel's, laid out just before they are
        // read, while they are in L2.
        const int64_t first = q0 / g.phase_w;
        const int64_t last = std::min(g.out_h, ceil_div(band_start(b + 1), g.phase_w));
        const int64_t channel = (last - first) * g.phase_w * L;
        rows.resize(g.out_channels * channel);
        for (int64_t oc = 0; oc < g.out_channels; ++oc) {
          lay_out_grad_output(oc, first, last, rows.data() + oc * channel, first);
        }
        add_band(b, 0, g.out_channels, sums, [&](int64_t oc) {
          return rows.data() + oc * channel + (q0 - first * g.phase_w) * L;
        });
      };
      parallel_tasks(bands, band_task);
      // Band by band, as the split by output channels adds them.
      at::parallel_for(0, nnz, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t b = 0; b < bands; ++b) {
          const scalar_t* sums = band_sums.data() + b * nnz;
          for (int64_t k = begin; k < end; ++k) gv[k] += sums[k];
        }
      });
      continue;
    }
    // The input's channels (where not given), then grad_output's (where not shared).
    const int64_t x_items = lay_out_x ? g.in_channels : 0;
    const int64_t items = x_items + (lay_out_go ? g.out_channels : 0);
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        if (item < x_items) {
          lay_out_input(item, 0, g.phase_h);
        } else {
          const int64_t oc = item - x_items;
          lay_out_grad_output(oc, 0, g.out_h, gl + oc * run * L, 0);
        }
      }
    });
    auto add_channels = [&](int64_t begin, int64_t end) {
      for (int64_t b = 0; b < bands; ++b) {
        add_band(b, begin, end, gv, [&](int64_t oc) {
          return go_planes.plane(block, oc) + band_start(b) * L;
        });
      }
    };
    // Ranges of a few output channels (about 8 a thread), so that a thread that finishes
    // early takes some of the other's (balanced_parallel.h).
    const int64_t per_task = std::max<int64_t>(1, g.out_channels / (8 * at::get_num_threads()));
    parallel_tasks(ceil_div(g.out_channels, per_task), [&](int64_t task) {
      add_channels(task * per_task, std::min(g.out_channels, (task + 1) * per_task));
    });
  }
}

// Whether the kernel's rows (or columns) fall in every one of the stride's phases: the lanes
// layout writes all phase planes, so a 1x1 stride-2 layer, which reads one plane of four,
// lays out four times what it reads (0.71-0.85x of oneDNN's time on ResNet's downsampling
// layers, batch 16, against 1.0-1.3x for the 3x3 stride-2 ones).
bool reads_every_phase(int64_t kernel, int64_t dilation, int64_t stride) {
  if (kernel < stride) return false;  // fewer rows than phases
  std::vector<bool> read(stride, false);
  for (int64_t k = 0; k < stride; ++k) read[k * dilation % stride] = true;
  return std::all_of(read.begin(), read.end(), [](bool r) { return r; });
}

// Whether the taps fall in every phase plane of the layer's polyphase layout, both ways.
bool reads_every_phase(const SparseFilterGeometry& g) {
  return reads_every_phase(g.kernel_h, g.dilation_h, g.stride_h) &&
         reads_every_phase(g.kernel_w, g.dilation_w, g.stride_w);
}

// Where grad_values_lanes_cpu runs: a CPU with the lane kernels, a whole block, and a kernel
// that reads every phase of the lanes layout; not where the forward reads a 1x1 layer's
// NCHW input in place (pointwise.cpp). There both the input's planes and grad_output's are
// the per-sample kernel's runs as they are (to_polyphase and to_wide copy nothing for NCHW
// tensors; channels-last ones are converted once), so the lanes' two transposes moved data
// for nothing: a training step (forward and both gradients) at batch 8 on the Intel Xeon VM,
// 2 threads, took 0.44-0.70x the time on ResNet-50's 1x1 layers of 56x56 and 28x28 at 90 %
// and 95 %, 0.76-0.95x on 14x14; batch 32 0.63x (64->256 @56) and 0.96x (1024->256 @14).
// (On 7x7 planes, which the pointwise forward leaves to the lanes, the per-sample kernel's
// 49-position runs took 1.08-1.32x.) Such layers now go to oneDNN's gradient above the
// per-sample kernel's density limit (method.h: 22 %) instead of the lanes' 1x1 one (25 %);
// that band was not measured for them.
bool grad_values_lanes_apply(const SparseFilterGeometry& g, at::ScalarType dtype) {
  const bool is_double = dtype == at::kDouble;
  const bool has_kernels = is_double ? lane_kernels<double>() != nullptr
                                     : lane_kernels<float>() != nullptr;
  const int64_t block = is_double ? lanes<double>() : lanes<float>();
  const bool planes_in_place =
      g.stride_h == 1 && g.stride_w == 1 && direct_pointwise_applies(g, dtype);
  return has_kernels && g.batch >= block && reads_every_phase(g) && !planes_in_place;
}

// The forward's lanes layout of the input (_sparse_filter_conv2d_keeping_input_layout), where
// the caller passed one: checked to have the size and type of one, as the autograd kernel
// passes it; nullptr where none was passed.
template <typename scalar_t>
const scalar_t* forward_layout_of(const c10::optional<at::Tensor>& input_layout,
                                  const at::Tensor& input, const SparseFilterGeometry& g) {
  if (!input_layout.has_value() || !input_layout->defined()) return nullptr;
  const at::Tensor& layout = *input_layout;
  constexpr int64_t L = lanes<scalar_t>();
  const int64_t numel = ceil_div(g.batch, L) * g.in_channels * g.channel_block() * L;
  TORCH_CHECK(layout.layout() == at::kStrided && layout.device() == input.device() &&
                  layout.scalar_type() == input.scalar_type() && layout.dim() == 1 &&
                  layout.numel() == numel && layout.is_contiguous() && !layout.is_neg(),
              "_sparse_filter_conv2d_backward: input_layout must be the layout that "
              "_sparse_filter_conv2d_keeping_input_layout returned for this input: a contiguous "
              "1-D ", input.scalar_type(), " tensor of ", numel, " elements on ", input.device(),
              ", got ", layout.scalar_type(), " ", layout.sizes(), " on ", layout.device());
  return layout.data_ptr<scalar_t>();
}

// A dense weight gradient read at the kept taps (duplicates of a tap each get its gradient).
template <typename scalar_t>
at::Tensor values_at_taps(const at::Tensor& grad_weight_any, const at::Tensor& row_ptr,
                          const at::Tensor& col_idx, at::IntArrayRef weight_size) {
  const at::Tensor grad_weight = grad_weight_any.contiguous();
  const int64_t cols = weight_size[1] * weight_size[2] * weight_size[3];
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* ci = col_idx.data_ptr<int64_t>();
  const scalar_t* gw = grad_weight.data_ptr<scalar_t>();
  at::Tensor grad_values = at::empty({col_idx.size(0)}, grad_weight.options());
  scalar_t* gv = grad_values.data_ptr<scalar_t>();
  at::parallel_for(0, weight_size[0], 64, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      for (int64_t k = rp[oc]; k < rp[oc + 1]; ++k) gv[k] = gw[oc * cols + ci[k]];
    }
  });
  return grad_values;
}

// grad_values from oneDNN's dense weight gradient, read at the kept taps: where the sparse
// kernels would be slower (method.h). The weight gradient does not depend on the weight,
// which is passed as zeros of its shape: writing the dense weight from the taps (index_add)
// took 4 ms at 512x7x7, 20 %.
template <typename scalar_t>
at::Tensor dense_grad_values(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& row_ptr, const at::Tensor& col_idx,
                             at::IntArrayRef weight_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const at::Tensor grad_weight = std::get<1>(at::convolution_backward(
      grad_output, input, at::zeros(weight_size, input.options()), c10::nullopt, stride,
      padding, dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, groups,
      {false, true, false}));
  return values_at_taps<scalar_t>(grad_weight, row_ptr, col_idx, weight_size);
}

// The input's gradient phase by phase: each phase of the input's polyphase layout that the
// taps read is a stride-1 convolution of grad_output with the phase's taps (pattern.h,
// phase_filters); its plane is every s-th row and column of the input from the phase's
// first, written in place. The phases no tap reads get no gradient.
at::Tensor grad_input_by_phase(const at::Tensor& grad_output, const at::Tensor& input,
                               const std::vector<TransposedFilter>& filters,
                               const SparseFilterGeometry& g) {
  at::Tensor grad_input =
      empty_activation(input.sizes(), input.options(), at::MemoryFormat::Contiguous);
  if (static_cast<int64_t>(filters.size()) < g.stride_h * g.stride_w) grad_input.zero_();
  // Every phase's convolution reads grad_output with the same padding at stride 1, so where
  // two or more have taps, the first that lays it out in the lanes leaves that layout to the
  // others. (A single one keeps the lanes' own geometry: lanes_geometry aligns odd rows of a
  // layout no one else reads, 0.90-0.95x the time of 1x1 layers on 7x7 planes.)
  const int64_t convolutions =
      std::count_if(filters.begin(), filters.end(),
                    [](const TransposedFilter& f) { return f.col_idx.size(0) > 0; });
  at::Tensor grad_output_lanes;
  for (const TransposedFilter& f : filters) {
    const int64_t phi = f.phase / g.stride_w, psi = f.phase % g.stride_w;
    // The first input row and column in the phase, and their row and column in its plane.
    const int64_t row0 = ((phi - g.pad_h) % g.stride_h + g.stride_h) % g.stride_h;
    const int64_t col0 = ((psi - g.pad_w) % g.stride_w + g.stride_w) % g.stride_w;
    if (row0 >= g.in_h || col0 >= g.in_w) continue;
    at::Tensor plane =
        grad_input.slice(2, row0, g.in_h, g.stride_h).slice(3, col0, g.in_w, g.stride_w);
    if (f.col_idx.size(0) == 0) {
      plane.zero_();
      continue;
    }
    // The phase's filter, cut from a pattern regrouped from the checked CSR, is trusted for
    // this convolution (no check, no entry of its own); its plans are built for the call.
    RegroupedPattern phase_pattern;
    phase_pattern.row_ptr = f.row_ptr;
    phase_pattern.col_idx = f.col_idx;
    phase_pattern.plans = std::make_shared<const DerivedPlans>(0);
    const TrustedPatternScope trusted(&phase_pattern);
    const at::Tensor part = sparse_filter_conv2d_cpu_sharing_layout(
        grad_output, f.row_ptr, f.col_idx, f.values, f.weight_size, c10::nullopt, {1, 1},
        phase_padding(g), {1, 1}, g.groups, "auto",
        convolutions > 1 ? &grad_output_lanes : nullptr);
    const int64_t first_row = (row0 + g.pad_h - phi) / g.stride_h;
    const int64_t first_col = (col0 + g.pad_w - psi) / g.stride_w;
    // The convolution has out_h + alpha_max rows: the plane's last row may be beyond them,
    // and reads no output (zero).
    const int64_t rows = std::min(plane.size(2), part.size(2) - first_row);
    const int64_t cols = std::min(plane.size(3), part.size(3) - first_col);
    if (rows < plane.size(2) || cols < plane.size(3)) plane.zero_();
    if (rows > 0 && cols > 0) {
      plane.narrow(2, 0, rows).narrow(3, 0, cols)
          .copy_(part.narrow(2, first_row, rows).narrow(3, first_col, cols));
    }
  }
  return grad_input;
}

// The output rows (or columns) [first, first + count) of a 1x1 convolution whose input row,
// row * stride - pad, lies inside the input's `in` rows: the others read padding only.
struct OutputRange {
  int64_t first, count;
};
OutputRange outputs_inside(int64_t out, int64_t in, int64_t stride, int64_t pad) {
  const int64_t first = ceil_div(pad, stride);
  const int64_t last = std::min(out - 1, (in - 1 + pad) / stride);
  return {first, std::max<int64_t>(0, last - first + 1)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask, const c10::optional<at::Tensor>& input_layout);

// The values' gradient of a strided 1x1 convolution: the stride-1 one of the pixels it reads
// (every stride-th row and column, as the forward picks them, direct.cpp) against
// grad_output's rows and columns that read them. It replaces a polyphase layout of the whole
// input of which one phase plane was read: ResNet-18's downsampling shortcuts at batch 16,
// 90 %, 2 threads, Intel Xeon VM, 1.3-4.1 -> 0.77, 1.3-2.5 -> 0.61, 1.1 -> 0.53 ms. It also
// keeps these layers off oneDNN's strided 1x1 weight gradient, which writes past its
// workspace for channels-last float32 input of fewer input channels than its channel block
// (torch 2.11; oneDNN issue 6035: glibc's "corrupted size vs. prev_size").
at::Tensor grad_values_on_picked_pixels(const at::Tensor& grad_output, const at::Tensor& input,
                                        const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                        const at::Tensor& values, at::IntArrayRef weight_size,
                                        const SparseFilterGeometry& g) {
  const OutputRange rows = outputs_inside(g.out_h, g.in_h, g.stride_h, g.pad_h);
  const OutputRange cols = outputs_inside(g.out_w, g.in_w, g.stride_w, g.pad_w);
  if (rows.count == 0 || cols.count == 0) return at::zeros_like(values);
  const at::Tensor picked =
      pick_pixels(input, rows.first * g.stride_h - g.pad_h, rows.count, g.stride_h,
                  cols.first * g.stride_w - g.pad_w, cols.count, g.stride_w);
  const at::Tensor read =
      grad_output.narrow(2, rows.first, rows.count).narrow(3, cols.first, cols.count);
  return std::get<1>(sparse_filter_conv2d_backward_cpu(
      read, picked, row_ptr, col_idx, values, weight_size, {1, 1}, {0, 0}, {1, 1}, g.groups,
      {false, true, false}, c10::nullopt));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask, const c10::optional<at::Tensor>& input_layout) {
  const SparseFilterGeometry g = check_sparse_filter_backward_args(
      grad_output, input, row_ptr, col_idx, values, weight_size, stride, padding, dilation,
      groups);

  at::Tensor grad_input, grad_values, grad_bias;
  if (output_mask[2]) grad_bias = grad_output.sum({0, 2, 3});
  if (!output_mask[0] && !output_mask[1]) return {grad_input, grad_values, grad_bias};

  at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), val = values.contiguous();
  const bool empty = g.batch == 0 || g.out_h * g.out_w == 0;
  if (output_mask[1] && !empty && g.kernel_h == 1 && g.kernel_w == 1 &&
      (g.stride_h != 1 || g.stride_w != 1)) {
    grad_values = grad_values_on_picked_pixels(grad_output, input, rp, ci, val, weight_size, g);
    output_mask[1] = false;
    if (!output_mask[0]) return {grad_input, grad_values, grad_bias};
  }
  // The input's gradient: one convolution with the transposed filter at stride 1 (where the
  // padding is within the kernel's reach), else one per phase of the polyphase layout.
  const bool transposed = output_mask[0] && !empty && g.stride_h == 1 && g.stride_w == 1 &&
                          transposed_padding(g)[0] >= 0 && transposed_padding(g)[1] >= 0 &&
                          g.in_h > 0 && g.in_w > 0;
  const bool strided_input = output_mask[0] && !empty && !transposed;
  // (values_gradient_reads_lanes_layout, below, repeats this choice for the forward.)
  const bool lanes_values = output_mask[1] && grad_values_lanes_apply(g, input.scalar_type());
  const bool dense_values =
      output_mask[1] && !empty && !grad_values_sparse_pays(g, ci.size(0), lanes_values);
  // Where the values' gradient is oneDNN's and the kernel's taps read every stride phase, the
  // input's gradient is oneDNN's too, both from one call: a convolution per phase does not
  // pay at the densities where the values' kernels do not (measured in method.h).
  const bool dense_both = strided_input && dense_values && reads_every_phase(g);
  const bool by_phase = strided_input && !dense_both;
  // What the sparse values' kernels read: the taps' offsets; the per-sample one also
  // grad_output in wide layout (all of it where the lanes take no sample).
  const bool sparse_values = output_mask[1] && !dense_values;
  const bool polyphase_kernels = sparse_values && !lanes_values;
  // Whole blocks of samples in the lanes (which build their own plan of the taps), the
  // samples after them one at a time by the per-sample kernel (grad_values_cpu), which walks
  // the taps' output channels.
  const int64_t block = input.scalar_type() == at::kDouble ? lanes<double>() : lanes<float>();
  const int64_t blocked = lanes_values ? g.batch / block * block : 0;
  const FilterTaps taps = sparse_values && blocked < g.batch
                              ? make_filter_taps(rp, ci, g)
                              : FilterTaps();
  // The transposed pattern that the input's gradient finds by this call's row_ptr and col_idx,
  // where it runs: the values' gradient keeps its plan with it.
  std::shared_ptr<const RegroupedPattern> kept_pattern;
  at::Tensor grad_wide = empty || !polyphase_kernels ? at::Tensor() : to_wide(grad_output, g);
  // The input's gradient leaves grad_output's lanes layout here where the values' lanes
  // kernel can read it (wide_lanes_in).
  at::Tensor grad_output_lanes;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_conv2d_backward_cpu", [&] {
    if (dense_both) {
      at::Tensor grad_weight;
      std::tie(grad_input, grad_weight, std::ignore) = at::convolution_backward(
          grad_output, input, dense_weight_cpu(rp, ci, val, weight_size), c10::nullopt,
          {g.stride_h, g.stride_w}, padding, dilation, /*transposed=*/false,
          /*output_padding=*/{0, 0}, groups, {true, true, false});
      grad_input = grad_input.contiguous();
      grad_values = values_at_taps<scalar_t>(grad_weight, rp, ci, weight_size);
      return;
    }
    if (transposed) {
      // The convolution of grad_output with the transposed filter, on the forward's kernels
      // ('auto' picks among them as for any layer of this shape and density).
      const TransposedFilter t = transposed_filter(rp, ci, val, g);
      kept_pattern = t.pattern;
      const TrustedPatternScope trusted(t.pattern.get());
      // NCHW whatever grad_output's format, as the fake kernel says (_fake.py).
      grad_input = nchw_contiguous(sparse_filter_conv2d_cpu_sharing_layout(
          grad_output, t.row_ptr, t.col_idx, t.values, t.weight_size, c10::nullopt, {1, 1},
          transposed_padding(g), {g.dilation_h, g.dilation_w}, g.groups, "auto",
          lanes_values ? &grad_output_lanes : nullptr));
    } else if (by_phase) {
      const std::vector<TransposedFilter> filters = phase_filters(rp, ci, val, g);
      if (static_cast<int64_t>(filters.size()) <= kMaxPhaseConvolutions) {
        grad_input = grad_input_by_phase(grad_output, input, filters, g);
      } else {
        grad_input = std::get<0>(at::convolution_backward(
            grad_output, input, dense_weight_cpu(rp, ci, val, weight_size), c10::nullopt,
            {g.stride_h, g.stride_w}, padding, dilation, /*transposed=*/false,
            /*output_padding=*/{0, 0}, groups, {true, false, false})).contiguous();
      }
    } else if (output_mask[0]) {  // no output: nothing reached the input
      grad_input = at::zeros_like(input, at::MemoryFormat::Contiguous);
    }
    if (dense_values) {
      // g's stride: capped where one output row or column makes it irrelevant, as the
      // forward's 'dense' passes it (oneDNN rejects strides of 2^31 and more).
      grad_values = dense_grad_values<scalar_t>(grad_output, input, rp, ci, weight_size,
                                                {g.stride_h, g.stride_w}, padding, dilation,
                                                groups);
    } else if (output_mask[1]) {
      grad_values = at::zeros_like(val);
      if (!empty && blocked > 0) {
        grad_values_lanes_cpu<scalar_t>(grad_output, input, rp, ci, kept_pattern.get(), g,
                                        wide_lanes_in<scalar_t>(grad_output_lanes, g),
                                        forward_layout_of<scalar_t>(input_layout, input, g),
                                        grad_values);
      }
      if (!empty && blocked < g.batch) {
        SparseFilterGeometry rest = g;
        rest.batch = g.batch - blocked;
        grad_values_cpu<scalar_t>(
            blocked > 0 ? to_wide(grad_output.narrow(0, blocked, rest.batch), rest) : grad_wide,
            to_polyphase(input.narrow(0, blocked, rest.batch), rest), taps, rest, grad_values);
      }
    }
  });
  return {grad_input, grad_values, grad_bias};
}

}  // namespace

bool values_gradient_reads_lanes_layout(const SparseFilterGeometry& g, at::ScalarType dtype,
                                        int64_t nnz) {
  // As sparse_filter_conv2d_backward_cpu picks the values' kernel (its lanes_values and
  // dense_values: change both together; float16 and bfloat16 run it on float32 copies; 1x1
  // strided layers, which read one phase, have their own).
  return (dtype == at::kFloat || dtype == at::kDouble) && grad_values_lanes_apply(g, dtype) &&
         grad_values_sparse_pays(g, nnz, /*lanes=*/true);
}

}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("_sparse_filter_conv2d_backward",
         computed_in_float32<&sparse_filter_conv2d_backward_cpu>());
}
