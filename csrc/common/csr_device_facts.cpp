#include "csrc/common/csr_device_facts.h"

namespace torch_sparse_conv {

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

std::vector<int64_t> fetch_to_host(const std::vector<at::Tensor>& pending) {
  std::vector<at::Tensor> flat;
  flat.reserve(pending.size());
  for (const at::Tensor& t : pending) flat.push_back(t.reshape(-1).to(at::kLong));
  const at::Tensor host = at::cat(flat).cpu();
  const int64_t* values = host.data_ptr<int64_t>();
  return std::vector<int64_t>(values, values + host.numel());
}

void check_csr_facts(const CsrDeviceFacts& f, int64_t nnz, int64_t columns, const char* what) {
  TORCH_CHECK(f.first_row_pointer == 0, what, "'s row pointers must start at 0, got ",
              f.first_row_pointer);
  TORCH_CHECK(f.row_pointers_non_decreasing, what, "'s row pointers must be non-decreasing");
  TORCH_CHECK(f.last_row_pointer == nnz, what, "'s last row pointer (", f.last_row_pointer,
              ") must equal its number of stored entries (", nnz, ")");
  TORCH_CHECK(nnz == 0 || (f.lowest_column >= 0 && f.highest_column < columns), what,
              "'s column indices must lie in [0, ", columns, "), got range [", f.lowest_column,
              ", ", f.highest_column, "]");
}

at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz) {
  const at::Tensor counts = crow.narrow(0, 1, rows) - crow.narrow(0, 0, rows);
  return at::repeat_interleave(at::arange(rows, crow.options()), counts, 0, nnz);
}

CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col) {
  return csr_facts_from(fetch_to_host({pending_csr_facts(crow, col)}).data());
}

void check_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                         const char* what) {
  check_csr_facts(csr_facts_on_device(crow, col), col.size(0), columns, what);
}

}  // namespace torch_sparse_conv
