// sparse_filter_conv2d forward on CPU: the 'direct', 'unfold' and 'dense' methods and the
// 'auto' rule that picks among them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "sparse_filter_conv2d_method.h"
#include "sparse_filter_geometry.h"
#include "sparse_filter_simd_cpu.h"

namespace torch_sparse_conv {
namespace {

// Copies wide positions [begin, begin + count) of one output channel (see
// sparse_filter_geometry.h) into its dense plane, row segment by row segment, dropping the
// padding columns.
template <typename scalar_t>
void wide_to_plane(const scalar_t* wide, int64_t begin, int64_t count,
                   const SparseFilterGeometry& g, scalar_t* plane) {
  const int64_t end = begin + count;
  for (int64_t q = begin; q < end;) {
    const int64_t oh = q / g.phase_w, ow = q % g.phase_w;
    const int64_t row_end = std::min(end, (oh + 1) * g.phase_w);
    const int64_t valid_end = std::min(row_end, oh * g.phase_w + g.out_w);
    if (q < valid_end) std::copy(wide + (q - begin), wide + (valid_end - begin), plane + oh * g.out_w + ow);
    q = row_end;
  }
}

// direct: each (sample, output channel) plane is a sum of shifted input runs, one per kept
// tap, read in place from the polyphase input. Work is proportional to the kept taps.
// Cache blocking: a task computes one block of wide positions for every output channel,
// visiting the input channels in chunks whose rows fit in L1, and accumulating the
// chunks' partial sums in a small per-task buffer. Each thread lays out the sample it works
// on in a buffer of its own that lives across calls: no allocation, and the sample is
// still in cache when the block loop reads it.
template <typename scalar_t>
void direct_forward(const at::Tensor& input, const at::Tensor& row_ptr,
                    const at::Tensor& col_idx, const at::Tensor& values,
                    const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& g,
                    at::Tensor& output) {
  constexpr int64_t kBlock = 512;
  constexpr int64_t kL1Bytes = 32 * 1024;
  constexpr int64_t lanes = vector_lanes<scalar_t>();
  const auto& simd = sparse_filter_simd<scalar_t>();
  const at::Tensor input_c = input.contiguous();
  const scalar_t* in = input_c.data_ptr<scalar_t>();
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* ci = col_idx.data_ptr<int64_t>();
  const scalar_t* val = values.data_ptr<scalar_t>();
  at::Tensor bias_c = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* out = output.data_ptr<scalar_t>();
  const int64_t sample_block = g.in_channels * g.channel_block();
  const int64_t plane = g.out_h * g.out_w;
  const int64_t len = g.wide_len();
  const int64_t block = std::min(len, kBlock);
  const int64_t blocks = (len + block - 1) / block;
  const int64_t block_vectors = (block + lanes - 1) / lanes;

  // Input channels per chunk: the rows a block reads from one channel span the block plus
  // the kernel's reach, in each of the stride_h * stride_w phase planes.
  const int64_t reach = ((g.kernel_h - 1) * g.dilation_h / g.stride_h + 1) * g.phase_w;
  const int64_t channel_bytes =
      g.stride_h * g.stride_w * std::min(g.phase_h * g.phase_w, block + reach) * sizeof(scalar_t);
  const int64_t chunk_channels = std::max<int64_t>(1, kL1Bytes / channel_bytes);
  const int64_t cin_g = g.in_channels_per_group();
  const int64_t chunks = (cin_g + chunk_channels - 1) / chunk_channels;
  const int64_t taps_per_channel = g.kernel_h * g.kernel_w;

  // Taps of each output channel sorted by input channel, with the boundaries of each chunk.
  const int64_t nnz = col_idx.size(0);
  std::vector<int64_t> order(nnz);
  std::vector<int64_t> offsets(nnz);
  std::vector<scalar_t> sorted_values(nnz);
  std::vector<int64_t> chunk_ptr(g.out_channels * (chunks + 1));
  const int64_t group_block = cin_g * g.channel_block();
  for (int64_t oc = 0; oc < g.out_channels; ++oc) {
    const int64_t group = oc / g.out_channels_per_group();
    std::iota(order.begin() + rp[oc], order.begin() + rp[oc + 1], rp[oc]);
    std::stable_sort(order.begin() + rp[oc], order.begin() + rp[oc + 1],
                     [&](int64_t x, int64_t y) { return ci[x] < ci[y]; });
    int64_t* bounds = chunk_ptr.data() + oc * (chunks + 1);
    int64_t k = rp[oc];
    for (int64_t j = 0; j <= chunks; ++j) {
      while (k < rp[oc + 1] && ci[order[k]] / taps_per_channel < j * chunk_channels) ++k;
      bounds[j] = k;
    }
    bounds[chunks] = rp[oc + 1];
    for (int64_t k2 = rp[oc]; k2 < rp[oc + 1]; ++k2) {
      offsets[k2] = group * group_block + g.tap_offset(ci[order[k2]]);
      sorted_values[k2] = val[order[k2]];
    }
  }

  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> partial(g.out_channels * block_vectors * lanes);
    // Vector loads may overhang the last run by up to one vector: slack after the sample.
    thread_local std::vector<scalar_t> laid_out;
    laid_out.resize(sample_block + lanes);
    int64_t laid_out_sample = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / blocks;
      const int64_t p0 = (item % blocks) * block;
      const int64_t count = std::min(block, len - p0);
      const int64_t nvec = (count + lanes - 1) / lanes;
      if (n != laid_out_sample) {
        fill_polyphase_sample(in + n * g.in_channels * g.in_h * g.in_w, g, laid_out.data());
        laid_out_sample = n;
      }
      const scalar_t* sample = laid_out.data() + p0;
      for (int64_t j = 0; j < chunks; ++j) {
        for (int64_t oc = 0; oc < g.out_channels; ++oc) {
          const int64_t* bounds = chunk_ptr.data() + oc * (chunks + 1);
          const int64_t k0 = bounds[j], k1 = bounds[j + 1];
          if (j > 0 && k0 == k1) continue;
          simd.conv_block(sample, offsets.data() + k0, sorted_values.data() + k0, k1 - k0,
                          /*accumulate=*/j > 0, b ? b[oc] : scalar_t(0),
                          partial.data() + oc * block_vectors * lanes, nvec);
        }
      }
      for (int64_t oc = 0; oc < g.out_channels; ++oc) {
        wide_to_plane(partial.data() + oc * block_vectors * lanes, p0, count, g,
                      out + (n * g.out_channels + oc) * plane);
      }
    }
  });
}

