"""Drop-in replacements with the names and signatures of what users come from:

* the sparse-filter unfold recipe (shared/seeds/sparse_filter_unfold_recipe.txt):
  ``sparse_conv2d``, ``sparse_conv2d_unfold``, ``sparse_conv2d_batch``;
* the ``sparse_convolution`` package: ``Toeplitz_convolution2d``.

For the recipe functions:

``indices`` are flat positions into ``C_in * kH * kW`` that every output channel keeps; the
filter's other taps are treated as pruned. As published, the recipe multiplies a
``(C_out, len(indices))`` matrix by the full ``(C_in*kH*kW, L)`` unfold, which fails; these
return the true convolution, computed by this package's sparse-filter operator.

numpy and scipy, which ``Toeplitz_convolution2d`` takes and returns, are imported where it
runs: ``import torch_sparse_conv`` (which imports this module) needs neither, and the package
lists them as its ``compat`` extra (``pip install torch_sparse_conv[compat]``).
"""
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import Tensor

# Under private names: compat re-exports nothing of the families (its own sparse_conv2d and
# the recipe's argument sparse_filter have the recipe's names).
from . import sparse_filter as _sparse_filter
from . import toeplitz as _toeplitz

if TYPE_CHECKING:  # for the annotations only (the package ships py.typed)
    import numpy


def _masked_filter(sparse_filter: Tensor, indices) -> Tensor:
    if not isinstance(sparse_filter, Tensor) or sparse_filter.dim() != 4:
        raise ValueError("sparse_filter must be a 4-D (C_out, C_in, kH, kW) tensor")
    taps = sparse_filter[0].numel()
    index = torch.as_tensor(indices, dtype=torch.long, device=sparse_filter.device).reshape(-1)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= taps):
        raise ValueError(f"indices must lie in [0, C_in*kH*kW) = [0, {taps})")
    mask = torch.zeros(taps, dtype=torch.bool, device=sparse_filter.device)
    mask[index] = True
    return sparse_filter * mask.view(1, *sparse_filter.shape[1:])


def _check_output_shape(out: Tensor, output_shape: Sequence[int]) -> Tensor:
    if tuple(out.shape[-2:]) != tuple(output_shape):
        raise ValueError(f"output_shape {tuple(output_shape)} does not match the convolution's "
                         f"output size {tuple(out.shape[-2:])}")
    return out


def sparse_conv2d(input_tensor: Tensor, sparse_filter: Tensor, indices, output_shape,
                  stride=1, padding=0) -> Tensor:
    """``(C_in, H, W)`` input -> ``(C_out, H_out, W_out)``, keeping the taps in ``indices``."""
    if input_tensor.dim() != 3:
        raise ValueError("input_tensor must be 3-D (C_in, H, W)")
    out = sparse_conv2d_impl(input_tensor.unsqueeze(0), sparse_filter, indices, stride, padding)
    return _check_output_shape(out.squeeze(0), output_shape)


def sparse_conv2d_unfold(input_tensor: Tensor, sparse_filter: Tensor, indices, output_shape,
                         stride=1, padding=0) -> Tensor:
    """The recipe's unfold variant: same contract as :func:`sparse_conv2d`, computed with the
    'unfold' method (im2col of the kept taps only, then a GEMM)."""
    if input_tensor.dim() != 3:
        raise ValueError("input_tensor must be 3-D (C_in, H, W)")
    out = sparse_conv2d_impl(input_tensor.unsqueeze(0), sparse_filter, indices, stride, padding,
                             method="unfold")
    return _check_output_shape(out.squeeze(0), output_shape)


def sparse_conv2d_batch(input_tensor: Tensor, sparse_filter: Tensor, indices, output_shape,
                        stride=1, padding=0) -> Tensor:
    """``(B, C_in, H, W)`` input -> ``(B, C_out, H_out, W_out)``."""
    if input_tensor.dim() != 4:
        raise ValueError("input_tensor must be 4-D (B, C_in, H, W)")
    out = sparse_conv2d_impl(input_tensor, sparse_filter, indices, stride, padding)
    return _check_output_shape(out, output_shape)


