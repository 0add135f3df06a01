// The facts a CSR validation needs, computed on the tensors' device (a GPU) with reductions
// and one copy of a few numbers to the host. Each operator words its own errors from them.
// An operator that validates several things gathers their pending facts and copies them in
// one go (fetch_to_host): every host copy waits for the GPU.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace torch_sparse_conv {

struct CsrDeviceFacts {
  int64_t first_row_pointer, last_row_pointer;
  bool row_pointers_non_decreasing;
  int64_t lowest_column, highest_column;  // 0 and 0 when there are no entries
};

// The facts as kCsrFacts int64 values on the tensors' device, without waiting for them.
constexpr int64_t kCsrFacts = 5;
at::Tensor pending_csr_facts(const at::Tensor& crow, const at::Tensor& col);
// Facts from kCsrFacts values that pending_csr_facts computed, copied to the host.
CsrDeviceFacts csr_facts_from(const int64_t* values);

// One copy to the host of every value of `pending` (int64 tensors of any shape, one device),
// flattened and concatenated in order.
std::vector<int64_t> fetch_to_host(const std::vector<at::Tensor>& pending);

// 1 (int64, shape [1]) when the columns of every row ascend strictly, else 0, without
// waiting. Safe on unchecked row pointers (they are clamped), but meaningful only once
// pending_csr_facts has proven them valid.
at::Tensor pending_columns_ascend(const at::Tensor& crow, const at::Tensor& col);

// The errors for a CSR matrix's facts: row pointers from 0 to nnz, non-decreasing; columns in
// [0, columns). `what` names the matrix in the messages.
void check_csr_facts(const CsrDeviceFacts& facts, int64_t nnz, int64_t columns,
                     const char* what);

// The row of every stored entry (int64, on crow's device, no host wait), from row pointers
// already checked.
at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz);

// pending_csr_facts, fetched.
CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col);

// csr_facts_on_device, then check_csr_facts.
void check_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                         const char* what);

}  // namespace torch_sparse_conv
