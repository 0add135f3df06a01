// Shared host pieces of the sparse-input (Toeplitz) CUDA operators: device-side CSR checks,
// and what toeplitz_matrix_cuda.cu provides to toeplitz_conv2d_cuda.cu. The kernels' frame
// geometry is in toeplitz_frame.cuh.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "csr_device_facts.h"
#include "toeplitz_frame.cuh"
#include "toeplitz_geometry.h"

namespace torch_sparse_conv {

// The errors for a CSR matrix's facts (csr_device_facts.h): row pointers from 0 to nnz,
// non-decreasing; columns in [0, columns). `what` names the matrix.
void check_csr_facts(const CsrDeviceFacts& facts, int64_t nnz, int64_t columns,
                     const char* what);

// Device-side CSR checks (row pointers from 0 to nnz, non-decreasing; columns in
// [0, columns)) with one copy of five numbers to the host. `what` names the matrix.
void check_csr_on_device(const at::Tensor& crow, const at::Tensor& col, int64_t columns,
                         const char* what);

// The row of every stored entry, from the row pointers (no host sync).
at::Tensor row_of_entries(const at::Tensor& crow, int64_t rows, int64_t nnz);

// T, the doubly-block-Toeplitz matrix of `kernel` (float32/float64, contiguous, on the GPU):
// CSR (H*W, H_out*W_out) with sorted int64 columns, the same layout as the CPU build.
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_toeplitz_matrix_cuda(
    const at::Tensor& kernel, const ToeplitzGeometry& g);

// X @ T by cuSPARSE SpGEMM (torch's CSR matmul), as CSR with sorted int64 columns.
std::tuple<at::Tensor, at::Tensor, at::Tensor> multiply_by_toeplitz_cuda(
    const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
    const at::Tensor& t_crow, const at::Tensor& t_col, const at::Tensor& t_values,
    const ToeplitzGeometry& g);

}  // namespace torch_sparse_conv
