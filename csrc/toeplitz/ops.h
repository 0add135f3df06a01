// The sparse-input (Toeplitz) operators: each one's schema, and its front, the one C++
// function that calls it through the dispatcher (csrc/common/dispatch.h). Autograd, the
// public C++ API and the tests call the fronts. ops.cpp registers the schemas; the kernels
// are registered per dispatch key: CPU in csrc/toeplitz/cpu/, CUDA in cuda/toeplitz/,
// Autograd in csrc/toeplitz/*_autograd.cpp, Meta/fake in torch_sparse_conv/toeplitz/.
//
// A batch of images is a CSR matrix (B, H*W) given as its row pointers, columns and values;
// outputs come back the same way, as CSR (B, H_out*W_out) with sorted int64 columns.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

namespace torch_sparse_conv {
namespace schema {

// Every image convolved with a dense (kH, kW) kernel exactly as
// scipy.signal.convolve2d(image, kernel, mode). method: 'auto' | 'direct' | 'precomputed'
// ('precomputed' builds T, see toeplitz_matrix, on every call; callers that keep T use
// toeplitz_conv2d_precomputed).
constexpr const char* kToeplitzConv2d =
    "toeplitz_conv2d(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
    "int[2] image_shape, str mode, str method) "
    "-> (Tensor out_crow, Tensor out_col, Tensor out_values)";

// Gradients of toeplitz_conv2d w.r.t. the input values (on their pattern) and the kernel,
// from the gradient of the output values (on the output pattern out_crow / out_col).
constexpr const char* kToeplitzConv2dBackward =
    "_toeplitz_conv2d_backward(Tensor grad_out_values, Tensor crow, Tensor col, "
    "Tensor values, Tensor kernel, Tensor out_crow, Tensor out_col, int[2] image_shape, "
    "str mode, bool[2] output_mask) -> (Tensor grad_values, Tensor grad_kernel)";

// toeplitz_conv2d's direct method with scipy.sparse's storage conventions, for
// compat.Toeplitz_convolution2d: index arrays int32 or int64 in; out, int32 indices when the
// output's shape and an upper bound of its entries (B*H_out*W_out, nnz(x)*kH*kW) fit, else
// int64; outputs that are exactly zero are not stored. Forward only, CPU.
constexpr const char* kToeplitzConv2dScipy =
    "_toeplitz_conv2d_scipy(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
    "int[2] image_shape, str mode) -> (Tensor out_crow, Tensor out_col, Tensor out_values)";

// T, the doubly-block-Toeplitz matrix of the kernel: CSR (H*W, H_out*W_out) with sorted int64
// columns, so that toeplitz_conv2d(x) == x @ T. Every tap landing inside the output is
// stored, kernel zeros included. Differentiable w.r.t. the kernel.
constexpr const char* kToeplitzMatrix =
    "toeplitz_matrix(Tensor kernel, int[2] image_shape, str mode) "
    "-> (Tensor t_crow, Tensor t_col, Tensor t_values)";
constexpr const char* kToeplitzMatrixBackward =
    "_toeplitz_matrix_backward(Tensor grad_values, Tensor kernel, int[2] image_shape, "
    "str mode) -> Tensor";

// toeplitz_conv2d computed as x @ T with a T the caller built once from this kernel with
// toeplitz_matrix(kernel, image_shape, mode) and keeps. Same output as toeplitz_conv2d.
// Gradients go to the input values and the kernel (through _toeplitz_conv2d_backward), none
// to T, which stands for the kernel.
constexpr const char* kToeplitzConv2dPrecomputed =
    "toeplitz_conv2d_precomputed(Tensor crow, Tensor col, Tensor values, Tensor kernel, "
    "int[2] image_shape, str mode, Tensor t_crow, Tensor t_col, Tensor t_values) "
    "-> (Tensor out_crow, Tensor out_col, Tensor out_values)";

}  // namespace schema

namespace ops {

using CsrParts = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // crow, col, values

CsrParts toeplitz_conv2d(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
                         const at::Tensor& kernel, at::IntArrayRef image_shape,
                         c10::string_view mode, c10::string_view method);

std::tuple<at::Tensor, at::Tensor> toeplitz_conv2d_backward(
    const at::Tensor& grad_out_values, const at::Tensor& crow, const at::Tensor& col,
    const at::Tensor& values, const at::Tensor& kernel, const at::Tensor& out_crow,
    const at::Tensor& out_col, at::IntArrayRef image_shape, c10::string_view mode,
    std::array<bool, 2> output_mask);

CsrParts toeplitz_conv2d_scipy(const at::Tensor& crow, const at::Tensor& col,
                               const at::Tensor& values, const at::Tensor& kernel,
                               at::IntArrayRef image_shape, c10::string_view mode);

CsrParts toeplitz_matrix(const at::Tensor& kernel, at::IntArrayRef image_shape,
                         c10::string_view mode);

at::Tensor toeplitz_matrix_backward(const at::Tensor& grad_values, const at::Tensor& kernel,
                                    at::IntArrayRef image_shape, c10::string_view mode);

CsrParts toeplitz_conv2d_precomputed(const at::Tensor& crow, const at::Tensor& col,
                                     const at::Tensor& values, const at::Tensor& kernel,
                                     at::IntArrayRef image_shape, c10::string_view mode,
                                     const at::Tensor& t_crow, const at::Tensor& t_col,
                                     const at::Tensor& t_values);

}  // namespace ops
}  // namespace torch_sparse_conv