def sparse_conv2d_impl(x: Tensor, sparse_filter: Tensor, indices, stride, padding,
                       method: str = "auto") -> Tensor:
    weight = _masked_filter(sparse_filter, indices).to(x.dtype)
    return _sparse_filter.sparse_conv2d(x, weight, None, stride, padding, 1, 1, method)


__all__ = ["sparse_conv2d", "sparse_conv2d_unfold", "sparse_conv2d_batch",
           "Toeplitz_convolution2d"]


_MODES = _toeplitz.MODES
_CPU = torch.device("cpu")


def _scipy_csr_matrix(data, indices, indptr, shape):
    """``scipy.sparse.csr_matrix((data, indices, indptr), shape)`` for arrays this package
    wrote, valid by construction (sorted, in range, scipy's index dtype): without the
    constructor's checks and index-dtype scan, which cost more than a batch-1 convolution
    (about 9 us of a 20 us call). It fills the five attributes scipy's own constructor sets;
    where that layout differs (another scipy version), it calls the constructor."""
    import scipy.sparse

    global _CSR_FIELDS
    if _CSR_FIELDS is None:
        probe = scipy.sparse.csr_matrix((data[:0], indices[:0], indptr[:1]), shape=(0, 1))
        layout_known = (set(vars(probe)) == {"_shape", "maxprint", "indices", "indptr", "data"}
                        and scipy.sparse.csr_matrix.__new__ is object.__new__)
        _CSR_FIELDS = {"maxprint": probe.maxprint} if layout_known else {}
    if not _CSR_FIELDS:
        return scipy.sparse.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    matrix = object.__new__(scipy.sparse.csr_matrix)
    matrix.__dict__ = {"_shape": (int(shape[0]), int(shape[1])),
                       "maxprint": _CSR_FIELDS["maxprint"], "indices": indices,
                       "indptr": indptr, "data": data}
    return matrix


_CSR_FIELDS = None  # scipy's csr_matrix layout, probed on first use


def _tensor_of(array: "numpy.ndarray") -> Tensor:
    """A tensor sharing the array's memory, or a copy where torch can't share it (negative
    strides, which numpy allows even on arrays it calls contiguous, such as one element)."""
    if any(stride < 0 for stride in array.strides) or not array.flags.c_contiguous:
        array = array.copy()
    return torch.from_numpy(array)


class ValidModeKernelTooLarge(AssertionError, ValueError):
    """Mode 'valid' with a kernel larger than the image. sparse_convolution raises it as an
    AssertionError when the object is built; it is also a ValueError, as this package's other
    argument errors are, so either ``except`` clause catches it."""


def _check_kernel_fits(mode: str, k_shape, x_shape) -> None:
    """Mode 'valid' needs the kernel no larger than the image (checked where the package
    checks it: at construction, and at a call given mode='valid')."""
    if mode == "valid" and (k_shape[0] > x_shape[0] or k_shape[1] > x_shape[1]):
        raise ValidModeKernelTooLarge(
            "x must be larger than k in both dimensions for mode='valid'")


def output_format(method: str, backend, batching: bool) -> Optional[str]:
    """The scipy sparse format sparse_convolution 0.4.2 returns for sparse input, by method,
    backend (None: its default, numba for 'direct' and 'gather_scatter', else numpy) and
    batching, as measured against the package: 'precomputed' on numpy gives CSC; an unbatched
    call of 'direct' or of any torch backend gives scipy's reshape of the one-row CSR result
    (None here: COO, or that CSR row itself when the output has one row); every other call
    CSR."""
    if method == "precomputed" and backend in (None, "numpy"):
        return "csc"
    if not batching and (method == "direct" or backend == "torch"):
        return None
    return "csr"