// unfold: the seed recipe done right. Per group, gather only the input rows of the taps that
// some output channel keeps (the union), then one dense GEMM with the compacted weight.
// The batch is processed in chunks so the gathered buffer stays under a fixed budget.
template <typename scalar_t>
void unfold_forward(const at::Tensor& polyphase, const at::Tensor& row_ptr,
                    const at::Tensor& col_idx, const at::Tensor& values,
                    const c10::optional<at::Tensor>& bias, const SparseFilterGeometry& g,
                    at::Tensor& output) {
  constexpr int64_t kWorkspaceElements = int64_t(1) << 23;  // 32 MiB of float32
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int64_t* ci = col_idx.data_ptr<int64_t>();
  const scalar_t* val = values.data_ptr<scalar_t>();
  const scalar_t* in = polyphase.data_ptr<scalar_t>();
  const int64_t ocpg = g.out_channels_per_group();
  const int64_t taps = g.taps_per_filter();
  const int64_t len = g.wide_len();
  const int64_t sample_block = g.in_channels * g.channel_block();
  const int64_t group_block = g.in_channels_per_group() * g.channel_block();
  const int64_t plane = g.out_h * g.out_w;
  at::Tensor bias_c = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  const scalar_t* b = bias_c.defined() ? bias_c.data_ptr<scalar_t>() : nullptr;
  scalar_t* out = output.data_ptr<scalar_t>();

  for (int64_t group = 0; group < g.groups; ++group) {
    // Union of kept taps in this group, and the compacted (ocpg x union) weight.
    std::vector<int64_t> slot(taps, -1);
    std::vector<int64_t> kept;
    for (int64_t k = rp[group * ocpg]; k < rp[(group + 1) * ocpg]; ++k) {
      if (slot[ci[k]] < 0) {
        slot[ci[k]] = 0;
        kept.push_back(ci[k]);
      }
    }
    std::sort(kept.begin(), kept.end());
    const int64_t width = static_cast<int64_t>(kept.size());
    for (int64_t u = 0; u < width; ++u) slot[kept[u]] = u;
    at::Tensor compact = at::zeros({ocpg, width}, values.options());
    scalar_t* w = compact.data_ptr<scalar_t>();
    for (int64_t oc = 0; oc < ocpg; ++oc) {
      const int64_t row = group * ocpg + oc;
      for (int64_t k = rp[row]; k < rp[row + 1]; ++k) w[oc * width + slot[ci[k]]] += val[k];
    }
    std::vector<int64_t> offsets(width);
    for (int64_t u = 0; u < width; ++u) offsets[u] = group * group_block + g.tap_offset(kept[u]);

    const int64_t chunk = std::max<int64_t>(
        1, std::min<int64_t>(g.batch, kWorkspaceElements / std::max<int64_t>(1, width * len)));
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t nc = std::min(chunk, g.batch - n0);
      at::Tensor result;
      if (width > 0) {
        at::Tensor columns = at::empty({width, nc * len}, values.options());
        scalar_t* cols = columns.data_ptr<scalar_t>();
        at::parallel_for(0, width * nc, 16, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t u = item / nc, n = item % nc;
            const scalar_t* src = in + (n0 + n) * sample_block + offsets[u];
            std::copy(src, src + len, cols + u * nc * len + n * len);
          }
        });
        result = at::mm(compact, columns);  // (ocpg, nc * len), wide layout per sample
      }
      const scalar_t* res = width > 0 ? result.data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, nc * ocpg, 16, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
          const int64_t n = item / ocpg, oc = item % ocpg;
          const int64_t channel = group * ocpg + oc;
          scalar_t* dst = out + ((n0 + n) * g.out_channels + channel) * plane;
          const scalar_t init = b ? b[channel] : scalar_t(0);
          for (int64_t oh = 0; oh < g.out_h; ++oh) {
            for (int64_t ow = 0; ow < g.out_w; ++ow) {
              dst[oh * g.out_w + ow] =
                  init + (res ? res[oc * nc * len + n * len + oh * g.phase_w + ow] : scalar_t(0));
            }
          }
        }
      });
    }
  }
}

