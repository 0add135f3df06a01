"""nn.Module of the sparse-input (Toeplitz) convolution: ToeplitzConv2d, and MatrixCache, the
kept T that it and compat's ``Toeplitz_convolution2d`` reuse while their kernel is unchanged."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .functional import (
    MODES,
    ToeplitzMatrix,
    check_arguments,
    check_image_shape,
    check_kernel_shape,
    check_method,
    dense_convolution,
    output_shape,
    sparse_convolution,
)


class MatrixCache:
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
        check_kernel_shape(kernel, "ToeplitzConv2d")
        if not kernel.is_floating_point():
            raise TypeError(f"ToeplitzConv2d: kernel must be a floating-point tensor, got "
                            f"{kernel.dtype}")
        check_image_shape(image_shape, "ToeplitzConv2d")
        if mode not in MODES:
            raise ValueError(f"ToeplitzConv2d: mode must be one of {MODES}, got {mode!r}")
        check_method(method, "ToeplitzConv2d")
        self.image_shape: List[int] = [int(s) for s in image_shape]
        self.mode = mode
        self.method = method
        if trainable:
            self.kernel = nn.Parameter(kernel.detach().clone())
        else:
            self.register_buffer("kernel", kernel.detach().clone())
        output_shape(self.image_shape, kernel.shape, mode)  # validates image_shape and mode
        self._matrix = MatrixCache()

    @property
    def output_shape(self) -> Tuple[int, int]:
        return output_shape(self.image_shape, self.kernel.shape, self.mode)

    def forward(self, x: Tensor) -> Tensor:
        """:func:`toeplitz_conv2d`; with method 'precomputed' the module builds T once and
        keeps it while its kernel stays unchanged (gradients still reach the kernel)."""
        kernel = self.kernel
        out_shape = check_arguments(x, kernel, self.image_shape, self.mode, self.method)
        if x.layout == torch.strided:
            return dense_convolution(x, kernel, self.image_shape, self.mode, out_shape)
        matrix = None
        if self.method == "precomputed":
            matrix = self._matrix.get(kernel, self.image_shape, self.mode)
        return sparse_convolution(x, kernel, self.image_shape, self.mode, self.method,
                                  out_shape, matrix)

    def extra_repr(self) -> str:
        return (f"image_shape={tuple(self.image_shape)}, kernel_shape={tuple(self.kernel.shape)},"
                f" mode={self.mode!r}, method={self.method!r}")
