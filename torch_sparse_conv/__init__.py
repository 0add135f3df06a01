"""torch_sparse_conv: sparse 2-D convolutions for PyTorch as registered ATen operators.

* Sparse-filter conv2d: pruned ``nn.Conv2d`` weights computed at the cost of the kept taps
  (:func:`sparse_conv2d`, :class:`SparseConv2d`, :func:`sparsify`, back with :func:`densify`
  and :func:`dense_state_dict`).
* Sparse-input (Toeplitz) conv2d: batches of sparse images convolved with a small dense
  kernel, ``scipy.signal.convolve2d`` semantics, output kept sparse (:func:`toeplitz_conv2d`,
  :func:`toeplitz_matrix`, :class:`ToeplitzConv2d`, :class:`compat.Toeplitz_convolution2d`).

Each family is a subpackage with the same shape, :mod:`.sparse_filter` and :mod:`.toeplitz`:
a ``functional`` module, an ``nn`` module and the operators' fake kernels. All operators live
under ``torch.ops.torch_sparse_conv``.
"""
from . import _library

_library.load()

from ._library import (  # noqa: E402
    cuda_version_compiled,
    empty_output_cache,
    empty_pattern_cache,
    library_path,
)
from .sparse_filter import (  # noqa: E402
    SparseConv2d,
    dense_state_dict,
    densify,
    pack_sparse_filter,
    sparse_conv2d,
    sparse_conv2d_packed,
    sparsify,
    unpack_sparse_filter,
)
from .toeplitz import ToeplitzConv2d, toeplitz_conv2d, toeplitz_matrix  # noqa: E402
from . import compat  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = [
    "cuda_version_compiled",
    "empty_output_cache",
    "empty_pattern_cache",
    "library_path",
    "SparseConv2d",
    "ToeplitzConv2d",
    "compat",
    "dense_state_dict",
    "densify",
    "pack_sparse_filter",
    "sparse_conv2d",
    "sparse_conv2d_packed",
    "sparsify",
    "toeplitz_conv2d",
    "toeplitz_matrix",
    "unpack_sparse_filter",
]
