// 'spmm' sparse-filter conv2d on CUDA: the unfold formulation out = W_sparse · unfold(x),
// with cuSPARSE SpMM for the product, and the kept values' gradient by cuSPARSE SDDMM
// (grad_out · unfold(x)^T sampled at the weight's pattern).
//
// The weight of all groups is one block-diagonal CSR matrix (C_out x C_in*kH*kW), sorted and
// with 32-bit indices (cuSPARSE's best-supported form), built once per call for all chunks. The
// unfolded input of a chunk of images is at most kUnfoldBytes, so memory is bounded by the
// work of one chunk, never by the batch.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <cusparse.h>

#include <limits>

#include "cuda/sparse_filter/methods.cuh"

namespace torch_sparse_conv {
namespace {

constexpr int64_t kUnfoldBytes = int64_t(256) << 20;

#define TSC_CUSPARSE_CHECK(EXPR)                                                         \
  do {                                                                                    \
    const cusparseStatus_t status = (EXPR);                                               \
    TORCH_CHECK(status == CUSPARSE_STATUS_SUCCESS, "sparse_filter_conv2d (spmm): ", #EXPR, \
                " failed: ", cusparseGetErrorString(status));                            \
  } while (0)

cudaDataType cuda_type_of(at::ScalarType type) {
  TORCH_CHECK(type == at::kFloat || type == at::kDouble,
              "sparse_filter_conv2d: method 'spmm' supports float32 and float64, got ", type,
              "; use 'direct' or 'dense' for half precision");
  return type == at::kFloat ? CUDA_R_32F : CUDA_R_64F;
}

// Sorted block-diagonal CSR with int32 indices: {row_ptr, col, order of the original taps}.
std::vector<at::Tensor> build_global_csr(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                         const SparseFilterGeometry& g) {
  const int64_t nnz = col_idx.size(0), k_group = g.taps_per_filter();
  TORCH_CHECK(nnz < std::numeric_limits<int>::max() &&
                  g.in_channels * g.kernel_h * g.kernel_w < std::numeric_limits<int>::max(),
              "sparse_filter_conv2d: method 'spmm' needs fewer than 2^31 kept taps and unfolded "
              "rows; use 'direct'");
  const at::Tensor row_of = row_of_entries(row_ptr, g.out_channels, nnz);
  const at::Tensor global_col =
      at::div(row_of, g.out_channels_per_group(), "floor") * k_group + col_idx;
  const at::Tensor key = row_of * (g.groups * k_group) + global_col;
  const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
  return {row_ptr.contiguous().to(at::kInt), global_col.index_select(0, order).to(at::kInt), order};
}

struct CsrDescriptor {
  cusparseSpMatDescr_t descr = nullptr;
  CsrDescriptor(const SparseFilterGeometry& g, const std::vector<at::Tensor>& csr,
                const at::Tensor& values) {
    TSC_CUSPARSE_CHECK(cusparseCreateCsr(
        &descr, g.out_channels, g.in_channels * g.kernel_h * g.kernel_w, csr[1].numel(),
        csr[0].data_ptr<int>(), csr[1].data_ptr<int>(), values.data_ptr(), CUSPARSE_INDEX_32I,
        CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, cuda_type_of(values.scalar_type())));
  }
  ~CsrDescriptor() { cusparseDestroySpMat(descr); }
};

struct DenseDescriptor {
  cusparseDnMatDescr_t descr = nullptr;
  explicit DenseDescriptor(const at::Tensor& m) {  // a contiguous row-major matrix
    TSC_CUSPARSE_CHECK(cusparseCreateDnMat(&descr, m.size(0), m.size(1), m.size(1),
                                           m.data_ptr(), cuda_type_of(m.scalar_type()),
                                           CUSPARSE_ORDER_ROW));
  }
  ~DenseDescriptor() { cusparseDestroyDnMat(descr); }
};

// Images per chunk so that one chunk's unfolded input stays within kUnfoldBytes.
int64_t images_per_chunk(const SparseFilterGeometry& g, int64_t element_bytes) {
  const int64_t per_image =
      g.in_channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w * element_bytes;
  return std::max<int64_t>(1, std::min<int64_t>(g.batch, kUnfoldBytes / std::max<int64_t>(1, per_image)));
}

// (K, nb * L): the unfolded images of a chunk side by side.
at::Tensor unfold_chunk(const at::Tensor& input, const SparseFilterGeometry& g) {
  const at::Tensor columns = at::im2col(input, {g.kernel_h, g.kernel_w},
                                        {g.dilation_h, g.dilation_w}, {g.pad_h, g.pad_w},
                                        {g.stride_h, g.stride_w});  // (nb, K, L)
  return columns.transpose(0, 1).reshape({columns.size(1), -1});
}

void with_workspace(size_t bytes, const at::Tensor& like, const std::function<void(void*)>& fn) {
  at::Tensor workspace = at::empty({int64_t(std::max<size_t>(bytes, 1))},
                                   like.options().dtype(at::kByte));
  fn(workspace.data_ptr());
}

}  // namespace

at::Tensor sparse_filter_spmm_forward_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                           const at::Tensor& col_idx,
                                           const at::Tensor& values, const at::Tensor& bias,
                                           const SparseFilterGeometry& g) {
  const cudaDataType type = cuda_type_of(input.scalar_type());
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (output.numel() == 0) return output;
  const std::vector<at::Tensor> csr = build_global_csr(row_ptr, col_idx, g);
  const at::Tensor sorted_values = values.index_select(0, csr[2]).contiguous();
  const CsrDescriptor weight(g, csr, sorted_values);
  cusparseHandle_t handle = at::cuda::getCurrentCUDASparseHandle();
  const int64_t plane = g.out_h * g.out_w;
  const int64_t chunk = images_per_chunk(g, input.element_size());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_spmm_cuda", [&] {
    const scalar_t one = 1, zero = 0;
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t nb = std::min(chunk, g.batch - n0);
      const at::Tensor columns = unfold_chunk(input.narrow(0, n0, nb), g);
      at::Tensor product = at::empty({g.out_channels, nb * plane}, input.options());
      const DenseDescriptor b(columns), c(product);
      size_t bytes = 0;
      TSC_CUSPARSE_CHECK(cusparseSpMM_bufferSize(
          handle, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one,
          weight.descr, b.descr, &zero, c.descr, type, CUSPARSE_SPMM_ALG_DEFAULT, &bytes));
      with_workspace(bytes, input, [&](void* buffer) {
        TSC_CUSPARSE_CHECK(cusparseSpMM(handle, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                        CUSPARSE_OPERATION_NON_TRANSPOSE, &one, weight.descr,
                                        b.descr, &zero, c.descr, type, CUSPARSE_SPMM_ALG_DEFAULT,
                                        buffer));
      });
      output.narrow(0, n0, nb).copy_(product.view({g.out_channels, nb, g.out_h, g.out_w})
                                         .transpose(0, 1));
    }
  });
  if (bias.defined()) output.add_(bias.view({1, -1, 1, 1}));
  return output;
}

