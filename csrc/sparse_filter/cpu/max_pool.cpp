// The CPU kernel of _max_pool2d_nchw (csrc/sparse_filter/ops.h): nn.MaxPool2d's values on
// NCHW float32/float64 tensors in one pass, for ChannelsLastMaxPool2d
// (torch_sparse_conv/sparse_filter/pooling.py). torch's NCHW CPU pool takes one window at a
// time (25 ms on ResNet-50's stem pool at batch 8); its channels-last one is fast, but the two
// layout copies around it cost more than the pool (8.9 ms of a sparsified ResNet-50's 130 ms
// forward at batch 8, 1.3 of 29 ms at batch 1, Intel Xeon VM, 2 threads).
//
// A plane at a time: each input row's maximum over every output column's window (the row
// split into its stride's phases first, so that a window's j-th column is one contiguous
// run over the output columns), then each output row's maximum over its window's rows. Both
// steps take a window's values in torch's order (rows top down, columns left to right) with
// torch's rule, v replaces the maximum m where v > m or v is NaN, starting from -inf: the
// first of equal maxima (-0.0 and 0.0 are equal), the last NaN. Taking each row's result
// first and then the rows in order gives the same element as one scan of the window in that
// order, so the output has nn.MaxPool2d's bits. Padding is -inf, which that rule never takes
// over a value, as if the position were skipped.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "csrc/common/arithmetic.h"
#include "csrc/common/cpu_isa.h"
#include "csrc/common/vector.h"

namespace torch_sparse_conv {
namespace {

// m = the window maximum so far; v the next value in torch's order.
template <typename scalar_t>
TSC_INLINE scalar_t max_step(scalar_t m, scalar_t v) {
  return (v > m || v != v) ? v : m;
}

// torch's pooling_output_shape: with ceil_mode the last window may run past the input
// (not past its padding) but must start inside it or in the left padding.
int64_t pooled_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                    bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -ceil_div(-span, stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

struct PoolGeometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t in_h, in_w, out_h, out_w;
  // A row with its padding as far as the windows reach, position t at input column t - pw,
  // split into sw phases of phase_len: position t in phase t % sw at t / sw.
  int64_t phase_len() const { return ceil_div((out_w - 1) * sw + (kw - 1) * dw + 1, sw); }
};

// One plane. The caller's scratch: rows_max (in_h x out_w), phases (sw x phase_len), filled
// with -inf before the first plane (the positions that fall in the padding are the same in
// every plane: no plane writes them).
// SW: the column stride where fixed at compile time (1 and 2, so that the phases' copies are
// vector loads and shuffles), 0 for any.
template <typename scalar_t, int SW>
TSC_INLINE void pool_plane_impl(const scalar_t* in, scalar_t* out, const PoolGeometry& p,
                                scalar_t* phases, scalar_t* rows_max) {
  constexpr scalar_t kLowest = -std::numeric_limits<scalar_t>::infinity();
  const int64_t phase_len = p.phase_len();
  for (int64_t ih = 0; ih < p.in_h; ++ih) {
    const scalar_t* row = in + ih * p.in_w;
    for (int64_t phase = 0; phase < p.sw; ++phase) {
      // Position i * sw + phase of the padded row is input column i * sw + phase - pw: the
      // i in [first, last) fall inside the row (the others keep their -inf).
      const int64_t offset = phase - p.pw;
      const int64_t first = offset >= 0 ? 0 : ceil_div(-offset, p.sw);
      const int64_t last =
          std::min(phase_len, offset >= p.in_w ? 0 : ceil_div(p.in_w - offset, p.sw));
      scalar_t* __restrict__ dst = phases + phase * phase_len;
      const scalar_t* __restrict__ src = row;
      if (SW == 0) {
        for (int64_t i = first; i < last; ++i) dst[i] = src[i * p.sw + offset];
      } else {
        for (int64_t i = first; i < last; ++i) dst[i] = src[i * SW + offset];
      }
    }
    scalar_t* m = rows_max + ih * p.out_w;
    std::fill(m, m + p.out_w, kLowest);
    for (int64_t j = 0; j < p.kw; ++j) {
      const int64_t q = j * p.dw;  // window column j of output column ow: ow * sw + q
      const scalar_t* __restrict__ v = phases + q % p.sw * phase_len + q / p.sw;
      scalar_t* __restrict__ mm = m;
      for (int64_t ow = 0; ow < p.out_w; ++ow) mm[ow] = max_step(mm[ow], v[ow]);
    }
  }
  for (int64_t oh = 0; oh < p.out_h; ++oh) {
    scalar_t* o = out + oh * p.out_w;
    std::fill(o, o + p.out_w, kLowest);
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ih = oh * p.sh - p.ph + i * p.dh;
      if (ih < 0 || ih >= p.in_h) continue;
      const scalar_t* __restrict__ m = rows_max + ih * p.out_w;
      scalar_t* __restrict__ oo = o;
      for (int64_t ow = 0; ow < p.out_w; ++ow) oo[ow] = max_step(oo[ow], m[ow]);
    }
  }
}

// pool_plane_impl compiled per instruction set (csrc/common/cpu_isa.h): the loops over the
// output columns are vectorised by the compiler, 16 lanes a step with AVX-512 (the NaN test
// and the comparison two mask instructions) against 4 with the baseline's SSE2 (2.1x the
// time on ResNet-50's stem pool at batch 8, 1 thread).
template <typename scalar_t>
using PoolPlane = void (*)(const scalar_t*, scalar_t*, const PoolGeometry&, scalar_t*,
                           scalar_t*);
#define TSC_DEFINE_POOL_PLANE(NAME, TARGET)                                                  \
  template <typename scalar_t, int SW>                                                      \
  TARGET void pool_plane_##NAME(const scalar_t* in, scalar_t* out, const PoolGeometry& p,   \
                                scalar_t* phases, scalar_t* rows_max) {                    \
    pool_plane_impl<scalar_t, SW>(in, out, p, phases, rows_max);                            \
  }
