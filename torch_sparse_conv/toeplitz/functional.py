"""Functional API of the sparse-input (Toeplitz) convolution: batches of sparse images
convolved with a small dense kernel, with exactly ``scipy.signal.convolve2d``'s semantics,
output kept sparse.

Public: :func:`toeplitz_conv2d`, :func:`toeplitz_matrix`, :func:`output_shape`. For the
family's other modules (``nn``, ``_fake``) and ``compat``: :func:`geometry` (the mode rule),
the argument checks (:func:`check_arguments`, :func:`check_image_shape`,
:func:`check_kernel_shape`, :func:`check_method`), the two paths of the convolution
(:func:`dense_convolution`, :func:`sparse_convolution`, the latter on :func:`convolve_arrays`)
and :func:`toeplitz_conv2d_scipy_arrays`.

Everything that :func:`toeplitz_conv2d` and :class:`ToeplitzConv2d` call scripts
(``torch.jit.script``), the argument checks included: they are written in the Python that
TorchScript compiles (values quoted through ``_messages``, the choices read from functions, as
TorchScript reads no global tuple), and read the same in eager mode as they always have.
"""
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _C
from .._arguments import check_float_dtype
from .._messages import show, show_shape


def _modes() -> Tuple[str, str, str]:
    """The modes (:data:`MODES`), for the scriptable checks."""
    return ("full", "same", "valid")


def _methods() -> Tuple[str, str, str]:
    """The methods (:data:`METHODS`), for the scriptable checks."""
    return ("auto", "direct", "precomputed")


MODES = _modes()
METHODS = _methods()
# A kept T as the operators take it: (t_crow, t_col, t_values).
ToeplitzMatrix = Tuple[Tensor, Tensor, Tensor]


def _mode_error(caller: str, mode: str) -> str:
    return f"{caller}: mode must be one of {show(_modes())}, got {show(mode)}"


def output_shape(image_shape: List[int], kernel_shape: List[int],
                 mode: str) -> Tuple[int, int]:
    """(H_out, W_out) of ``scipy.signal.convolve2d(image, kernel, mode)``."""
    h, w = image_shape
    kh, kw = kernel_shape
    if mode == "full":
        return h + kh - 1, w + kw - 1
    if mode == "same":
        return h, w
    if mode == "valid":
        return h - kh + 1, w - kw + 1
    raise ValueError(_mode_error("toeplitz_conv2d", mode))


