"""Fake (meta) kernels of the sparse-input (Toeplitz) operators: output shapes without data,
for torch.compile, export and opcheck. Registered by _library.load() once the compiled library
has defined the schemas."""
import torch

from .._arguments import check_one_device
from .functional import geometry, output_shape


@torch.library.register_fake("torch_sparse_conv::toeplitz_conv2d")
def _toeplitz_conv2d_fake(crow, col, values, kernel, image_shape, mode, method):
    check_one_device("toeplitz_conv2d", ("x's values", values), crow=crow, col=col,
                     kernel=kernel)
    torch._check(kernel.dim() == 2, lambda: "toeplitz_conv2d: kernel must be 2-D")
    torch._check(mode in ("full", "same", "valid"),
                 lambda: f"toeplitz_conv2d: mode must be 'full', 'same' or 'valid', got {mode!r}")
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape), col.new_empty((nnz,)), values.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_conv2d_backward")
def _toeplitz_conv2d_backward_fake(grad_out_values, crow, col, values, kernel, out_crow,
                                   out_col, image_shape, mode, output_mask):
    check_one_device("_toeplitz_conv2d_backward", ("x's values", values),
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
    out, offset = geometry(image_shape, kernel.shape, mode)
    nnz = _taps_inside(h, kh, out[0], offset[0]) * _taps_inside(w, kw, out[1], offset[1])
    return (kernel.new_empty((h * w + 1,), dtype=torch.int64),
            kernel.new_empty((nnz,), dtype=torch.int64), kernel.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_matrix_backward")
def _toeplitz_matrix_backward_fake(grad_values, kernel, image_shape, mode):
    check_one_device("_toeplitz_matrix_backward", ("kernel", kernel), grad_values=grad_values)
    return torch.empty_like(kernel, memory_format=torch.contiguous_format)


@torch.library.register_fake("torch_sparse_conv::toeplitz_conv2d_precomputed")
def _toeplitz_conv2d_precomputed_fake(crow, col, values, kernel, image_shape, mode, t_crow,
                                      t_col, t_values):
    check_one_device("toeplitz_conv2d_precomputed", ("x's values", values), crow=crow,
                     col=col, kernel=kernel, t_crow=t_crow, t_col=t_col, t_values=t_values)
    torch._check(kernel.dim() == 2, lambda: "toeplitz_conv2d_precomputed: kernel must be 2-D")
    torch._check(t_values.dtype == values.dtype, lambda: (
        f"toeplitz_conv2d_precomputed: t_values ({t_values.dtype}) must have x's dtype "
        f"({values.dtype})"))
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape), col.new_empty((nnz,)), values.new_empty((nnz,)))


@torch.library.register_fake("torch_sparse_conv::_toeplitz_conv2d_scipy")
def _toeplitz_conv2d_scipy_fake(crow, col, values, kernel, image_shape, mode):
    check_one_device("_toeplitz_conv2d_scipy", ("x's values", values), crow=crow, col=col,
                     kernel=kernel)
    torch._check(kernel.dim() == 2, lambda: "_toeplitz_conv2d_scipy: kernel must be 2-D")
    (kh, kw) = kernel.shape
    out_h, out_w = output_shape(image_shape, kernel.shape, mode)
    # The same rule as the CPU kernel: int32 when the shapes bound every index below 2^31.
    limit, pixels, batch = 2**31 - 1, out_h * out_w, crow.shape[0] - 1
    small = pixels <= limit and (col.shape[0] * kh * kw <= limit or batch * pixels <= limit)
    index = torch.int32 if small else torch.int64
    nnz = torch.library.get_ctx().new_dynamic_size()
    return (crow.new_empty(crow.shape, dtype=index), col.new_empty((nnz,), dtype=index),
            values.new_empty((nnz,)))
