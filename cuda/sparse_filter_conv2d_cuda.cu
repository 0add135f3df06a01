// sparse_filter_conv2d and its backward on CUDA.
//
// 'direct': one thread per output element reads only the kept taps of its output channel
// (implicit unfold, no im2col buffer). 'dense' runs cuDNN through at::conv2d on the unpacked
// weight. The backward is deterministic (no floating-point atomics): grad_input gathers over
// the taps that read each input element, through a column-sorted copy of the CSR weight, and
// each kept value's gradient is one block-wide reduction.
//
// Status: compiled in CI for sm_80/sm_90; verified only where a GPU runs the test suite.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>

#include "sparse_filter_conv2d_method.h"
#include "sparse_filter_geometry.h"
#include "sparse_filter_packed_cache.h"

namespace torch_sparse_conv {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t work) {
  return std::min<int64_t>((work + kThreads - 1) / kThreads, int64_t(1) << 30);
}

// The geometry as plain values for kernels.
struct ConvShape {
  int64_t batch, in_channels, in_h, in_w, out_channels, groups, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w;
};

ConvShape to_shape(const SparseFilterGeometry& g) {
  return {g.batch, g.in_channels, g.in_h, g.in_w, g.out_channels, g.groups, g.kernel_h,
          g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h, g.dilation_w,
          g.out_h, g.out_w};
}

template <typename scalar_t>
__global__ void direct_forward_kernel(const scalar_t* __restrict__ input,
                                      const int64_t* __restrict__ row_ptr,
                                      const int64_t* __restrict__ col_idx,
                                      const scalar_t* __restrict__ values,
                                      const scalar_t* __restrict__ bias, ConvShape s,
                                      scalar_t* __restrict__ output, int64_t total) {
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t ocpg = s.out_channels / s.groups;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t ow = index % s.out_w;
    const int64_t oh = index / s.out_w % s.out_h;
    const int64_t oc = index / (s.out_w * s.out_h) % s.out_channels;
    const int64_t n = index / (s.out_w * s.out_h * s.out_channels);
    const scalar_t* sample =
        input + (n * s.in_channels + (oc / ocpg) * cin_g) * s.in_h * s.in_w;
    scalar_t acc = bias ? bias[oc] : scalar_t(0);
    for (int64_t k = row_ptr[oc]; k < row_ptr[oc + 1]; ++k) {
      const int64_t col = col_idx[k];
      const int64_t c = col / taps_per_channel;
      const int64_t ki = col % taps_per_channel / s.kernel_w, kj = col % s.kernel_w;
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
      if (ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w) {
        acc += values[k] * sample[(c * s.in_h + ih) * s.in_w + iw];
      }
    }
    output[index] = acc;
  }
}

// grad_input[n, gc, ih, iw] = sum over taps (ki, kj) and the output channels keeping column
// (c, ki, kj) of value * grad_output[n, oc, oh, ow], where (oh, ow) reads (ih, iw).
// csc_ptr / csc_row / csc_value: the weight sorted by (group, column).
template <typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_output,
                                  const int64_t* __restrict__ csc_ptr,
                                  const int64_t* __restrict__ csc_row,
                                  const scalar_t* __restrict__ csc_value, ConvShape s,
                                  scalar_t* __restrict__ grad_input, int64_t total) {
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t taps = cin_g * taps_per_channel;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iw = index % s.in_w;
    const int64_t ih = index / s.in_w % s.in_h;
    const int64_t gc = index / (s.in_w * s.in_h) % s.in_channels;
    const int64_t n = index / (s.in_w * s.in_h * s.in_channels);
    const int64_t group = gc / cin_g, c = gc % cin_g;
    scalar_t acc = 0;
    for (int64_t ki = 0; ki < s.kernel_h; ++ki) {
      const int64_t row = ih + s.pad_h - ki * s.dilation_h;
      if (row < 0 || row % s.stride_h != 0 || row / s.stride_h >= s.out_h) continue;
      const int64_t oh = row / s.stride_h;
      for (int64_t kj = 0; kj < s.kernel_w; ++kj) {
        const int64_t column = iw + s.pad_w - kj * s.dilation_w;
        if (column < 0 || column % s.stride_w != 0 || column / s.stride_w >= s.out_w) continue;
        const int64_t ow = column / s.stride_w;
        const int64_t key = group * taps + c * taps_per_channel + ki * s.kernel_w + kj;
        for (int64_t j = csc_ptr[key]; j < csc_ptr[key + 1]; ++j) {
          const int64_t oc = csc_row[j];
          acc += csc_value[j] *
                 grad_output[((n * s.out_channels + oc) * s.out_h + oh) * s.out_w + ow];
        }
      }
    }
    grad_input[index] = acc;
  }
}

