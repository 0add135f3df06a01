// sparse_filter_conv2d and its backward on CUDA: argument checks, the choice of method, and
// the registration. The kernels live in cuda/sparse_filter/{direct,backward,spmm}.cu.
//
//   direct  implicit unfold, tiled through shared memory (cuda/sparse_filter/direct.cu)
//   spmm    unfold + cuSPARSE SpMM (float32/float64)
//   dense   cuDNN through at::conv2d on the unpacked weight (follows torch's TF32 setting)
//   auto    dense: the fastest on every cell measured on an H100 so far (see below)
// The backward is deterministic: grad_input by a gather kernel, the kept values' gradient by
// cuSPARSE SDDMM (float32/float64) or a block reduction per value (half precision).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>

#include "csrc/common/memory_format.h"
#include "csrc/sparse_filter/method.h"
#include "csrc/sparse_filter/checks.h"
#include "cuda/sparse_filter/methods.cuh"

namespace torch_sparse_conv {
namespace {

// 'auto' on CUDA is cuDNN ('dense'). Measured on an H100 (2026-11-24, batch 64, ResNet-50's
// 3x3 layers, cuDNN with TF32 as torch allows by default): 'direct' ran at 0.03x-0.28x and
// 'spmm' at 0.07x-0.17x of cuDNN at 80-98% sparsity, so no measured cell favours them
// (BENCHMARKS.md, docs/gpu-runs/). They stay selectable by name.
SparseFilterMethod choose_cuda_method(SparseFilterMethod method) {
  return method == SparseFilterMethod::Auto ? SparseFilterMethod::Dense : method;
}

// The convolution; the epilogue (csrc/sparse_filter/epilogue.h) is a pass after it, below.
at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                       const at::Tensor& col_idx, const at::Tensor& values,
                       at::IntArrayRef weight_size, const c10::optional<at::Tensor>& bias,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       c10::string_view method_name, const SparseFilterGeometry& g) {
  check_csr_contents(row_ptr, col_idx, g.taps_per_filter());
  SparseFilterMethod method = parse_sparse_filter_method(method_name);
  TORCH_CHECK(method != SparseFilterMethod::Unfold,
              "sparse_filter_conv2d: method 'unfold' is the CPU GEMM path; on CUDA use 'spmm' "
              "(unfold + cuSPARSE), 'direct', 'dense' or 'auto'");
  method = choose_cuda_method(method);
  if (g.taps_per_filter() == 0) {
    return in_memory_format_of(input, output_without_taps(input, bias, g));
  }
  if (method == SparseFilterMethod::Dense) {
    const at::Tensor weight =
        unpack_sparse_filter_dense(row_ptr, col_idx, values.detach(), weight_size);
    return in_memory_format_of(
        input,
        at::conv2d(input, weight, bias, {g.stride_h, g.stride_w}, padding, dilation, groups));
  }
  const at::Tensor in = input.contiguous(), val = values.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  if (method == SparseFilterMethod::Spmm) {
    return in_memory_format_of(input,
                               sparse_filter_spmm_forward_cuda(in, row_ptr, col_idx, val, b, g));
  }
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  sparse_filter_direct_forward_cuda(in, row_ptr, col_idx, val, b, g, output);
  return in_memory_format_of(input, output);
}

at::Tensor sparse_filter_conv2d_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                     const at::Tensor& col_idx, const at::Tensor& values,
                                     at::IntArrayRef weight_size,
                                     const c10::optional<at::Tensor>& bias,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     c10::string_view method_name,
                                     const c10::optional<at::Tensor>& residual, bool relu) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size, bias, stride,
                                      padding, dilation, groups);
  const Epilogue epilogue = check_epilogue(residual, relu, input, g);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor output = conv2d_cuda(input, row_ptr, col_idx, values, weight_size, bias, padding,
                                  dilation, groups, method_name, g);
  apply_epilogue(output, epilogue);
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask, const c10::optional<at::Tensor>& input_layout) {
  // Only the CPU forward keeps a layout (_sparse_filter_conv2d_keeping_input_layout).
  TORCH_CHECK(!input_layout.has_value() || !input_layout->defined(),
              "_sparse_filter_conv2d_backward: input_layout is a CPU layout; a CUDA call takes "
              "none");
  const c10::cuda::CUDAGuard guard(input.device());
  const SparseFilterGeometry g = check_sparse_filter_backward_args(
      grad_output, input, row_ptr, col_idx, values, weight_size, stride, padding, dilation,
      groups);
  at::Tensor grad_input, grad_values, grad_bias;
  if (output_mask[2]) grad_bias = grad_output.sum({0, 2, 3});
  const at::Tensor go = grad_output.contiguous(), in = input.contiguous();
  const at::Tensor ci = col_idx.contiguous(), val = values.contiguous();
  const at::Tensor row_of = row_of_entries(row_ptr, g.out_channels, col_idx.size(0));
  if (output_mask[0]) grad_input = sparse_filter_grad_input_cuda(go, row_of, ci, val, g);
  if (output_mask[1]) {
    const bool sddmm = in.scalar_type() == at::kFloat || in.scalar_type() == at::kDouble;
    if (sddmm) {
      grad_values = sparse_filter_sddmm_grad_values_cuda(go, in, row_ptr, ci, g);
    } else {
      grad_values = sparse_filter_grad_values_cuda(go, in, row_of, ci, g);
    }
  }
  return {grad_input, grad_values, grad_bias};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CUDA, m) {
  m.impl("sparse_filter_conv2d", &torch_sparse_conv::sparse_filter_conv2d_cuda);
  m.impl("_sparse_filter_conv2d_backward",
         &torch_sparse_conv::sparse_filter_conv2d_backward_cuda);
}
