"""Sparse-input (Toeplitz) conv2d: batches of sparse images convolved with a small dense
kernel, ``scipy.signal.convolve2d`` semantics, output kept sparse.

* :mod:`.functional`: :func:`toeplitz_conv2d`, :func:`toeplitz_matrix`, :func:`output_shape`;
  for this package's own modules: :func:`geometry` (the mode -> output shape and offset rule),
  :func:`check_image_shape` and :func:`toeplitz_conv2d_scipy_arrays` (the CPU kernel on
  scipy's arrays, which ``compat`` calls).
* :mod:`.nn`: :class:`ToeplitzConv2d`, and :class:`MatrixCache` (one kept T, rebuilt when its
  kernel changes), which ``compat`` also keeps.
* ``_fake``: the operators' fake (meta) kernels, registered by ``_library.load()``.
"""
from .functional import (
    METHODS,
    MODES,
    ToeplitzMatrix,
    check_image_shape,
    geometry,
    output_shape,
    toeplitz_conv2d,
    toeplitz_conv2d_scipy_arrays,
    toeplitz_matrix,
)
from .nn import MatrixCache, ToeplitzConv2d

__all__ = [
    "METHODS",
    "MODES",
    "MatrixCache",
    "ToeplitzConv2d",
    "ToeplitzMatrix",
    "check_image_shape",
    "geometry",
    "output_shape",
    "toeplitz_conv2d",
    "toeplitz_conv2d_scipy_arrays",
    "toeplitz_matrix",
]
