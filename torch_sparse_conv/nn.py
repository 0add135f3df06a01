"""The modules of both families in one place, as ``torch.nn`` gathers torch's:
:class:`SparseConv2d` (and :func:`sparsify`) from :mod:`.sparse_filter`, :class:`ToeplitzConv2d`
from :mod:`.toeplitz`.

Also the import path that models saved whole (``torch.save(model)``) before the families
became subpackages refer to: they unpickle through it.
"""
from .sparse_filter.nn import (
    DEFAULT_MIN_SPARSITY,
    SparseConv2d,
    dense_state_dict,
    densify,
    sparsify,
)
from .toeplitz.nn import ToeplitzConv2d

__all__ = ["DEFAULT_MIN_SPARSITY", "SparseConv2d", "ToeplitzConv2d", "dense_state_dict",
           "densify", "sparsify"]
