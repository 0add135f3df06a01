"""Drop-in versions of the functions from the sparse-filter unfold recipe
(shared/seeds/sparse_filter_unfold_recipe.txt), with its names and signatures.

``indices`` are flat positions into ``C_in * kH * kW`` that every output channel keeps; the
filter's other taps are treated as pruned. As published, the recipe multiplies a
``(C_out, len(indices))`` matrix by the full ``(C_in*kH*kW, L)`` unfold, which fails; these
return the true convolution, computed by this package's sparse-filter operator.
"""
from typing import Sequence

import torch
from torch import Tensor

from . import functional as _functional


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
    return _functional.sparse_conv2d(x, weight, None, stride, padding, 1, 1, method)


__all__ = ["sparse_conv2d", "sparse_conv2d_unfold", "sparse_conv2d_batch"]
