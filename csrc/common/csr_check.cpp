#include "csrc/common/csr_check.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <string>

#ifdef TSC_WITH_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#endif

#include "csrc/common/cpu_isa.h"

namespace torch_sparse_conv {
namespace {

// One thread's share of the pass: branch-free, so each variant vectorises for its
// instruction set. Negative values wrap to huge unsigned ones.
inline __attribute__((always_inline)) bool all_below_body(const int64_t* v, int64_t begin,
                                                          int64_t end, int64_t bound) {
  uint64_t bad = 0;
  for (int64_t k = begin; k < end; ++k) bad |= static_cast<uint64_t>(v[k]) >= uint64_t(bound);
  return bad == 0;
}

inline __attribute__((always_inline)) bool non_decreasing_body(const int64_t* v, int64_t begin,
                                                               int64_t end) {
  uint64_t bad = 0;
  for (int64_t k = begin + 1; k < end; ++k) bad |= static_cast<uint64_t>(v[k] < v[k - 1]);
  return bad == 0;
}

#define TSC_DEFINE_CHECKS(ISA, TARGET)                                                         \
  TARGET bool all_below_##ISA(const int64_t* v, int64_t begin, int64_t end, int64_t bound) {  \
    return all_below_body(v, begin, end, bound);                                               \
  }                                                                                            \
  TARGET bool non_decreasing_##ISA(const int64_t* v, int64_t begin, int64_t end) {             \
    return non_decreasing_body(v, begin, end);                                                 \
  }
TSC_DEFINE_CHECKS(avx512, TSC_TARGET_AVX512)
TSC_DEFINE_CHECKS(avx2, TSC_TARGET_AVX2)
TSC_DEFINE_CHECKS(baseline, )
#undef TSC_DEFINE_CHECKS

constexpr int64_t kCheckGrain = int64_t(1) << 16;

bool all_below(const int64_t* v, int64_t n, int64_t bound) {
  const auto serial = isa_variant(&all_below_avx512, &all_below_avx2, &all_below_baseline);
  return at::parallel_reduce(
      0, n, kCheckGrain, true,
      [&](int64_t begin, int64_t end, bool ok) { return ok && serial(v, begin, end, bound); },
      [](bool a, bool b) { return a && b; });
}

bool all_non_decreasing(const int64_t* v, int64_t n) {
  const auto serial =
      isa_variant(&non_decreasing_avx512, &non_decreasing_avx2, &non_decreasing_baseline);
  // Chunks overlap by one element, so every adjacent pair is compared.
  return at::parallel_reduce(
      0, n, kCheckGrain, true,
      [&](int64_t begin, int64_t end, bool ok) {
        return ok && serial(v, std::max<int64_t>(begin - 1, 0), end);
      },
      [](bool a, bool b) { return a && b; });
}

// The messages, one wording for every operator: the rule, then the entry that breaks it by
// its argument's name and index (on a GPU, where no index is at hand, the facts).
void fail_first_row_pointer(int64_t value, const CsrNames& n) {
  TORCH_CHECK(false, n.op, ": ", n.owner, "row pointers must start at 0, got ", n.row_pointers,
              "[0] = ", value);
}

// `last`: the index of the last row pointer, or -1 where it is not known (on a GPU).
void fail_last_row_pointer(int64_t last, int64_t value, int64_t nnz, const CsrNames& n) {
  TORCH_CHECK(false, n.op, ": ", n.owner, "row pointers must end at the number of entries in ",
              n.columns, " (", nnz, "), got last row pointer ", n.row_pointers, "[", last,
              "] = ", value);
}

}  // namespace

void check_row_pointers(const int64_t* r, int64_t rows, int64_t nnz, const CsrNames& n) {
  if (r[0] == 0 && r[rows] == nnz && all_non_decreasing(r, rows + 1)) return;
  if (r[0] != 0) fail_first_row_pointer(r[0], n);
  for (int64_t i = 0; i < rows; ++i) {
    TORCH_CHECK(r[i + 1] >= r[i], n.op, ": ", n.owner, "row pointers must be non-decreasing, "
                "but ", n.row_pointers, "[", i + 1, "] = ", r[i + 1], " < ", n.row_pointers, "[",
                i, "] = ", r[i]);
  }
  fail_last_row_pointer(rows, r[rows], nnz, n);
}

void check_csr_arrays(const int64_t* r, const int64_t* c, int64_t rows, int64_t nnz,
                      int64_t columns, const CsrNames& n) {
  check_row_pointers(r, rows, nnz, n);
  if (all_below(c, nnz, columns)) return;
  for (int64_t k = 0; k < nnz; ++k) {
    TORCH_CHECK(c[k] >= 0 && c[k] < columns, n.op, ": ", n.owner,
                "column indices must lie in [0, ", columns, ") for ", n.column_bound, " = ",
                columns, ", but ", n.columns, "[", k, "] = ", c[k], " is out of range");
  }
}