at::Tensor sparse_filter_sddmm_grad_values_cuda(const at::Tensor& grad_output,
                                                const at::Tensor& input,
                                                const at::Tensor& row_ptr,
                                                const at::Tensor& col_idx,
                                                const SparseFilterGeometry& g) {
  const cudaDataType type = cuda_type_of(input.scalar_type());
  const int64_t nnz = col_idx.size(0);
  const std::vector<at::Tensor> csr = build_global_csr(row_ptr, col_idx, g);
  // Sampled products in the sorted order, summed over chunks (beta = 1), then put back in
  // the caller's order.
  at::Tensor sorted_grad = at::zeros({nnz}, input.options());
  if (nnz == 0 || g.batch * g.out_h * g.out_w == 0) return sorted_grad;
  const CsrDescriptor pattern(g, csr, sorted_grad);
  cusparseHandle_t handle = at::cuda::getCurrentCUDASparseHandle();
  const int64_t plane = g.out_h * g.out_w;
  const int64_t chunk = images_per_chunk(g, input.element_size());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_sddmm_cuda", [&] {
    const scalar_t one = 1;
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t nb = std::min(chunk, g.batch - n0);
      const at::Tensor columns_t = unfold_chunk(input.narrow(0, n0, nb), g).t().contiguous();
      const at::Tensor grad_2d = grad_output.narrow(0, n0, nb).transpose(0, 1)
                                     .reshape({g.out_channels, nb * plane}).contiguous();
      const DenseDescriptor a(grad_2d), b(columns_t);
      size_t bytes = 0;
      TSC_CUSPARSE_CHECK(cusparseSDDMM_bufferSize(
          handle, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one,
          a.descr, b.descr, &one, pattern.descr, type, CUSPARSE_SDDMM_ALG_DEFAULT, &bytes));
      with_workspace(bytes, input, [&](void* buffer) {
        TSC_CUSPARSE_CHECK(cusparseSDDMM(handle, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                         CUSPARSE_OPERATION_NON_TRANSPOSE, &one, a.descr,
                                         b.descr, &one, pattern.descr, type,
                                         CUSPARSE_SDDMM_ALG_DEFAULT, buffer));
      });
    }
  });
  at::Tensor grad_values = at::empty_like(sorted_grad);
  grad_values.index_copy_(0, csr[2], sorted_grad);
  return grad_values;
}

}  // namespace torch_sparse_conv
