"""Fake (meta) kernels: output shapes without data, for torch.compile, export and opcheck."""
import torch


def _check_one_device(op, anchor, **tensors):
    """Every tensor argument on the anchor's device. The dispatcher sends a call whose tensors
    mix 'meta' with another device here, where a real kernel's device check never runs."""
    anchor_name, anchor_tensor = anchor
    for name, tensor in tensors.items():
        if tensor is not None:
            torch._check(tensor.device == anchor_tensor.device, lambda: (
                f"{op}: {name} is on {tensor.device} but {anchor_name} is on "
                f"{anchor_tensor.device}"))


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
                               padding, dilation, groups, method):
    torch._check(input.dim() == 4, lambda: "sparse_filter_conv2d: input must be 4-D")
    # Labels as in the CPU and CUDA kernels' messages.
    _check_one_device("sparse_filter_conv2d", ("input", input), **{
        "the packed weight": row_ptr, "the packed weight (col_idx)": col_idx,
        "the packed weight (values)": values, "bias": bias})
    torch._check(values.dtype == input.dtype, lambda: (
        f"sparse_filter_conv2d: values ({values.dtype}) must have the dtype of input "
        f"({input.dtype})"))
    torch._check(len(weight_size) == 4, lambda: "sparse_filter_conv2d: weight_size must be "
                 "(C_out, C_in/groups, kH, kW)")
    out_h = _out_size(input.shape[2], weight_size[2], stride[0], padding[0], dilation[0])
    out_w = _out_size(input.shape[3], weight_size[3], stride[1], padding[1], dilation[1])
    return input.new_empty((input.shape[0], weight_size[0], out_h, out_w))


@torch.library.register_fake("torch_sparse_conv::_sparse_filter_conv2d_backward")
def _sparse_filter_conv2d_backward_fake(grad_output, input, row_ptr, col_idx, values,
                                        weight_size, stride, padding, dilation, groups,
                                        output_mask):
    _check_one_device("_sparse_filter_conv2d_backward", ("input", input),
                      grad_output=grad_output, row_ptr=row_ptr, col_idx=col_idx, values=values)
    grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) \
        if output_mask[0] else None
    grad_values = torch.empty_like(values) if output_mask[1] else None
    grad_bias = grad_output.new_empty((weight_size[0],)) if output_mask[2] else None
    return grad_input, grad_values, grad_bias


@torch.library.register_fake("torch_sparse_conv::toeplitz_conv2d")
def _toeplitz_conv2d_fake(crow, col, values, kernel, image_shape, mode, method):
    _check_one_device("toeplitz_conv2d", ("x's values", values), crow=crow, col=col,
                      kernel=kernel)
    torch._check(kernel.dim() == 2, lambda: "toeplitz_conv2d: kernel must be 2-D")
    torch._check(mode in ("full", "same", "valid"),
                 lambda: f"toeplitz_conv2d: mode must be 'full', 'same' or 'valid', got {mode!r}")
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape), col.new_empty((nnz,)), values.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_conv2d_backward")
def _toeplitz_conv2d_backward_fake(grad_out_values, crow, col, values, kernel, out_crow,
                                   out_col, image_shape, mode, output_mask):
    _check_one_device("_toeplitz_conv2d_backward", ("x's values", values),
                      grad_out_values=grad_out_values, crow=crow, col=col, kernel=kernel,
                      out_crow=out_crow, out_col=out_col)
    grad_values = torch.empty_like(values) if output_mask[0] else None
    grad_kernel = torch.empty_like(kernel, memory_format=torch.contiguous_format) \
        if output_mask[1] else None
    return grad_values, grad_kernel


def _taps_inside(size, taps, out, offset):
    """Pairs (input index i, tap u) of one axis with 0 <= i + u - offset < out."""
    return sum(max(0, min(size, out + offset - u) - max(0, offset - u)) for u in range(taps))


@torch.library.register_fake("torch_sparse_conv::toeplitz_matrix")
def _toeplitz_matrix_fake(kernel, image_shape, mode):
    torch._check(kernel.dim() == 2, lambda: "toeplitz_matrix: kernel must be 2-D")
    torch._check(mode in ("full", "same", "valid"),
                 lambda: f"toeplitz_matrix: mode must be 'full', 'same' or 'valid', got {mode!r}")
    (h, w), (kh, kw) = image_shape, kernel.shape
    offset = {"full": (0, 0), "same": ((kh - 1) // 2, (kw - 1) // 2),
              "valid": (kh - 1, kw - 1)}[mode]
    out = {"full": (h + kh - 1, w + kw - 1), "same": (h, w),
           "valid": (h - kh + 1, w - kw + 1)}[mode]
    nnz = _taps_inside(h, kh, out[0], offset[0]) * _taps_inside(w, kw, out[1], offset[1])
    return (kernel.new_empty((h * w + 1,), dtype=torch.int64),
            kernel.new_empty((nnz,), dtype=torch.int64), kernel.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_matrix_backward")
def _toeplitz_matrix_backward_fake(grad_values, kernel, image_shape, mode):
    _check_one_device("_toeplitz_matrix_backward", ("kernel", kernel), grad_values=grad_values)
    return torch.empty_like(kernel, memory_format=torch.contiguous_format)


@torch.library.register_fake("torch_sparse_conv::toeplitz_conv2d_precomputed")
def _toeplitz_conv2d_precomputed_fake(crow, col, values, kernel, image_shape, mode, t_crow,
                                      t_col, t_values):
    _check_one_device("toeplitz_conv2d_precomputed", ("x's values", values), crow=crow,
                      col=col, kernel=kernel, t_crow=t_crow, t_col=t_col, t_values=t_values)
    torch._check(kernel.dim() == 2, lambda: "toeplitz_conv2d_precomputed: kernel must be 2-D")
    torch._check(t_values.dtype == values.dtype, lambda: (
        f"toeplitz_conv2d_precomputed: t_values ({t_values.dtype}) must have x's dtype "
        f"({values.dtype})"))
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape), col.new_empty((nnz,)), values.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_conv2d_scipy")
def _toeplitz_conv2d_scipy_fake(crow, col, values, kernel, image_shape, mode):
    _check_one_device("_toeplitz_conv2d_scipy", ("x's values", values), crow=crow, col=col,
                      kernel=kernel)
    torch._check(kernel.dim() == 2, lambda: "_toeplitz_conv2d_scipy: kernel must be 2-D")
    (h, w), (kh, kw) = image_shape, kernel.shape
    out_h, out_w = {"full": (h + kh - 1, w + kw - 1), "same": (h, w),
                    "valid": (h - kh + 1, w - kw + 1)}[mode]
    # The same rule as the CPU kernel: int32 when the shapes bound every index below 2^31.
    limit, pixels, batch = 2**31 - 1, out_h * out_w, crow.shape[0] - 1
    small = pixels <= limit and (col.shape[0] * kh * kw <= limit or batch * pixels <= limit)
    index = torch.int32 if small else torch.int64
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape, dtype=index), col.new_empty((nnz,), dtype=index),
            values.new_empty((nnz,)))
