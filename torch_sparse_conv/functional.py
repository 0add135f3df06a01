"""The functions of both families in one place, as ``torch.nn.functional`` gathers torch's:
:func:`sparse_conv2d` and the packing functions from :mod:`.sparse_filter`,
:func:`toeplitz_conv2d` and :func:`toeplitz_matrix` from :mod:`.toeplitz`."""
from .sparse_filter.functional import (
    pack_sparse_filter,
    sparse_conv2d,
    sparse_conv2d_packed,
    unpack_sparse_filter,
)
from .toeplitz.functional import toeplitz_conv2d, toeplitz_matrix

__all__ = ["pack_sparse_filter", "sparse_conv2d", "sparse_conv2d_packed", "toeplitz_conv2d",
           "toeplitz_matrix", "unpack_sparse_filter"]
