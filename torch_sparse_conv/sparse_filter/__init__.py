"""Sparse-filter conv2d: pruned ``nn.Conv2d`` weights computed at the cost of the kept taps.

* :mod:`.functional`: :func:`sparse_conv2d` (``F.conv2d``'s arguments and result),
  :func:`pack_sparse_filter` / :func:`unpack_sparse_filter` and :func:`sparse_conv2d_packed`
  (a weight packed once), and the argument rules :func:`pair` and :func:`resolve_padding`.
* :mod:`.nn`: :class:`SparseConv2d` (a pruned ``nn.Conv2d``), :func:`sparsify` and back
  (:func:`densify`, :func:`dense_state_dict`).
* :mod:`.fold`: :func:`fold_batchnorm`, eval-mode batch norm folded into the convolution
  before it (``sparsify(..., fold_batchnorm=True)``).
* :mod:`.fuse`: :func:`fuse_epilogues`, the residual add and ReLU after a SparseConv2d
  applied in its call (``sparsify(..., fuse_epilogues=True)``).
* :mod:`.pooling`: :class:`ChannelsLastMaxPool2d`, ``nn.MaxPool2d`` for NCHW CPU tensors in
  inference by a one-pass kernel or through channels-last
  (``sparsify(..., pool_channels_last=True)``).
* ``_fake``: the operators' fake (meta) kernels, registered by ``_library.load()``.
"""
from .functional import (
    METHODS,
    PADDING_MODES,
    pack_sparse_filter,
    pair,
    resolve_padding,
    sparse_conv2d,
    sparse_conv2d_packed,
    unpack_sparse_filter,
)
from .fold import fold_batchnorm
from .pooling import ChannelsLastMaxPool2d, pool_channels_last
from .nn import DEFAULT_MIN_SPARSITY, SparseConv2d, dense_state_dict, densify, sparsify
from .fuse import fuse_epilogues

__all__ = [
    "ChannelsLastMaxPool2d",
    "DEFAULT_MIN_SPARSITY",
    "METHODS",
    "PADDING_MODES",
    "SparseConv2d",
    "dense_state_dict",
    "densify",
    "fold_batchnorm",
    "fuse_epilogues",
    "pack_sparse_filter",
    "pair",
    "pool_channels_last",
    "resolve_padding",
    "sparse_conv2d",
    "sparse_conv2d_packed",
    "sparsify",
    "unpack_sparse_filter",
]
