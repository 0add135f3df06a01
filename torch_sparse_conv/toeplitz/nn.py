"""nn.Module of the sparse-input (Toeplitz) convolution: ToeplitzConv2d, and MatrixCache, the
kept T that it and compat's ``Toeplitz_convolution2d`` reuse while their kernel is unchanged.

Both script: a scripted ToeplitzConv2d keeps its T in its own MatrixCache (compiled as a
TorchScript class), also once saved and loaded, in Python or C++."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .functional import (
    ToeplitzMatrix,
    check_arguments,
    check_image_shape,
    check_kernel_shape,
    check_method,
    check_mode,
    convolve_arrays,
    dense_convolution,
    output_shape,
    sparse_convolution,
)


# What a MatrixCache keeps: (a copy of the kernel T was built from, image_shape, mode, T).
_Entry = Tuple[Tensor, List[int], str, ToeplitzMatrix]


def _built_from(entry: _Entry, kernel: Tensor, image_shape: List[int], mode: str) -> bool:
    """Whether the T of ``entry`` is the one of ``kernel``, ``image_shape`` and ``mode``. The
    kernel's values are compared as T would hold them: equal and of equal signs (-0.0 is not
    0.0). A NaN equals nothing, so a kernel holding one counts as changed on every call (T is
    rebuilt, its NaNs exact). Bits are not compared directly as TorchScript has no
    ``Tensor.view(dtype)`` (pytorch/pytorch#47964)."""
    kept, kept_image_shape, kept_mode, _ = entry
    return (kept_image_shape == image_shape and kept_mode == mode
            and kept.dtype == kernel.dtype and kept.device == kernel.device
            and kept.shape == kernel.shape and torch.equal(kept, kernel)
            and torch.equal(torch.signbit(kept), torch.signbit(kernel)))


class MatrixCache:
    """One T kept for a kernel, rebuilt when anything it was built from differs: the kernel's
    values (compared on every call, so an in-place change through an optimizer step,
    ``.data`` or numpy, which ``_version`` alone would miss, is seen; also -0.0 against 0.0; a
    kernel holding a NaN is never taken as unchanged), its dtype, device or shape, or the
    image_shape or mode asked for. The kernel is small, so the comparison costs microseconds.
    What is kept is one tuple replaced whole, so Python threads sharing a module never see a T
    paired with another kernel. Written in the Python that TorchScript compiles: a scripted
    ToeplitzConv2d keeps its MatrixCache; there the tuple is replaced without a lock, so a
    scripted module shared by C++ threads should make its first call, and any call after its
    kernel changed, on one thread."""

    def __init__(self):
        self._entry = torch.jit.annotate(Optional[_Entry], None)

    @property
    def matrix(self) -> Optional[ToeplitzMatrix]:
        """The T kept now (None before the first call)."""
        entry = self._entry
        return None if entry is None else entry[3]

    def get(self, kernel: Tensor, image_shape: List[int], mode: str) -> ToeplitzMatrix:
        kernel = kernel.detach()
        image_shape = [int(s) for s in image_shape]
        entry = self._entry
        if entry is not None and _built_from(entry, kernel, image_shape, mode):
            return entry[3]
        kept = kernel.clone(memory_format=torch.contiguous_format)  # copied before T is built
        matrix = torch.ops.torch_sparse_conv.toeplitz_matrix(kept, image_shape, mode)
        self._entry = (kept, image_shape, mode, matrix)
        return matrix


def _tracing() -> bool:
    """Whether this call is being recorded into a graph (torch.jit.trace, torch.compile,
    torch.export): then the graph builds T from the kernel on every run, as the functional
    does, rather than record the kept T as a constant of one kernel's values."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class ToeplitzConv2d(nn.Module):
    """Sparse-input convolution with a kernel of its own (a trainable Parameter, or a fixed
    buffer with ``trainable=False``). ``forward(x)`` is :func:`toeplitz_conv2d`;
    :meth:`forward_csr` is the same on a CSR batch's three arrays.

    It scripts (``torch.jit.script``), its kept T included. In a recorded graph
    (``torch.jit.trace``, ``torch.compile``, ``torch.export``) method 'precomputed' builds T on
    every run. ``torch.jit.trace`` of ``forward`` on a CSR batch records the batch size (and
    needs ``check_trace=False``: the trace checker cannot clone a CSR input); trace
    :meth:`forward_csr` for any batch. ``torch.export`` takes no sparse tensor in or out:
    export :meth:`forward_csr` (README, "Deploying a model")."""

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
        check_mode(mode, "ToeplitzConv2d")
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
        out_shape = check_arguments(x, self.kernel, self.image_shape, self.mode, self.method)
        if x.layout == torch.strided:
            return dense_convolution(x, self.kernel, self.image_shape, self.mode, out_shape)
        return sparse_convolution(x, self.kernel, self.image_shape, self.mode, self.method,
                                  out_shape, self._kept_matrix())

    @torch.jit.export
    def forward_csr(self, crow_indices: Tensor, col_indices: Tensor,
                    values: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` on a CSR batch ``(B, H*W)`` given as its three arrays, the result
        returned the same way: the ``(crow_indices, col_indices, values)`` of the CSR
        ``(B, H_out*W_out)`` output (int64 indices). For the graphs that cannot carry a sparse
        tensor, ``torch.export`` and AOTInductor (README, "Deploying a model"); the operator
        checks the arrays."""
        return convolve_arrays(crow_indices.to(torch.int64), col_indices.to(torch.int64),
                               values, self.kernel, self.image_shape, self.mode, self.method,
                               self._kept_matrix())

    def _kept_matrix(self) -> Optional[ToeplitzMatrix]:
        if self.method == "precomputed" and not _tracing():
            return self._matrix.get(self.kernel, self.image_shape, self.mode)
        return None

    def extra_repr(self) -> str:
        return (f"image_shape={tuple(self.image_shape)}, kernel_shape={tuple(self.kernel.shape)},"
                f" mode={self.mode!r}, method={self.method!r}")