def geometry(image_shape: List[int], kernel_shape: List[int],
             mode: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((H_out, W_out), (top, left))``: the output shape, and where the output sits in the
    'full' convolution (output pixel ``(i, j)`` is its pixel ``(i + top, j + left)``). As in
    scipy, every mode's output is the centred part of the full one (the larger half of an odd
    surplus after it). The rule the C++ operators apply, written once on the Python side."""
    h, w = image_shape
    kh, kw = kernel_shape
    out_h, out_w = output_shape(image_shape, kernel_shape, mode)
    return (out_h, out_w), ((h + kh - 1 - out_h) // 2, (w + kw - 1 - out_w) // 2)


def check_mode(mode: str, caller: str) -> None:
    if mode not in _modes():
        raise ValueError(_mode_error(caller, mode))


def check_method(method: str, caller: str) -> None:
    if method not in _methods():
        raise ValueError(f"{caller}: method must be one of "
                         f"{', '.join([show(m) for m in _methods()])}, got {show(method)}")


def _is_positive_int(value: int) -> bool:
    """Whether ``value`` is an int above 0: a Python int or what has ``__index__`` (numpy's
    integers), bools excluded (TorchScript: an int by its annotation)."""
    if not torch.jit.is_scripting():
        if type(value) is int:  # the usual case, answered before the general one
            return value > 0
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            return False
        value = value.__index__()
    return value > 0


def check_image_shape(image_shape: List[int], caller: str, name: str = "image_shape") -> None:
    if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2  # torch.Size too
            or not (_is_positive_int(image_shape[0]) and _is_positive_int(image_shape[1]))):
        raise ValueError(f"{caller}: {name} must be two positive ints (H, W), got "
                         f"{show(image_shape)}")


def check_kernel_shape(kernel: Tensor, caller: str) -> None:
    if kernel.dim() != 2 or kernel.shape[0] == 0 or kernel.shape[1] == 0:
        raise ValueError(f"{caller}: kernel must be 2-D (kH, kW) with kH, kW >= 1, got shape "
                         f"{show_shape(kernel.shape)}")


def check_arguments(x: Tensor, kernel: Tensor, image_shape: List[int], mode: str,
                    method: str) -> Tuple[int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"toeplitz_conv2d: x must be a Tensor, got {type(x).__name__}")
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_conv2d: kernel must be a Tensor, got {type(kernel).__name__}")
    check_image_shape(image_shape, "toeplitz_conv2d")
    check_mode(mode, "toeplitz_conv2d")
    check_method(method, "toeplitz_conv2d")
    check_kernel_shape(kernel, "toeplitz_conv2d")
    if x.dim() != 2:
        raise ValueError(f"toeplitz_conv2d: x must be 2-D (B, H*W), one flattened image a row, "
                         f"got shape {show_shape(x.shape)}")
    h, w = image_shape
    if x.shape[1] != h * w:
        raise ValueError(f"toeplitz_conv2d: x.shape[1] ({x.shape[1]}) must equal H*W = {h * w} "
                         f"for image_shape {show_shape(image_shape)}")
    check_float_dtype(x, "toeplitz_conv2d", "x")
    if kernel.dtype != x.dtype:
        raise TypeError(f"toeplitz_conv2d: kernel dtype ({kernel.dtype}) must match x's "
                        f"({x.dtype})")
    if kernel.device != x.device:
        raise ValueError(f"toeplitz_conv2d: kernel is on {kernel.device} but x is on {x.device}")
    kh, kw = kernel.shape
    if mode == "valid" and (kh > h or kw > w):
        raise ValueError(f"toeplitz_conv2d: mode 'valid' needs a kernel no larger than the image "
                         f"in every dimension, got kernel {show_shape(kernel.shape)} for "
                         f"image_shape {show_shape(image_shape)}")
    return output_shape(image_shape, kernel.shape, mode)


def dense_convolution(x: Tensor, kernel: Tensor, image_shape: List[int], mode: str,
                      out_shape: Tuple[int, int]) -> Tensor:
    """Dense input: a true convolution through F.conv2d (correlation with the flipped
    kernel), padded so that output pixel i is full-convolution pixel i + offset."""
    h, w = image_shape
    kh, kw = kernel.shape
    offset = geometry(image_shape, kernel.shape, mode)[1]
    before = (kh - 1 - offset[0], kw - 1 - offset[1])
    after = (out_shape[0] + kh - 1 - h - before[0], out_shape[1] + kw - 1 - w - before[1])
    images = F.pad(x.reshape(-1, 1, h, w), [before[1], after[1], before[0], after[0]])
    out = F.conv2d(images, kernel.flip([0, 1]).reshape(1, 1, kh, kw))
    return out.reshape(x.shape[0], out_shape[0] * out_shape[1])


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: List[int]) -> Tensor:
    """A CSR tensor on arrays that an operator built valid: their invariants are not checked
    again. Differentiable w.r.t. ``values``. (Scripted, the constructor is the schema's: no
    ``check_invariants``, so it checks them only where
    ``torch.sparse.check_sparse_tensor_invariants`` is enabled; the dtype and device of
    ``values`` given, or it builds a tensor of the default ones; sparse_compressed_tensor, as
    the schema's sparse_csr_tensor has no gradient.)"""
    if torch.jit.is_scripting():
        return torch.sparse_compressed_tensor(crow, col, values, size, dtype=values.dtype,
                                              layout=torch.sparse_csr, device=values.device)
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def toeplitz_matrix(kernel: Tensor, image_shape: List[int], mode: str = "same") -> Tensor:
    """T, the doubly-block-Toeplitz matrix of ``kernel``: sparse CSR ``(H*W, H_out*W_out)`` with
    sorted int64 columns such that ``toeplitz_conv2d(x, kernel, image_shape, mode)`` equals
    ``x @ T`` for every batch ``x``. Every tap landing inside the output is stored (kernel zeros
    included). Differentiable w.r.t. ``kernel``. It holds up to ``H*W*kH*kW`` entries: meant
    for frames small enough to keep one per kernel."""
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_matrix: kernel must be a Tensor, got {type(kernel).__name__}")
    if kernel.dim() != 2:
        raise ValueError(f"toeplitz_matrix: kernel must be 2-D (kH, kW), got shape "
                         f"{show_shape(kernel.shape)}")
    check_mode(mode, "toeplitz_matrix")
    check_image_shape(image_shape, "toeplitz_matrix")
    h, w = int(image_shape[0]), int(image_shape[1])
    out_h, out_w = output_shape([h, w], kernel.shape, mode)
    t_crow, t_col, t_values = torch.ops.torch_sparse_conv.toeplitz_matrix(kernel, [h, w], mode)
    return _csr(t_crow, t_col, t_values, [h * w, out_h * out_w])


def _as_csr_parts(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    if x.layout == torch.sparse_coo:
        x = x.coalesce().to_sparse_csr()
    if x.layout != torch.sparse_csr:
        raise TypeError(f"toeplitz_conv2d: x must be dense, sparse CSR or sparse COO, got layout "
                        f"{x.layout}")
    crow, col = x.crow_indices(), x.col_indices()
    # .to() costs microseconds even when it returns self: a visible part of a batch-1 call.
    if crow.dtype != torch.int64:
        crow, col = crow.to(torch.int64), col.to(torch.int64)
    return crow, col, x.values()


def convolve_arrays(crow: Tensor, col: Tensor, values: Tensor, kernel: Tensor,
                    image_shape: List[int], mode: str, method: str,
                    matrix: Optional[ToeplitzMatrix] = None) -> ToeplitzMatrix:
    """The sparse convolution on a CSR batch's arrays (int64 indices), to the output's arrays
    ``(crow, col, values)``; the operator checks them. With ``matrix`` (T of this kernel,
    image_shape and mode) and method 'precomputed', the kept T is used instead of building
    one."""
    if method == "precomputed" and matrix is not None:
        t_crow, t_col, t_values = matrix
        return torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
            crow, col, values, kernel, list(image_shape), mode, t_crow, t_col, t_values)
    return torch.ops.torch_sparse_conv.toeplitz_conv2d(
        crow, col, values, kernel, list(image_shape), mode, method)


def _warn_batch_traced_as_constant(batch: int) -> None:
    warnings.warn(
        f"toeplitz_conv2d: torch.jit.trace records the shape of a sparse CSR result as a "
        f"constant (torch's sparse constructors take no traced sizes), so this trace returns "
        f"a ({batch}, H_out*W_out) tensor whatever the batch: run it on batches of {batch} "
        f"only, or trace ToeplitzConv2d.forward_csr (the CSR arrays in and out), or script the "
        f"module", torch.jit.TracerWarning, stacklevel=3)


def sparse_convolution(x: Tensor, kernel: Tensor, image_shape: List[int], mode: str,
                       method: str, out_shape: Tuple[int, int],
                       matrix: Optional[ToeplitzMatrix] = None) -> Tensor:
    """Sparse x, arguments already checked: :func:`convolve_arrays` on x's arrays, the result
    a CSR tensor."""
    if not torch.jit.is_scripting() and torch.jit.is_tracing():
        _warn_batch_traced_as_constant(x.shape[0])
    crow, col, values = _as_csr_parts(x)
    out_crow, out_col, out_values = convolve_arrays(crow, col, values, kernel, image_shape,
                                                    mode, method, matrix)
    return _csr(out_crow, out_col, out_values, [x.shape[0], out_shape[0] * out_shape[1]])


def toeplitz_conv2d(x: Tensor, kernel: Tensor, image_shape: List[int], mode: str = "same",
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
    if not torch.jit.is_scripting():
        if not torch.compiler.is_compiling():
            # The same operator in one C++ call, for eager calls on a CSR tensor whose
            # arguments pass every check below; None otherwise (_toeplitz_conv2d_csr).
            out = _C._toeplitz_conv2d_csr(x, kernel, image_shape, mode, method)
            if out is not None:
                return out
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