// One block per kept value: its gradient is a sum over the batch and the output plane.
template <typename scalar_t>
__global__ void grad_values_kernel(const scalar_t* __restrict__ grad_output,
                                   const scalar_t* __restrict__ input,
                                   const int64_t* __restrict__ row_of,
                                   const int64_t* __restrict__ col_idx, ConvShape s,
                                   scalar_t* __restrict__ grad_values, int64_t nnz) {
  __shared__ scalar_t partial[kThreads];
  const int64_t taps_per_channel = s.kernel_h * s.kernel_w;
  const int64_t cin_g = s.in_channels / s.groups;
  const int64_t ocpg = s.out_channels / s.groups;
  const int64_t plane = s.out_h * s.out_w;
  for (int64_t k = blockIdx.x; k < nnz; k += gridDim.x) {
    const int64_t oc = row_of[k], col = col_idx[k];
    const int64_t gc = (oc / ocpg) * cin_g + col / taps_per_channel;
    const int64_t ki = col % taps_per_channel / s.kernel_w, kj = col % s.kernel_w;
    scalar_t acc = 0;
    for (int64_t i = threadIdx.x; i < s.batch * plane; i += blockDim.x) {
      const int64_t n = i / plane, oh = i % plane / s.out_w, ow = i % s.out_w;
      const int64_t ih = oh * s.stride_h - s.pad_h + ki * s.dilation_h;
      const int64_t iw = ow * s.stride_w - s.pad_w + kj * s.dilation_w;
      if (ih >= 0 && ih < s.in_h && iw >= 0 && iw < s.in_w) {
        acc += grad_output[(n * s.out_channels + oc) * plane + oh * s.out_w + ow] *
               input[((n * s.in_channels + gc) * s.in_h + ih) * s.in_w + iw];
      }
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) grad_values[k] = partial[0];
    __syncthreads();
  }
}

at::Tensor row_of_nonzeros(const at::Tensor& row_ptr, int64_t rows, int64_t nnz) {
  at::Tensor counts = row_ptr.narrow(0, 1, rows) - row_ptr.narrow(0, 0, rows);
  return at::repeat_interleave(at::arange(rows, row_ptr.options()), counts, 0, nnz);
}

