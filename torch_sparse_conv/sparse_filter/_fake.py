"""Fake (meta) kernels of the sparse-filter operators: output shapes without data, for
torch.compile, export and opcheck. Registered by _library.load() once the compiled library
has defined the schemas."""
import torch
from torch._prims_common import suggest_memory_format

from .._arguments import check_one_device
from .pooling import _pooled_size, pool_arguments_accepted


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.register_fake("torch_sparse_conv::pack_sparse_filter")
def _pack_sparse_filter_fake(weight):
    torch._check(weight.dim() == 4, lambda: "pack_sparse_filter: weight must be 4-D")
    nnz = torch.library.get_ctx().new_dynamic_size()
    row_ptr = weight.new_empty((weight.shape[0] + 1,), dtype=torch.int64)
    return row_ptr, weight.new_empty((nnz,), dtype=torch.int64), weight.new_empty((nnz,))


@torch.library.register_fake("torch_sparse_conv::sparse_filter_conv2d")
def _sparse_filter_conv2d_fake(input, row_ptr, col_idx, values, weight_size, bias, stride,
                               padding, dilation, groups, method, residual=None, relu=False):
    torch._check(input.dim() == 4, lambda: "sparse_filter_conv2d: input must be 4-D")
    # Labels as in the CPU and CUDA kernels' messages.
    check_one_device("sparse_filter_conv2d", ("input", input), **{
        "the packed weight": row_ptr, "the packed weight (col_idx)": col_idx,
        "the packed weight (values)": values, "bias": bias, "residual": residual})
    torch._check(values.dtype == input.dtype, lambda: (
        f"sparse_filter_conv2d: values ({values.dtype}) must have the dtype of input "
        f"({input.dtype})"))
    torch._check(len(weight_size) == 4, lambda: "sparse_filter_conv2d: weight_size must be "
                 "(C_out, C_in/groups, kH, kW)")
    out_h = _out_size(input.shape[2], weight_size[2], stride[0], padding[0], dilation[0])
    out_w = _out_size(input.shape[3], weight_size[3], stride[1], padding[1], dilation[1])
    shape = (input.shape[0], weight_size[0], out_h, out_w)
    if residual is not None:
        torch._check(residual.dim() == 4 and tuple(residual.shape) == shape, lambda: (
            f"sparse_filter_conv2d: residual must have the output's shape {shape}, got "
            f"{tuple(residual.shape)}"))
        torch._check(residual.dtype == input.dtype, lambda: (
            f"sparse_filter_conv2d: residual ({residual.dtype}) must have input's dtype "
            f"({input.dtype})"))
    # The output keeps the input's memory format, as the kernels' (csrc/common/memory_format.h).
    return torch.empty(shape, dtype=input.dtype, device=input.device,
                       memory_format=suggest_memory_format(input))


@torch.library.register_fake("torch_sparse_conv::_sparse_filter_conv2d_keeping_input_layout")
def _sparse_filter_conv2d_keeping_input_layout_fake(*args, **kwargs):
    # Its layout's size depends on which CPU kernel runs; the autograd kernel calls it on real
    # CPU tensors only, and traced code calls sparse_filter_conv2d instead.
    raise RuntimeError("_sparse_filter_conv2d_keeping_input_layout is called by the CPU "
                       "autograd kernel on real tensors only; trace sparse_filter_conv2d")


@torch.library.register_fake("torch_sparse_conv::_sparse_filter_conv2d_backward")
def _sparse_filter_conv2d_backward_fake(grad_output, input, row_ptr, col_idx, values,
                                        weight_size, stride, padding, dilation, groups,
                                        output_mask, input_layout=None):
    check_one_device("_sparse_filter_conv2d_backward", ("input", input),
                     grad_output=grad_output, row_ptr=row_ptr, col_idx=col_idx, values=values)
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) \
        if output_mask[0] else None
    grad_values = torch.empty_like(values) if output_mask[1] else None
    grad_bias = grad_output.new_empty((weight_size[0],)) if output_mask[2] else None
    return grad_input, grad_values, grad_bias


@torch.library.register_fake("torch_sparse_conv::_max_pool2d_nchw")
def _max_pool2d_nchw_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(input.dim() == 4, lambda: "_max_pool2d_nchw: input must be 4-D (N, C, H, W)")
    torch._check(input.dtype in (torch.float32, torch.float64),
                 lambda: f"_max_pool2d_nchw: input must be float32 or float64, got {input.dtype}")
    torch._check(pool_arguments_accepted(kernel_size, stride, padding, dilation),
                 lambda: "_max_pool2d_nchw: invalid kernel_size, stride, padding or dilation")
    size = [_pooled_size(input.shape[2 + d], kernel_size[d], stride[d], padding[d], dilation[d],
                         ceil_mode) for d in range(2)]
    return input.new_empty((input.shape[0], input.shape[1], size[0], size[1]))