class Toeplitz_convolution2d:  # noqa: N801  (the sparse_convolution package's name)
    """Drop-in for ``sparse_convolution.Toeplitz_convolution2d`` (0.4): same constructor, same
    ``__call__``, numpy / scipy.sparse in, the same types and shapes out, computed by this
    package's operators.

    ``method='precomputed'`` (on CPU) builds T (:func:`torch_sparse_conv.toeplitz_matrix`) on
    the first call and keeps it for later calls with the same mode (rebuilt if ``_kernel``
    changes in place); every other method runs ``'auto'``, which is the direct kernel: it was
    faster than the kept T in every cell measured (BENCHMARKS.md). ``backend``,
    ``max_buffer_bytes`` and ``verbose`` are accepted for compatibility. ``device`` ('cpu' or
    'cuda') picks where it runs. As in the package, outputs that are exactly zero are not
    stored, indices are int32 when the output's size allows, and a sparse result has the
    package's format for the method and backend given (:func:`output_format`).
    """

    METHODS = ("direct", "precomputed", "lazy", "gather_scatter")

    def __init__(self, x_shape, k, mode: str = "same", dtype=None, verbose=False,
                 method: str = "direct", max_buffer_bytes: int = 256 * 1024 * 1024,
                 backend=None, device=None):
        if mode not in _MODES:
            raise ValueError(f"mode must be 'full', 'same' or 'valid', got {mode!r}")
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        import numpy as np

        k = np.asarray(k)
        if k.ndim != 2 or 0 in k.shape:
            raise ValueError(f"k must be a 2-D array with at least one row and column, got "
                             f"shape {k.shape}")
        _toeplitz.check_image_shape(x_shape, "Toeplitz_convolution2d", "x_shape")
        self.x_shape = (int(x_shape[0]), int(x_shape[1]))
        _check_kernel_fits(mode, k.shape, self.x_shape)
        self.k = k.copy()
        self.mode = mode
        self.method = method
        self.backend = backend
        self.dtype = np.dtype(k.dtype if dtype is None else dtype)
        if self.dtype.char not in "fd":  # float32, float64
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.device = _CPU if device is None else torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} asks for a CUDA GPU, but this machine has "
                               "none that torch can use (torch.cuda.is_available() is False)")
        # A copy in the working dtype, so later edits of k or self.k do not reach it. The CPU
        # kernel reads it as it is; the tensor _kernel, made when first needed (it costs a
        # visible part of a batch-1 call), shares its memory on the CPU.
        self._kernel_array = np.array(self.k, dtype=self.dtype, order="C")
        self._kernel_tensor = None
        self._matrices = {}  # mode -> _toeplitz.MatrixCache, for method 'precomputed'

    @property
    def _kernel(self) -> torch.Tensor:
        """The kernel as a tensor on ``device`` (on the CPU, a view of ``_kernel_array``)."""
        if self._kernel_tensor is None:
            kernel = torch.from_numpy(self._kernel_array)
            self._kernel_tensor = kernel if self.device.type == "cpu" else kernel.to(self.device)
        return self._kernel_tensor

    def _output_shape(self, mode: str):
        """(H_out, W_out) for ``mode``, checked against the object's current x_shape and k
        (worked out on every call: a kept copy would miss a later assignment to either)."""
        if mode not in _MODES:
            raise ValueError(f"mode must be 'full', 'same' or 'valid', got {mode!r}")
        _check_kernel_fits(mode, self.k.shape, self.x_shape)
        return _toeplitz.output_shape(self.x_shape, self.k.shape, mode)

    def __call__(self, x, batching: bool = True, mode=None):
        import numpy as np
        import scipy.sparse

        sparse = scipy.sparse.issparse(x)
        if not sparse:
            x = np.asarray(x)
            if x.dtype.kind not in "biuf":
                raise TypeError("x must be a scipy.sparse matrix or a real numeric array, got "
                                f"{type(x).__name__} of dtype {x.dtype}")
        mode = self.mode if mode is None else mode
        out_h, out_w = self._output_shape(mode)
        h, w = self.x_shape
        shape = x.shape
        if batching:
            if len(shape) != 2 or shape[1] != h * w:
                raise ValueError(f"When batching=True, x.shape[1] ({shape[-1]}) must equal "
                                 f"x_shape[0]*x_shape[1] ({h * w})")
        elif tuple(shape) != (h, w):
            raise ValueError(f"When batching=False, x.shape ({tuple(shape)}) must equal "
                             f"x_shape ({self.x_shape})")
        rows = shape[0] if batching else 1
        if not sparse:
            dense = torch.as_tensor(np.asarray(x, dtype=self.dtype).reshape(rows, h * w),
                                    device=self.device)
            out = _toeplitz.toeplitz_conv2d(dense, self._kernel, self.x_shape, mode)
            out = out.cpu().numpy()
            return out.reshape(out_h, out_w) if not batching else out
        # No copy for CSR input; unsorted or duplicate entries are fine for the kernels.
        csr = x if batching and x.format == "csr" else (
            x.reshape(1, h * w) if not batching else x).tocsr()
        if csr.indptr.shape != (rows + 1,) or csr.indices.shape != csr.data.shape:
            raise ValueError(f"x is not a valid CSR matrix: indptr has {csr.indptr.shape[0]} "
                             f"entries for {rows} rows, indices {csr.indices.shape[0]} and data "
                             f"{csr.data.shape[0]}")
        data = csr.data if csr.data.dtype == self.dtype else csr.data.astype(self.dtype)
        if self.device.type == "cpu" and self.method != "precomputed":
            # _toeplitz_conv2d_scipy's kernel on scipy's arrays, shared, not copied.
            out_crow, out_col, out_values = _toeplitz.toeplitz_conv2d_scipy_arrays(
                csr.indptr, csr.indices, data, self._kernel_array, h, w, mode)
            result = _scipy_csr_matrix(out_values, out_col, out_crow, (rows, out_h * out_w))
        else:
            crow, col = _tensor_of(csr.indptr), _tensor_of(csr.indices)
            result = self._call_operator(crow, col, _tensor_of(data), mode, rows,
                                         out_h * out_w)
        if not batching:  # as the package: scipy's reshape of the one-row result
            result = result.reshape(out_h, out_w)
        fmt = output_format(self.method, self.backend, batching)
        return result if fmt is None or fmt == result.format else result.asformat(fmt)

    def _call_operator(self, crow, col, values, mode, rows, out_pixels):
        """The public operators (any device, T kept for 'precomputed'), converted to scipy's
        conventions here: int32 indices when they fit, exact zeros dropped."""
        import scipy.sparse

        crow, col = crow.to(self.device, torch.int64), col.to(self.device, torch.int64)
        values, ops = values.to(self.device), torch.ops.torch_sparse_conv
        if self.method == "precomputed":
            matrix = self._matrices.setdefault(mode, _toeplitz.MatrixCache()).get(
                self._kernel, self.x_shape, mode)
            out_crow, out_col, out_values = ops.toeplitz_conv2d_precomputed(
                crow, col, values, self._kernel, list(self.x_shape), mode, *matrix)
        else:
            out_crow, out_col, out_values = ops.toeplitz_conv2d(
                crow, col, values, self._kernel, list(self.x_shape), mode, "auto")
        data = out_values.cpu().numpy()
        if max(out_pixels, out_values.numel()) < 2**31:
            # scipy's own index type when it fits: it would otherwise scan and convert.
            out_col, out_crow = out_col.to(torch.int32), out_crow.to(torch.int32)
        result = scipy.sparse.csr_matrix(
            (data, out_col.cpu().numpy(), out_crow.cpu().numpy()),
            shape=(rows, out_pixels), copy=False)
        if not data.all():  # the package stores no exact zeros
            result.eliminate_zeros()
        return result
