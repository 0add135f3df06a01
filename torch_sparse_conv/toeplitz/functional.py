"""Functional API of the sparse-input (Toeplitz) convolution: batches of sparse images
convolved with a small dense kernel, with exactly ``scipy.signal.convolve2d``'s semantics,
output kept sparse.

Public: :func:`toeplitz_conv2d`, :func:`toeplitz_matrix`, :func:`output_shape`. For the
family's other modules (``nn``, ``_fake``) and ``compat``: :func:`geometry` (the mode rule),
the argument checks (:func:`check_arguments`, :func:`check_image_shape`,
:func:`check_kernel_shape`, :func:`check_method`), the two paths of the convolution
(:func:`dense_convolution`, :func:`sparse_convolution`) and
:func:`toeplitz_conv2d_scipy_arrays`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _C
from .._arguments import check_float_dtype

MODES = ("full", "same", "valid")
METHODS = ("auto", "direct", "precomputed")
# A kept T as the operators take it: (t_crow, t_col, t_values).
ToeplitzMatrix = Tuple[Tensor, Tensor, Tensor]


def output_shape(image_shape: Sequence[int], kernel_shape: Sequence[int],
                 mode: str) -> Tuple[int, int]:
    """(H_out, W_out) of ``scipy.signal.convolve2d(image, kernel, mode)``."""
    (h, w), (kh, kw) = image_shape, kernel_shape
    if mode == "full":
        return h + kh - 1, w + kw - 1
    if mode == "same":
        return h, w
    if mode == "valid":
        return h - kh + 1, w - kw + 1
    raise ValueError(f"toeplitz_conv2d: mode must be one of {MODES}, got {mode!r}")


def geometry(image_shape: Sequence[int], kernel_shape: Sequence[int],
             mode: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((H_out, W_out), (top, left))``: the output shape, and where the output sits in the
    'full' convolution (output pixel ``(i, j)`` is its pixel ``(i + top, j + left)``). As in
    scipy, every mode's output is the centred part of the full one (the larger half of an odd
    surplus after it). The rule the C++ operators apply, written once on the Python side."""
    (h, w), (kh, kw) = image_shape, kernel_shape
    out_h, out_w = output_shape(image_shape, kernel_shape, mode)
    return (out_h, out_w), ((h + kh - 1 - out_h) // 2, (w + kw - 1 - out_w) // 2)


def check_method(method, caller: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{caller}: method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")


def _is_positive_int(value) -> bool:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return False
    return value.__index__() > 0


def check_image_shape(image_shape, caller: str, name: str = "image_shape") -> None:
    if (not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 2
            or not all(_is_positive_int(s) for s in image_shape)):
        raise ValueError(f"{caller}: {name} must be two positive ints (H, W), got "
                         f"{image_shape!r}")


def check_kernel_shape(kernel: Tensor, caller: str) -> None:
    if kernel.dim() != 2 or kernel.shape[0] == 0 or kernel.shape[1] == 0:
        raise ValueError(f"{caller}: kernel must be 2-D (kH, kW) with kH, kW >= 1, got shape "
                         f"{tuple(kernel.shape)}")


def check_arguments(x, kernel, image_shape, mode, method) -> Tuple[int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"toeplitz_conv2d: x must be a Tensor, got {type(x).__name__}")
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_conv2d: kernel must be a Tensor, got {type(kernel).__name__}")
    check_image_shape(image_shape, "toeplitz_conv2d")
    if mode not in MODES:
        raise ValueError(f"toeplitz_conv2d: mode must be one of {MODES}, got {mode!r}")
    check_method(method, "toeplitz_conv2d")
    check_kernel_shape(kernel, "toeplitz_conv2d")
    if x.dim() != 2:
        raise ValueError(f"toeplitz_conv2d: x must be 2-D (B, H*W), one flattened image a row, "
                         f"got shape {tuple(x.shape)}")
    h, w = image_shape
    if x.shape[1] != h * w:
        raise ValueError(f"toeplitz_conv2d: x.shape[1] ({x.shape[1]}) must equal H*W = {h * w} "
                         f"for image_shape {tuple(image_shape)}")
    check_float_dtype(x, "toeplitz_conv2d", "x")
    if kernel.dtype != x.dtype:
        raise TypeError(f"toeplitz_conv2d: kernel dtype ({kernel.dtype}) must match x's "
                        f"({x.dtype})")
    if kernel.device != x.device:
        raise ValueError(f"toeplitz_conv2d: kernel is on {kernel.device} but x is on {x.device}")
    kh, kw = kernel.shape
    if mode == "valid" and (kh > h or kw > w):
        raise ValueError(f"toeplitz_conv2d: mode 'valid' needs a kernel no larger than the image "
                         f"in every dimension, got kernel {tuple(kernel.shape)} for image_shape "
                         f"{tuple(image_shape)}")
    return output_shape(image_shape, kernel.shape, mode)


def dense_convolution(x: Tensor, kernel: Tensor, image_shape, mode: str,
                      out_shape: Tuple[int, int]) -> Tensor:
    """Dense input: a true convolution through F.conv2d (correlation with the flipped
    kernel), padded so that output pixel i is full-convolution pixel i + offset."""
    (h, w), (kh, kw) = image_shape, kernel.shape
    offset = geometry(image_shape, kernel.shape, mode)[1]
    before = (kh - 1 - offset[0], kw - 1 - offset[1])
    after = (out_shape[0] + kh - 1 - h - before[0], out_shape[1] + kw - 1 - w - before[1])
    images = F.pad(x.reshape(-1, 1, h, w), (before[1], after[1], before[0], after[0]))
    out = F.conv2d(images, kernel.flip(0, 1).reshape(1, 1, kh, kw))
    return out.reshape(x.shape[0], out_shape[0] * out_shape[1])


def toeplitz_matrix(kernel: Tensor, image_shape: Sequence[int], mode: str = "same") -> Tensor:
    """T, the doubly-block-Toeplitz matrix of ``kernel``: sparse CSR ``(H*W, H_out*W_out)`` with
    sorted int64 columns such that ``toeplitz_conv2d(x, kernel, image_shape, mode)`` equals
    ``x @ T`` for every batch ``x``. Every tap landing inside the output is stored (kernel zeros
    included). Differentiable w.r.t. ``kernel``. It holds up to ``H*W*kH*kW`` entries: meant
    for frames small enough to keep one per kernel."""
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_matrix: kernel must be a Tensor, got {type(kernel).__name__}")
    if kernel.dim() != 2:
        raise ValueError(f"toeplitz_matrix: kernel must be 2-D (kH, kW), got shape "
                         f"{tuple(kernel.shape)}")
    if mode not in MODES:
        raise ValueError(f"toeplitz_matrix: mode must be one of {MODES}, got {mode!r}")
    check_image_shape(image_shape, "toeplitz_matrix")
    h, w = image_shape
    out_h, out_w = output_shape(image_shape, kernel.shape, mode)
    t_crow, t_col, t_values = torch.ops.torch_sparse_conv.toeplitz_matrix(
        kernel, [int(h), int(w)], mode)
    return torch.sparse_csr_tensor(t_crow, t_col, t_values, size=(h * w, out_h * out_w),
                                   check_invariants=False)  # built valid by the operator


def _as_csr_parts(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    if x.layout == torch.sparse_coo:
        x = x.coalesce().to_sparse_csr()
    if x.layout != torch.sparse_csr:
        raise TypeError(f"toeplitz_conv2d: x must be dense, sparse CSR or sparse COO, got layout "
                        f"{x.layout}")
    return x.crow_indices().to(torch.int64), x.col_indices().to(torch.int64), x.values()


def sparse_convolution(x: Tensor, kernel: Tensor, image_shape, mode: str, method: str,
                       out_shape: Tuple[int, int],
                       matrix: Optional[ToeplitzMatrix] = None) -> Tensor:
    """Sparse x, arguments already checked. With ``matrix`` (T of this kernel, image_shape and
    mode) and method 'precomputed', the kept T is used instead of building one."""
    crow, col, values = _as_csr_parts(x)
    ops = torch.ops.torch_sparse_conv
    if method == "precomputed" and matrix is not None:
        out_crow, out_col, out_values = ops.toeplitz_conv2d_precomputed(
            crow, col, values, kernel, list(image_shape), mode, *matrix)
    else:
        out_crow, out_col, out_values = ops.toeplitz_conv2d(
            crow, col, values, kernel, list(image_shape), mode, method)
    return torch.sparse_csr_tensor(out_crow, out_col, out_values,
                                   size=(x.shape[0], out_shape[0] * out_shape[1]),
                                   check_invariants=False)  # built valid by the operator


def toeplitz_conv2d(x: Tensor, kernel: Tensor, image_shape: Sequence[int], mode: str = "same",
                    method: str = "auto") -> Tensor:
    """Convolves every image of a batch with ``kernel``, like ``scipy.signal.convolve2d``.

    Args:
        x: ``(B, H*W)``, one C-order flattened image a row: a sparse CSR tensor (also sparse
            COO, converted; duplicate entries are summed), or a dense tensor (dense result).
            float32, float64, float16 or bfloat16 (the last two accumulated in float32).
        kernel: dense ``(kH, kW)``, same dtype. A true convolution: the kernel is flipped.
        image_shape: ``(H, W)``.
        mode: ``'full'``, ``'same'`` (centred like scipy, also for even kernels) or ``'valid'``.
        method: ``'auto'`` (= ``'direct'``, the faster one on every cell measured, see
            BENCHMARKS.md), ``'direct'`` (CPU: per image, only the output rows the image
            reaches; exact-size output; memory bounded by the image's own work) or
            ``'precomputed'`` (``x @ T`` with T from :func:`toeplitz_matrix`, built on every
            call here; :class:`ToeplitzConv2d` keeps it). Dense ``x`` always runs a dense
            convolution.

    Returns:
        ``(B, H_out*W_out)``: sparse CSR with sorted int64 columns for sparse ``x`` (an output
        pixel is stored when the kernel's footprint of a stored input entry covers it), dense
        for dense ``x``. Differentiable w.r.t. ``kernel`` and ``x``'s values.
    """
    out_shape = check_arguments(x, kernel, image_shape, mode, method)
    if x.layout == torch.strided:
        return dense_convolution(x, kernel, image_shape, mode, out_shape)
    return sparse_convolution(x, kernel, image_shape, mode, method, out_shape)


# The CPU kernel of ``_toeplitz_conv2d_scipy`` on scipy's CSR arrays, for compat: numpy in
# (indptr, indices: int32 or int64; data, kernel: float32 or float64; read where they are,
# strided ones copied), numpy out, owning the kernel's buffers; scipy's conventions (int32
# indices when they fit, exact zeros not stored). Arguments:
# (indptr, indices, data, kernel, H, W, mode) -> (indptr, indices, data).
toeplitz_conv2d_scipy_arrays = _C._toeplitz_conv2d_scipy_numpy