at::Tensor sparse_filter_conv2d_cuda(const at::Tensor& input, const at::Tensor& row_ptr,
                                     const at::Tensor& col_idx, const at::Tensor& values,
                                     at::IntArrayRef weight_size,
                                     const c10::optional<at::Tensor>& bias,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     c10::string_view method_name) {
  const SparseFilterGeometry g =
      check_sparse_filter_conv2d_args(input, row_ptr, col_idx, values, weight_size, bias, stride,
                                      padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto facts = packed_filter_facts(row_ptr, col_idx, values, g, weight_size);
  SparseFilterMethod method = parse_sparse_filter_method(method_name);
  TORCH_CHECK(method != SparseFilterMethod::Unfold && method != SparseFilterMethod::Spmm,
              "sparse_filter_conv2d: method '", std::string(method_name),
              "' is not implemented on CUDA yet; use 'direct', 'dense' or 'auto'");
  // Not yet measured on a GPU: 'auto' keeps cuDNN except for very sparse filters.
  if (method == SparseFilterMethod::Auto) {
    const double density = double(col_idx.size(0)) /
                           std::max<double>(1.0, double(g.out_channels * g.taps_per_filter()));
    method = density <= 0.02 ? SparseFilterMethod::Direct : SparseFilterMethod::Dense;
  }
  if (method == SparseFilterMethod::Dense) {
    return at::conv2d(input, facts->dense_weight(), bias, stride, padding, dilation, groups)
        .contiguous();
  }
  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  const at::Tensor in = input.contiguous(), rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const at::Tensor val = values.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_conv2d_cuda", [&] {
    direct_forward_kernel<scalar_t>
        <<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
            in.data_ptr<scalar_t>(), rp.data_ptr<int64_t>(), ci.data_ptr<int64_t>(),
            val.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr,
            to_shape(g), output.data_ptr<scalar_t>(), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_filter_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& row_ptr,
    const at::Tensor& col_idx, const at::Tensor& values, at::IntArrayRef weight_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(input.device());
  const SparseFilterGeometry g = check_sparse_filter_backward_args(
      grad_output, input, row_ptr, col_idx, values, weight_size, stride, padding, dilation,
      groups);
  at::Tensor grad_input, grad_values, grad_bias;
  if (output_mask[2]) grad_bias = grad_output.sum({0, 2, 3});
  const at::Tensor go = grad_output.contiguous(), in = input.contiguous();
  const at::Tensor ci = col_idx.contiguous(), val = values.contiguous();
  const int64_t nnz = col_idx.size(0);
  const at::Tensor row_of = row_of_nonzeros(row_ptr.contiguous(), g.out_channels, nnz);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_filter_conv2d_backward_cuda", [&] {
    if (output_mask[0]) {
      // The weight sorted by (group, column): the taps that read each input element.
      const int64_t taps = g.taps_per_filter();
      const at::Tensor key = at::div(row_of, g.out_channels_per_group(), "floor") * taps + ci;
      const at::Tensor order = std::get<1>(at::sort(key, /*stable=*/true, 0, false));
      const at::Tensor counts = at::bincount(key, {}, g.groups * taps);
      at::Tensor csc_ptr = at::zeros({g.groups * taps + 1}, row_ptr.options());
      csc_ptr.narrow(0, 1, g.groups * taps).copy_(at::cumsum(counts, 0));
      const at::Tensor csc_row = row_of.index_select(0, order);
      const at::Tensor csc_value = val.index_select(0, order);
      grad_input = at::empty(in.sizes(), in.options());
      const int64_t total = grad_input.numel();
      if (total > 0) {
        grad_input_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            go.data_ptr<scalar_t>(), csc_ptr.data_ptr<int64_t>(), csc_row.data_ptr<int64_t>(),
            csc_value.data_ptr<scalar_t>(), to_shape(g), grad_input.data_ptr<scalar_t>(),
            total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (output_mask[1]) {
      grad_values = at::zeros_like(val);
      if (nnz > 0 && g.batch * g.out_h * g.out_w > 0) {
        grad_values_kernel<scalar_t>
            <<<std::min<int64_t>(nnz, 65535), kThreads, 0, stream>>>(
                go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), row_of.data_ptr<int64_t>(),
                ci.data_ptr<int64_t>(), to_shape(g), grad_values.data_ptr<scalar_t>(), nnz);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return {grad_input, grad_values, grad_bias};
}

}  // namespace
}  // namespace torch_sparse_conv

TORCH_LIBRARY_IMPL(torch_sparse_conv, CUDA, m) {
  m.impl("sparse_filter_conv2d", &torch_sparse_conv::sparse_filter_conv2d_cuda);
  m.impl("_sparse_filter_conv2d_backward",
         &torch_sparse_conv::sparse_filter_conv2d_backward_cuda);
}
