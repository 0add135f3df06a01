"""Sparse-input 2-D convolution: batches of sparse images convolved with a small dense kernel,
with exactly ``scipy.signal.convolve2d``'s semantics, output kept sparse."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _library

_library.load()

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


def _check_method(method, caller: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{caller}: method must be one of {', '.join(map(repr, METHODS))}, "
                         f"got {method!r}")


def _is_positive_int(value) -> bool:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return False
    return value.__index__() > 0


def _check_image_shape(image_shape, caller: str, name: str = "image_shape") -> None:
    if (not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 2
            or not all(_is_positive_int(s) for s in image_shape)):
        raise ValueError(f"{caller}: {name} must be two positive ints (H, W), got "
                         f"{image_shape!r}")


def _check_kernel_shape(kernel: Tensor, caller: str) -> None:
    if kernel.dim() != 2 or kernel.shape[0] == 0 or kernel.shape[1] == 0:
        raise ValueError(f"{caller}: kernel must be 2-D (kH, kW) with kH, kW >= 1, got shape "
                         f"{tuple(kernel.shape)}")


def _check_arguments(x, kernel, image_shape, mode, method) -> Tuple[int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"toeplitz_conv2d: x must be a Tensor, got {type(x).__name__}")
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_conv2d: kernel must be a Tensor, got {type(kernel).__name__}")
    _check_image_shape(image_shape, "toeplitz_conv2d")
    if mode not in MODES:
        raise ValueError(f"toeplitz_conv2d: mode must be one of {MODES}, got {mode!r}")
    _check_method(method, "toeplitz_conv2d")
    _check_kernel_shape(kernel, "toeplitz_conv2d")
    if x.dim() != 2:
        raise ValueError(f"toeplitz_conv2d: x must be 2-D (B, H*W), one flattened image a row, "
                         f"got shape {tuple(x.shape)}")
    h, w = image_shape
    if x.shape[1] != h * w:
        raise ValueError(f"toeplitz_conv2d: x.shape[1] ({x.shape[1]}) must equal H*W = {h * w} "
                         f"for image_shape {tuple(image_shape)}")
    half = x.dtype in (torch.float16, torch.bfloat16)
    if x.dtype not in (torch.float32, torch.float64) and not (half and x.is_cuda):
        raise TypeError("toeplitz_conv2d: x must be float32 or float64 (float16 and bfloat16 "
                        f"on CUDA only), got {x.dtype} on {x.device}")
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


def _dense_convolution(x: Tensor, kernel: Tensor, image_shape, mode: str,
                       out_shape: Tuple[int, int]) -> Tensor:
    """Dense input: a true convolution through F.conv2d (correlation with the flipped
    kernel), padded so that output pixel i is full-convolution pixel i + offset."""
    (h, w), (kh, kw) = image_shape, kernel.shape
    offset = {"full": (0, 0), "same": ((kh - 1) // 2, (kw - 1) // 2),
              "valid": (kh - 1, kw - 1)}[mode]
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
    _check_image_shape(image_shape, "toeplitz_matrix")
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


def _sparse_toeplitz_conv2d(x: Tensor, kernel: Tensor, image_shape, mode: str, method: str,
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
            float32 or float64.
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
    out_shape = _check_arguments(x, kernel, image_shape, mode, method)
    if x.layout == torch.strided:
        return _dense_convolution(x, kernel, image_shape, mode, out_shape)
    return _sparse_toeplitz_conv2d(x, kernel, image_shape, mode, method, out_shape)


class _MatrixCache:
    """One T kept for a kernel, rebuilt when anything it was built from differs: the kernel's
    values (compared bit for bit on every call, so an in-place change through an optimizer
    step, ``.data`` or numpy, which ``_version`` alone would miss, is seen; also -0.0 against
    0.0 and NaN payloads), its dtype, device or shape, or the image_shape or mode asked for.
    The kernel is small, so the comparison costs microseconds. What is kept is one tuple
    replaced whole, so threads sharing a module never see a T paired with another kernel."""

    def __init__(self):
        self._entry = None  # (key, bits of the kernel T was built from, T)

    @property
    def matrix(self) -> Optional[ToeplitzMatrix]:
        """The T kept now (None before the first call)."""
        return None if self._entry is None else self._entry[2]

    @staticmethod
    def _bits(kernel: Tensor) -> Tensor:
        integer = {8: torch.int64, 4: torch.int32, 2: torch.int16}[kernel.element_size()]
        return kernel.contiguous().view(integer)

    def get(self, kernel: Tensor, image_shape, mode: str) -> ToeplitzMatrix:
        kernel = kernel.detach()
        key = (kernel.dtype, kernel.device, tuple(kernel.shape), tuple(image_shape), mode)
        entry = self._entry
        if entry is None or entry[0] != key or not torch.equal(entry[1], self._bits(kernel)):
            bits = self._bits(kernel).clone()  # copied before T is built from the same values
            matrix = tuple(torch.ops.torch_sparse_conv.toeplitz_matrix(
                bits.view(kernel.dtype), list(image_shape), mode))
            entry = (key, bits, matrix)
            self._entry = entry
        return entry[2]


class ToeplitzConv2d(nn.Module):
    """Sparse-input convolution with a kernel of its own (a trainable Parameter, or a fixed
    buffer with ``trainable=False``). ``forward(x)`` is :func:`toeplitz_conv2d`."""

    def __init__(self, image_shape: Sequence[int], kernel: Tensor, mode: str = "same",
                 method: str = "auto", trainable: bool = True):
        super().__init__()
        if not isinstance(kernel, Tensor):
            raise TypeError(f"ToeplitzConv2d: kernel must be a Tensor, got "
                            f"{type(kernel).__name__}")
        _check_kernel_shape(kernel, "ToeplitzConv2d")
        if not kernel.is_floating_point():
            raise TypeError(f"ToeplitzConv2d: kernel must be a floating-point tensor, got "
                            f"{kernel.dtype}")
        _check_image_shape(image_shape, "ToeplitzConv2d")
        if mode not in MODES:
            raise ValueError(f"ToeplitzConv2d: mode must be one of {MODES}, got {mode!r}")
        _check_method(method, "ToeplitzConv2d")
        self.image_shape: List[int] = [int(s) for s in image_shape]
        self.mode = mode
        self.method = method
        if trainable:
            self.kernel = nn.Parameter(kernel.detach().clone())
        else:
            self.register_buffer("kernel", kernel.detach().clone())
        output_shape(self.image_shape, kernel.shape, mode)  # validates image_shape and mode
        self._matrix = _MatrixCache()

    @property
    def output_shape(self) -> Tuple[int, int]:
        return output_shape(self.image_shape, self.kernel.shape, self.mode)

    def forward(self, x: Tensor) -> Tensor:
        """:func:`toeplitz_conv2d`; with method 'precomputed' the module builds T once and
        keeps it while its kernel stays unchanged (gradients still reach the kernel)."""
        kernel = self.kernel
        out_shape = _check_arguments(x, kernel, self.image_shape, self.mode, self.method)
        if x.layout == torch.strided:
            return _dense_convolution(x, kernel, self.image_shape, self.mode, out_shape)
        matrix = None
        if self.method == "precomputed":
            matrix = self._matrix.get(kernel, self.image_shape, self.mode)
        return _sparse_toeplitz_conv2d(x, kernel, self.image_shape, self.mode, self.method,
                                       out_shape, matrix)

    def extra_repr(self) -> str:
        return (f"image_shape={tuple(self.image_shape)}, kernel_shape={tuple(self.kernel.shape)},"
                f" mode={self.mode!r}, method={self.method!r}")