namespace {

// Whether work on the current CUDA stream is being captured into a CUDA graph, where a copy
// to the host (and so a host-side check) cannot happen.
bool capturing_cuda_graph(const at::Device& device) {
#ifdef TSC_WITH_CUDA
  return device.is_cuda() && c10::cuda::currentStreamCaptureStatusMayInitCtx() !=
                                 c10::cuda::CaptureStatus::None;
#else
  (void)device;
  return false;
#endif
}

// check_csr_facts' rules as a device-side assertion, without a host wait: part of the captured
// graph, it runs on every replay, before the kernels that read the indices, and a broken rule
// stops the device (the context's error is sticky: no later kernel runs).
void assert_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                          const CsrNames& n) {
  const at::Tensor f = pending_csr_facts(crow, col);
  const int64_t nnz = col.size(0);
  at::Tensor valid = f[0].eq(0) & f[1].eq(nnz) & f[2].eq(1);
  if (nnz > 0) valid = valid & f[3].ge(0) & f[4].lt(columns);
  const std::string message = std::string(n.op) + ": " + n.owner + n.row_pointers + " and " +
                              n.columns + " must form a valid CSR matrix with columns in [0, " +
                              std::to_string(columns) + ") (checked on the device: a CUDA " +
                              "graph is being captured)";
  at::_assert_async(valid, message);
}

}  // namespace

void check_csr(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
               const CsrNames& names) {
  if (!crow.device().is_cpu()) {
    if (capturing_cuda_graph(crow.device())) {
      assert_csr_on_device(crow, col, columns, names);
    } else {
      check_csr_facts(csr_facts_on_device(crow, col), col.size(0), columns, names);
    }
    return;
  }
  const at::Tensor r = crow.contiguous(), c = col.contiguous();
  check_csr_arrays(r.data_ptr<int64_t>(), c.data_ptr<int64_t>(), r.size(0) - 1, c.size(0),
                   columns, names);
}

// ------------------------------------------------------------------ on a GPU, in batches

at::Tensor pending_csr_facts(const at::Tensor& crow, const at::Tensor& col) {
  const int64_t rows = crow.size(0) - 1, nnz = col.size(0);
  const at::Tensor monotone =
      rows > 0 ? at::all(crow.narrow(0, 1, rows) >= crow.narrow(0, 0, rows))
               : at::ones({}, crow.options().dtype(at::kBool));
  const at::Tensor lowest = nnz > 0 ? col.min() : at::zeros({}, col.options());
  const at::Tensor highest = nnz > 0 ? col.max() : at::zeros({}, col.options());
  return at::stack({crow[0], crow[rows], monotone.to(at::kLong), lowest, highest});
}

CsrDeviceFacts csr_facts_from(const int64_t* f) { return {f[0], f[1], f[2] == 1, f[3], f[4]}; }

CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col) {
  return csr_facts_from(fetch_to_host({pending_csr_facts(crow, col)}).data());
}

void check_csr_facts(const CsrDeviceFacts& f, int64_t nnz, int64_t columns, const CsrNames& n) {
  if (f.first_row_pointer != 0) fail_first_row_pointer(f.first_row_pointer, n);
  TORCH_CHECK(f.row_pointers_non_decreasing, n.op, ": ", n.owner,
              "row pointers must be non-decreasing (", n.row_pointers, ")");
  // The row count is not among the facts: "[-1]" names the last row pointer.
  if (f.last_row_pointer != nnz) fail_last_row_pointer(-1, f.last_row_pointer, nnz, n);
  TORCH_CHECK(nnz == 0 || (f.lowest_column >= 0 && f.highest_column < columns), n.op, ": ",
              n.owner, "column indices must lie in [0, ", columns, ") for ", n.column_bound,
              " = ", columns, ", got ", n.columns, " in [", f.lowest_column, ", ",
              f.highest_column, "]");
}

std::vector<int64_t> fetch_to_host(const std::vector<at::Tensor>& pending) {
  std::vector<at::Tensor> flat;
  flat.reserve(pending.size());
  for (const at::Tensor& t : pending) flat.push_back(t.reshape(-1).to(at::kLong));
  const at::Tensor host = at::cat(flat).cpu();
  const int64_t* values = host.data_ptr<int64_t>();
  return std::vector<int64_t>(values, values + host.numel());
}

at::Tensor pending_columns_ascend(const at::Tensor& crow, const at::Tensor& col) {
  const int64_t nnz = col.size(0);
  if (nnz < 2) return at::ones({1}, col.options().dtype(at::kLong));
  // Entry i may be smaller than entry i - 1 only where a row begins.
  at::Tensor row_begins = at::zeros({nnz + 1}, col.options().dtype(at::kBool));
  row_begins.index_fill_(0, crow.clamp(0, nnz), true);
  const at::Tensor ascending = (col.narrow(0, 1, nnz - 1) > col.narrow(0, 0, nnz - 1)) |
                               row_begins.narrow(0, 1, nnz - 1);
  return at::all(ascending).to(at::kLong).view({1});
}

at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz) {
  const at::Tensor counts = crow.narrow(0, 1, rows) - crow.narrow(0, 0, rows);
  return at::repeat_interleave(at::arange(rows, crow.options()), counts, 0, nnz);
}

}  // namespace torch_sparse_conv