at::Tensor sparse_filter_conv2d_cpu(const at::Tensor& input, const at::Tensor& row_ptr,
                                    const at::Tensor& col_idx, const at::Tensor& values,
                                    at::IntArrayRef weight_size,
                                    const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups, c10::string_view method_name) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size, bias, stride,
                                      padding, dilation, groups, /*check_csr_contents=*/true);
  SparseFilterMethod method = parse_sparse_filter_method(method_name);
  at::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous(), val = values.contiguous();
  if (method == SparseFilterMethod::Auto) method = choose_sparse_filter_method_cpu(rp, ci, g);

  if (method == SparseFilterMethod::Dense) {
    at::Tensor weight = unpack_sparse_filter_dense(rp, ci, val, weight_size);
    return at::conv2d(input, weight, bias, stride, padding, dilation, groups)
        .contiguous(at::MemoryFormat::Contiguous);
  }
  at::Tensor output =
      at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_conv2d_cpu", [&] {
    if (method == SparseFilterMethod::Direct) {
      direct_forward<scalar_t>(input, rp, ci, val, bias, g, output);
    } else {
      unfold_forward<scalar_t>(to_polyphase(input, g), rp, ci, val, bias, g, output);
    }
  });
  return output;
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  m.impl("sparse_filter_conv2d", &torch_sparse_conv::sparse_filter_conv2d_cpu);
}
