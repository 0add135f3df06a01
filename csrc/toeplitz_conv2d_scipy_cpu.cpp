// _toeplitz_conv2d_scipy on CPU: toeplitz_conv2d's direct method writing its output the way
// scipy.sparse stores a CSR matrix, for compat.Toeplitz_convolution2d.
//
// scipy's own index arrays (int32 or int64) come in as they are; the output has int32 indices
// when its size allows (scipy's default, which it would otherwise reach by scanning and
// copying int64 arrays), and leaves out exact zeros (as sparse_convolution does), checked in
// the fill pass instead of by a scan afterwards. Slots that were not filled (exact zeros, or
// upper-bound slots of dense outputs) leave gaps that one in-place pass closes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "output_buffer_cache.h"
#include "toeplitz_direct_cpu.h"
#include "toeplitz_geometry.h"

namespace torch_sparse_conv {
namespace {

// int32 indices when every index and row pointer fits whatever the values: the output's
// width and an upper bound of its entries (B * H_out*W_out, and every input entry times the
// kernel's taps). Shapes alone decide, so the fake kernel can say the same.
bool fits_int32(const ToeplitzGeometry& g, int64_t input_entries) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t pixels = g.out_h * g.out_w;
  if (pixels > kMax) return false;
  const int64_t taps = g.kernel_h * g.kernel_w;
  const bool by_input = input_entries <= kMax / taps;
  const bool by_frame = g.batch <= kMax / std::max<int64_t>(pixels, 1);
  return by_input || by_frame;
}

// Whether images are expected to cover nearly all of the frame: on average their entries
// times the kernel's taps reach twice the frame's size (about 86 % coverage for random
// entries). Then the upper bound min(entries * taps, H_out*W_out) is nearly exact and a count
// pass would cost more than closing the gaps. Measured on sparse_convolution's grid (2
// threads): at ratio 2.5 and above upper bounds win by 1.2-1.5x; at ratio 1.2 (about 70 %
// coverage) they lose, by up to 4x where the output is tens of megabytes.
bool dense_outputs(const ToeplitzGeometry& g, int64_t input_entries) {
  const int64_t pixels = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  return g.batch > 0 && input_entries / g.batch >= (2 * pixels + taps - 1) / taps;
}

// Moves image n's kept entries from offsets[n] down to kept_offsets[n] (never later) in
// place, in increasing n, so nothing is overwritten before it is moved; returns the arrays cut
// to the kept entries. In place because fresh arrays of this size cost more in page faults
// than the copy itself.
template <typename index_t, typename scalar_t>
std::pair<at::Tensor, at::Tensor> close_gaps(const at::Tensor& cols, const at::Tensor& vals,
                                             const int64_t* offsets,
                                             const int64_t* kept_offsets, int64_t batch) {
  index_t* c = cols.data_ptr<index_t>();
  scalar_t* v = vals.data_ptr<scalar_t>();
  for (int64_t n = 0; n < batch; ++n) {
    const int64_t count = kept_offsets[n + 1] - kept_offsets[n];
    if (kept_offsets[n] == offsets[n] || count == 0) continue;
    std::memmove(c + kept_offsets[n], c + offsets[n], count * sizeof(index_t));
    std::memmove(v + kept_offsets[n], v + offsets[n], count * sizeof(scalar_t));
  }
  return {cols.narrow(0, 0, kept_offsets[batch]), vals.narrow(0, 0, kept_offsets[batch])};
}

template <typename index_t, typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> convolve(const at::Tensor& crow,
                                                        const at::Tensor& col,
                                                        const at::Tensor& values,
                                                        const at::Tensor& kernel,
                                                        const ToeplitzGeometry& g) {
  const int64_t* r = crow.data_ptr<int64_t>();
  const int64_t* c = col.data_ptr<int64_t>();
  const scalar_t* v = values.data_ptr<scalar_t>();
  const scalar_t* k = kernel.data_ptr<scalar_t>();
  // Plain vectors, not tensors: at batch 1 each tensor allocation is a visible part of a call.
  std::vector<int64_t> offsets(g.batch + 1, 0), kept(g.batch + 1, 0);
  int64_t* off = offsets.data();
  int64_t* kp = kept.data();
  const int64_t pixels = g.out_h * g.out_w, taps = g.kernel_h * g.kernel_w;
  if (dense_outputs(g, col.size(0))) {
    // Slots of min(entries * taps, H_out*W_out) need no count pass; with outputs this dense
    // they are nearly exact, and the gaps they leave are closed below.
    for (int64_t n = 0; n < g.batch; ++n) {
      const int64_t entries = r[n + 1] - r[n];
      off[n + 1] = off[n] + (entries >= pixels / taps + 1 ? pixels : entries * taps);
    }
  } else {
    for_image_ranges(g.batch, col.size(0), g, [&](int64_t begin, int64_t end) {
      direct_count_pass(r, c, v, k, g, begin, end, off + 1);
    });
    for (int64_t n = 0; n < g.batch; ++n) off[n + 1] += off[n];
  }
  constexpr auto index_type = c10::CppTypeToScalarType<index_t>::value;
  at::Tensor out_col = empty_output(off[g.batch], index_type);
  at::Tensor out_values = empty_output(off[g.batch], values.scalar_type());
  index_t* dst_col = out_col.data_ptr<index_t>();
  scalar_t* dst_val = out_values.data_ptr<scalar_t>();
  for_image_ranges(g.batch, col.size(0), g, [&](int64_t begin, int64_t end) {
    direct_fill_pass_dropping_zeros(r, c, v, k, g, begin, end, off, dst_col, dst_val, kp + 1);
  });
  for (int64_t n = 0; n < g.batch; ++n) kp[n + 1] += kp[n];
  if (kp[g.batch] != off[g.batch]) {
    std::tie(out_col, out_values) =
        close_gaps<index_t, scalar_t>(out_col, out_values, off, kp, g.batch);
  }
  at::Tensor out_crow = at::empty({g.batch + 1}, col.options().dtype(index_type));
  std::copy(kept.begin(), kept.end(), out_crow.data_ptr<index_t>());
  return {out_crow, out_col, out_values};
}

// An index array as contiguous int64: a plain loop rather than Tensor::to, whose dispatch
// costs more than the copy at batch 1.
at::Tensor as_int64(const at::Tensor& indices) {
  if (indices.scalar_type() == at::kLong) return indices.contiguous();
  const at::Tensor source = indices.contiguous();
  at::Tensor wide = at::empty(source.sizes(), source.options().dtype(at::kLong));
  const int32_t* from = source.data_ptr<int32_t>();
  std::copy(from, from + source.numel(), wide.data_ptr<int64_t>());
  return wide;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_scipy_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode) {
  for (const at::Tensor* t : {&crow, &col}) {
    TORCH_CHECK(t->scalar_type() == at::kInt || t->scalar_type() == at::kLong,
                "_toeplitz_conv2d_scipy: x's index arrays must be int32 or int64, got ",
                t->scalar_type());
  }
  // The kernels read int64 indices; the input is the small side of the work.
  const at::Tensor cr = as_int64(crow), cc = as_int64(col);
  const ToeplitzGeometry g = check_toeplitz_args(cr, cc, values, kernel, image_shape, mode);
  const at::Tensor cv = values.contiguous(), ck = kernel.contiguous();
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_conv2d_scipy_cpu", [&] {
    out = fits_int32(g, cc.size(0)) ? convolve<int32_t, scalar_t>(cr, cc, cv, ck, g)
                                    : convolve<int64_t, scalar_t>(cr, cc, cv, ck, g);
  });
  return out;
}

}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  m.impl("_toeplitz_conv2d_scipy", &torch_sparse_conv::toeplitz_conv2d_scipy_cpu);
}
