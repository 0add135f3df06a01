// The one validator of a CSR matrix's contents, used by every operator of both families for
// every CSR argument it reads: row pointers that start at 0, never decrease and end at the
// number of stored entries; column indices inside the matrix. The messages name the
// operator's own arguments (CsrNames).
//
// On the CPU the check is a vectorised, threaded pass over the arrays; the first bad entry is
// searched, to name it, only when the pass fails. On a GPU it computes a few facts with
// reductions and copies them to the host at once; an operator that checks several matrices
// gathers their pending facts and copies them together (fetch_to_host), since every copy to
// the host waits for the GPU. While a CUDA graph is being captured, where no copy to the host
// can happen, check_csr asserts the same rules on the device instead (torch's _assert_async):
// the graph then checks the indices on every replay, before any kernel reads them.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace torch_sparse_conv {

// How an operator names a CSR matrix in its messages, e.g. {"toeplitz_conv2d", "x's ",
// "crow", "col", "H*W"} gives "toeplitz_conv2d: x's row pointers must be non-decreasing, but
// crow[3] = 2 < crow[2] = 5".
struct CsrNames {
  const char* op;            // the operator
  const char* owner;         // what holds the matrix, with its trailing space, or ""
  const char* row_pointers;  // the row pointers' argument name
  const char* columns;       // the columns' argument name
  const char* column_bound;  // what the column count stands for, e.g. "H*W"
};

// A CSR matrix on any device: crow (rows + 1) and col, int64 and 1-D (shapes are the
// operator's checks); every column in [0, columns).
void check_csr(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
               const CsrNames& names);

// The same on CPU arrays. check_row_pointers alone serves matrices whose columns the kernel
// checks where it reads them.
void check_csr_arrays(const int64_t* crow, const int64_t* col, int64_t rows, int64_t nnz,
                      int64_t columns, const CsrNames& names);
void check_row_pointers(const int64_t* crow, int64_t rows, int64_t nnz, const CsrNames& names);

// ------------------------------------------------------------------ on a GPU, in batches

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
// pending_csr_facts, fetched.
CsrDeviceFacts csr_facts_on_device(const at::Tensor& crow, const at::Tensor& col);

// The errors for a CSR matrix's facts (check_csr's rules, without the index of the bad entry).
void check_csr_facts(const CsrDeviceFacts& facts, int64_t nnz, int64_t columns,
                     const CsrNames& names);

// One copy to the host of every value of `pending` (int64 tensors of any shape, one device),
// flattened and concatenated in order.
std::vector<int64_t> fetch_to_host(const std::vector<at::Tensor>& pending);

// 1 (int64, shape [1]) when the columns of every row ascend strictly, else 0, without
// waiting. Safe on unchecked row pointers (they are clamped), but meaningful only once
// pending_csr_facts has proven them valid.
at::Tensor pending_columns_ascend(const at::Tensor& crow, const at::Tensor& col);

// The row of every stored entry (int64, on crow's device, no host wait), from row pointers
// already checked.
at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz);

}  // namespace torch_sparse_conv
