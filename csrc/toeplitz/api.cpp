// The public C++ API of the sparse-input (Toeplitz) convolution (torch_sparse_conv.h): calls
// through the operators' fronts, so the Autograd kernel records gradients for C++ callers.
#include <ATen/SparseCsrTensorUtils.h>

#include <optional>

#include "csrc/toeplitz/geometry.h"
#include "csrc/toeplitz/ops.h"
#include "csrc/torch_sparse_conv.h"

namespace torch_sparse_conv {

std::vector<int64_t> toeplitz_output_shape(at::IntArrayRef image_shape,
                                           at::IntArrayRef kernel_shape,
                                           const std::string& mode) {
  TORCH_CHECK(image_shape.size() == 2 && kernel_shape.size() == 2,
              "toeplitz_output_shape: image_shape and kernel_shape must have two sizes each, "
              "got ", image_shape, " and ", kernel_shape);
  // The one mode -> output shape rule (csrc/toeplitz/geometry.cpp).
  const ToeplitzGeometry g =
      toeplitz_geometry(kernel_shape[0], kernel_shape[1], image_shape, mode);
  return {g.out_h, g.out_w};
}

CsrImages toeplitz_conv2d(const CsrImages& images, const at::Tensor& kernel,
                          at::IntArrayRef image_shape, const std::string& mode,
                          const std::string& method) {
  CsrImages out;
  std::tie(out.crow, out.col, out.values) = ops::toeplitz_conv2d(
      images.crow, images.col, images.values, kernel, image_shape, mode, method);
  return out;
}

at::Tensor toeplitz_conv2d(const at::Tensor& images, const at::Tensor& kernel,
                           at::IntArrayRef image_shape, const std::string& mode,
                           const std::string& method) {
  TORCH_CHECK(images.layout() == at::kSparseCsr,
              "toeplitz_conv2d: images must be a sparse CSR tensor (B, H*W), got layout ",
              images.layout());
  TORCH_CHECK(image_shape.size() == 2, "toeplitz_conv2d: image_shape must be (H, W), got ",
              image_shape);
  TORCH_CHECK(images.dim() == 2 && images.size(1) == image_shape[0] * image_shape[1],
              "toeplitz_conv2d: images must be (B, H*W) = (B, ",
              image_shape[0] * image_shape[1], ") for image_shape ", image_shape,
              ", got shape ", images.sizes());
  // The operator takes int64 indices; torch also builds CSR tensors with int32 ones.
  const CsrImages in{images.crow_indices().to(at::kLong), images.col_indices().to(at::kLong),
                     images.values()};
  const CsrImages out = toeplitz_conv2d(in, kernel, image_shape, mode, method);
  const std::vector<int64_t> out_shape = toeplitz_output_shape(image_shape, kernel.sizes(), mode);
  // The operator built a valid CSR: it is not checked again where the user turned on
  // torch.sparse.check_sparse_tensor_invariants (an O(entries) pass), as Python's
  // torch.sparse_csr_tensor(..., check_invariants=False) does it.
  std::optional<at::sparse_csr::CheckSparseTensorInvariants> trusted;
  if (at::globalContext().checkSparseTensorInvariants().value_or(false)) trusted.emplace(false);
  // at::sparse_compressed_tensor, not at::sparse_csr_tensor: only the former records the
  // values in the autograd graph (torch 2.11), like Python's torch.sparse_csr_tensor.
  return at::sparse_compressed_tensor(out.crow, out.col, out.values,
                                      {images.size(0), out_shape[0] * out_shape[1]},
                                      out.values.options().layout(at::kSparseCsr));
}

}  // namespace torch_sparse_conv
