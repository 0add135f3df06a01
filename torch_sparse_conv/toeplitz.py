"""Sparse-input 2-D convolution: batches of sparse images convolved with a small dense kernel,
with exactly ``scipy.signal.convolve2d``'s semantics, output kept sparse."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _library

_library.load()

MODES = ("full", "same", "valid")
METHODS = ("auto", "direct", "precomputed")


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


def _check_arguments(x, kernel, image_shape, mode, method) -> Tuple[int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"toeplitz_conv2d: x must be a Tensor, got {type(x).__name__}")
    if not isinstance(kernel, Tensor):
        raise TypeError(f"toeplitz_conv2d: kernel must be a Tensor, got {type(kernel).__name__}")
    if (not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 2
            or not all(isinstance(s, int) and s > 0 for s in image_shape)):
        raise ValueError(f"toeplitz_conv2d: image_shape must be two positive ints (H, W), got "
                         f"{image_shape!r}")
    if mode not in MODES:
        raise ValueError(f"toeplitz_conv2d: mode must be one of {MODES}, got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"toeplitz_conv2d: method must be one of {METHODS}, got {method!r}")
    if kernel.dim() != 2:
        raise ValueError(f"toeplitz_conv2d: kernel must be 2-D (kH, kW), got shape "
                         f"{tuple(kernel.shape)}")
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
                         f"in every dimension, got kernel {tuple(kernel.shape)} for image "
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
        method: ``'auto'`` or ``'direct'`` (CPU: per image, only the output rows the image
            reaches; exact-size output; memory bounded by the image's own work).

    Returns:
        ``(B, H_out*W_out)``: sparse CSR with sorted int64 columns for sparse ``x`` (an output
        pixel is stored when the kernel's footprint of a stored input entry covers it), dense
        for dense ``x``. Differentiable w.r.t. ``kernel`` and ``x``'s values.
    """
    out_shape = _check_arguments(x, kernel, image_shape, mode, method)
    if x.layout == torch.strided:
        return _dense_convolution(x, kernel, image_shape, mode, out_shape)
    if x.layout == torch.sparse_coo:
        x = x.coalesce().to_sparse_csr()
    if x.layout != torch.sparse_csr:
        raise TypeError(f"toeplitz_conv2d: x must be dense, sparse CSR or sparse COO, got layout "
                        f"{x.layout}")
    crow = x.crow_indices().to(torch.int64)
    col = x.col_indices().to(torch.int64)
    out_crow, out_col, out_values = torch.ops.torch_sparse_conv.toeplitz_conv2d(
        crow, col, x.values(), kernel, list(image_shape), mode, method)
    return torch.sparse_csr_tensor(out_crow, out_col, out_values,
                                   size=(x.shape[0], out_shape[0] * out_shape[1]),
                                   check_invariants=False)  # built valid by the operator


class ToeplitzConv2d(nn.Module):
    """Sparse-input convolution with a kernel of its own (a trainable Parameter, or a fixed
    buffer with ``trainable=False``). ``forward(x)`` is :func:`toeplitz_conv2d`."""

    def __init__(self, image_shape: Sequence[int], kernel: Tensor, mode: str = "same",
                 method: str = "auto", trainable: bool = True):
        super().__init__()
        if not isinstance(kernel, Tensor) or kernel.dim() != 2:
            raise ValueError("ToeplitzConv2d: kernel must be a 2-D tensor (kH, kW)")
        if mode not in MODES:
            raise ValueError(f"ToeplitzConv2d: mode must be one of {MODES}, got {mode!r}")
        if method not in METHODS:
            raise ValueError(f"ToeplitzConv2d: method must be one of {METHODS}, got {method!r}")
        self.image_shape: List[int] = [int(s) for s in image_shape]
        self.mode = mode
        self.method = method
        if trainable:
            self.kernel = nn.Parameter(kernel.detach().clone())
        else:
            self.register_buffer("kernel", kernel.detach().clone())
        output_shape(self.image_shape, kernel.shape, mode)  # validates image_shape and mode

    @property
    def output_shape(self) -> Tuple[int, int]:
        return output_shape(self.image_shape, self.kernel.shape, self.mode)

    def forward(self, x: Tensor) -> Tensor:
        return toeplitz_conv2d(x, self.kernel, self.image_shape, self.mode, self.method)

    def extra_repr(self) -> str:
        return (f"image_shape={tuple(self.image_shape)}, kernel_shape={tuple(self.kernel.shape)},"
                f" mode={self.mode!r}, method={self.method!r}")