TSC_DEFINE_POOL_PLANE(avx512, TSC_TARGET_AVX512)
TSC_DEFINE_POOL_PLANE(avx2, TSC_TARGET_AVX2)
TSC_DEFINE_POOL_PLANE(baseline, )
#undef TSC_DEFINE_POOL_PLANE

template <typename scalar_t, int SW>
PoolPlane<scalar_t> pool_plane() {
  return isa_variant<PoolPlane<scalar_t>>(&pool_plane_avx512<scalar_t, SW>,
                                          &pool_plane_avx2<scalar_t, SW>,
                                          &pool_plane_baseline<scalar_t, SW>);
}

void check_pair(at::IntArrayRef values, const char* name, int64_t minimum) {
  TORCH_CHECK(values.size() == 2, "_max_pool2d_nchw: ", name, " must have 2 values, got ",
              values.size());
  TORCH_CHECK(values[0] >= minimum && values[1] >= minimum, "_max_pool2d_nchw: ", name,
              " must be at least ", minimum, ", got ", values);
}

at::Tensor max_pool2d_nchw_cpu(const at::Tensor& input, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK(input.dim() == 4, "_max_pool2d_nchw: input must be 4-D (N, C, H, W), got ",
              input.dim(), "-D");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "_max_pool2d_nchw: input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(input.layout() == at::kStrided, "_max_pool2d_nchw: input must be strided");
  check_pair(kernel_size, "kernel_size", 1);
  check_pair(stride, "stride", 1);
  check_pair(padding, "padding", 0);
  check_pair(dilation, "dilation", 1);
  // torch's two limits (pool2d_shape_check): half the kernel, and half its reach.
  for (int d = 0; d < 2; ++d) {
    TORCH_CHECK(padding[d] <= kernel_size[d] / 2 &&
                    padding[d] <= ((kernel_size[d] - 1) * dilation[d] + 1) / 2,
                "_max_pool2d_nchw: padding must be at most half of the kernel size and of "
                "the effective kernel size, got padding ", padding, ", kernel_size ",
                kernel_size, ", dilation ", dilation);
  }
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0,
              "_max_pool2d_nchw: input must have non-zero channels, height and width (the "
              "batch may be empty), got ", input.sizes());
  PoolGeometry p{kernel_size[0], kernel_size[1], stride[0],   stride[1],
                 padding[0],     padding[1],     dilation[0], dilation[1],
                 input.size(2),  input.size(3),  0,           0};
  p.out_h = pooled_size(p.in_h, p.kh, p.sh, p.ph, p.dh, ceil_mode);
  p.out_w = pooled_size(p.in_w, p.kw, p.sw, p.pw, p.dw, ceil_mode);
  TORCH_CHECK(p.out_h > 0 && p.out_w > 0, "_max_pool2d_nchw: the output of input ",
              input.sizes(), " would be empty (", p.out_h, "x", p.out_w, ")");
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty({input.size(0), input.size(1), p.out_h, p.out_w}, input.options());
  const int64_t planes = input.size(0) * input.size(1);
  if (planes == 0) return out;
  const int64_t in_plane = p.in_h * p.in_w, out_plane = p.out_h * p.out_w;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "_max_pool2d_nchw", [&] {
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    // A few planes a task at least: one small plane is less work than a task's start.
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, in_plane));
    const PoolPlane<scalar_t> pool = p.sw == 1   ? pool_plane<scalar_t, 1>()
                                     : p.sw == 2 ? pool_plane<scalar_t, 2>()
                                                 : pool_plane<scalar_t, 0>();
    at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> phases(p.sw * p.phase_len(),
                                   -std::numeric_limits<scalar_t>::infinity());
      std::vector<scalar_t> rows_max(p.in_h * p.out_w);
      for (int64_t plane = begin; plane < end; ++plane) {
        pool(in + plane * in_plane, o + plane * out_plane, p, phases.data(), rows_max.data());
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  m.impl("_max_pool2d_nchw", &max_pool2d_nchw_cpu);
}

}  // namespace torch_sparse_conv
