// out = X @ T on CPU (sparse x sparse), and the toeplitz_conv2d_precomputed operator.
//
// Per image (a row of X, in parallel): the T rows its entries select are merged into one
// output row. Each T row is sorted, so its first and last columns bound it, and the image's
// output lies within the span between the smallest first and the largest last column. When
// that span is small next to the number of products (images on small frames, or dense
// ones), the products are summed in a dense buffer over the span and emitted in order;
// otherwise (a few entries spread over a large frame) the (column, value) products are
// sorted and merged. Either way the scratch memory is bounded by the image's own products,
// never by the frame. A count pass (patterns only), a prefix sum and a fill pass write the
// exact-size CSR.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "csrc/common/reduced_precision.h"
#include "csrc/toeplitz/cpu/precomputed.h"

namespace torch_sparse_conv {
namespace {

// Dense buffer when span <= factor * products + slack (the same bound as the direct method's
// row buffer: sorting loses until the span is much wider than the work).
constexpr int64_t kDenseSpanFactor = 8;
constexpr int64_t kDenseSpanSlack = 4096;

// What the count pass found wrong with T, if anything (reported after the pass).
enum TError : int { kTValid = 0, kTBadRowPointers = 1, kTBadColumns = 2 };

template <typename scalar_t>
struct Csr {
  const int64_t* crow;
  const int64_t* col;
  const scalar_t* val;
};

template <typename scalar_t>
struct Scratch {
  std::vector<scalar_t> acc;
  std::vector<char> touched;
  std::vector<std::pair<int64_t, scalar_t>> pairs;
};

// Index of the last nonzero flag, or -1.
inline int64_t last_touched(const char* touched, int64_t size) {
  int64_t last = size - 1;
  while (last >= 0 && !touched[last]) --last;
  return last;
}

// Image [begin, end) of X times T. The count pass (kFill false) validates the T rows it reads
// and returns the image's number of output entries (0 and *error set if T is invalid); the
// fill pass, reading only what the count pass accepted, writes them sorted to cols / vals.
template <bool kFill, typename scalar_t>
int64_t multiply_image(const Csr<scalar_t>& x, int64_t begin, int64_t end,
                       const Csr<scalar_t>& t, int64_t t_nnz, int64_t out_cols,
                       Scratch<scalar_t>& s, int64_t* cols, scalar_t* vals, int* error) {
  int64_t lo = INT64_MAX, hi = INT64_MIN, products = 0;
  for (int64_t e = begin; e < end; ++e) {
    const int64_t row_begin = t.crow[x.col[e]], row_end = t.crow[x.col[e] + 1];
    if (!kFill && !(0 <= row_begin && row_begin <= row_end && row_end <= t_nnz)) {
      *error = kTBadRowPointers;
      return 0;
    }
    if (row_begin == row_end) continue;
    if (!kFill) {
      for (int64_t j = row_begin + 1; j < row_end; ++j) {
        if (t.col[j] <= t.col[j - 1]) {
          *error = kTBadColumns;
          return 0;
        }
      }
    }
    lo = std::min(lo, t.col[row_begin]);
    hi = std::max(hi, t.col[row_end - 1]);
    products += row_end - row_begin;
  }
  if (products == 0) return 0;
  if (!kFill && !(0 <= lo && hi < out_cols)) {
    *error = kTBadColumns;
    return 0;
  }
  const int64_t span = hi - lo + 1;
  if (span <= kDenseSpanFactor * products + kDenseSpanSlack) {
    s.touched.assign(span, 0);
    if (kFill) s.acc.assign(span, scalar_t(0));
    for (int64_t e = begin; e < end; ++e) {
      const int64_t row_begin = t.crow[x.col[e]], row_end = t.crow[x.col[e] + 1];
      const scalar_t v = x.val[e];
      for (int64_t j = row_begin; j < row_end; ++j) {
        const int64_t at = t.col[j] - lo;
        s.touched[at] = 1;
        if (kFill) s.acc[at] += v * t.val[j];
      }
    }
    if (!kFill) return std::count(s.touched.begin(), s.touched.end(), 1);
    // Branch-free compaction up to the last touched position: every store lands inside the
    // image's own slot (before the last touched one, fewer entries than the slot holds).
    const int64_t last = last_touched(s.touched.data(), span);
    int64_t count = 0;
    for (int64_t i = 0; i <= last; ++i) {
      cols[count] = lo + i;
      vals[count] = s.acc[i];
      count += s.touched[i];
    }
    return count;
  }
  s.pairs.clear();
  for (int64_t e = begin; e < end; ++e) {
    const scalar_t v = x.val[e];
    for (int64_t j = t.crow[x.col[e]]; j < t.crow[x.col[e] + 1]; ++j) {
      s.pairs.emplace_back(t.col[j], kFill ? v * t.val[j] : scalar_t(0));
    }
  }
  // Stable: products of one column are summed in X's entry order, as in the dense buffer.
  std::stable_sort(s.pairs.begin(), s.pairs.end(),
                   [](const auto& p, const auto& q) { return p.first < q.first; });
  int64_t count = 0;
  for (size_t i = 0; i < s.pairs.size(); ++count) {
    const int64_t c = s.pairs[i].first;
    scalar_t sum = 0;
    for (; i < s.pairs.size() && s.pairs[i].first == c; ++i) sum += s.pairs[i].second;
    if (kFill) {
      cols[count] = c;
      vals[count] = sum;
    }
  }
  return count;
}

const char* describe(int error) {
  return error == kTBadRowPointers
             ? "T's row pointers must be non-decreasing and within [0, nnz(T)]"
             : "T's columns must be strictly increasing within a row and lie in [0, H_out*W_out)";
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_times_toeplitz_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    int64_t out_cols) {
  const int64_t batch = crow.size(0) - 1, t_nnz = t_col.size(0);
  const at::Tensor cr = crow.contiguous(), cc = col.contiguous(), cv = values.contiguous();
  const at::Tensor tr = t_crow.contiguous(), tc = t_col.contiguous(), tv = t_values.contiguous();
  at::Tensor out_crow = at::zeros({batch + 1}, crow.options());
  at::Tensor out_col, out_values;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "toeplitz_spgemm_cpu", [&] {
    const Csr<scalar_t> x{cr.data_ptr<int64_t>(), cc.data_ptr<int64_t>(),
                          cv.data_ptr<scalar_t>()};
    const Csr<scalar_t> t{tr.data_ptr<int64_t>(), tc.data_ptr<int64_t>(),
                          tv.data_ptr<scalar_t>()};
    int64_t* oc = out_crow.data_ptr<int64_t>();
    std::atomic<int> error{kTValid};
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> s;
      for (int64_t n = begin; n < end; ++n) {
        int image_error = kTValid;
        oc[n + 1] = multiply_image<false, scalar_t>(x, x.crow[n], x.crow[n + 1], t, t_nnz,
                                                    out_cols, s, nullptr, nullptr,
                                                    &image_error);
        if (image_error != kTValid) error = image_error;
      }
    });
    TORCH_CHECK(error == kTValid, "toeplitz_conv2d_precomputed: invalid T: ", describe(error));
    for (int64_t n = 0; n < batch; ++n) oc[n + 1] += oc[n];
    out_col = at::empty({oc[batch]}, col.options());
    out_values = at::empty({oc[batch]}, values.options());
    int64_t* dst_col = out_col.data_ptr<int64_t>();
    scalar_t* dst_val = out_values.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> s;
      for (int64_t n = begin; n < end; ++n) {
        multiply_image<true, scalar_t>(x, x.crow[n], x.crow[n + 1], t, t_nnz, out_cols, s,
                                       dst_col + oc[n], dst_val + oc[n], nullptr);
      }
    });
  });
  return {out_crow, out_col, out_values};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> toeplitz_conv2d_precomputed_cpu(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& kernel, at::IntArrayRef image_shape, c10::string_view mode,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values) {
  const ToeplitzGeometry g = check_toeplitz_args(crow, col, values, kernel, image_shape, mode);
  check_toeplitz_matrix_args(t_crow, t_col, t_values, values, g);
  // A kept T is the caller's: its row pointers are checked whole, O(H*W), on every call (a
  // T whose rows are each in range may still not be a CSR matrix); its columns where read.
  const at::Tensor tr = t_crow.contiguous();
  check_row_pointers(tr.data_ptr<int64_t>(), g.in_h * g.in_w, t_col.size(0),
                     kept_matrix_csr_names());
  return sparse_times_toeplitz_cpu(crow, col, values, tr, t_col, t_values, g.out_h * g.out_w);
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CPU, m) {
  using namespace torch_sparse_conv;  // NOLINT: the kernels and their wrapper
  m.impl("toeplitz_conv2d_precomputed", computed_in_float32<&toeplitz_conv2d_precomputed_cpu>());
}
