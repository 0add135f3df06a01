"""Functional API of the sparse-filter convolution.

``sparse_conv2d`` takes a dense weight whose zeros are pruned taps and returns exactly what
``torch.nn.functional.conv2d`` returns, computing only the kept taps. ``sparse_conv2d_packed``
is the same operation on a weight packed once with ``pack_sparse_filter`` (what
``SparseConv2d`` stores). :func:`pair` and :func:`resolve_padding` are the argument rules the
``nn`` module applies too.

Everything here scripts (``torch.jit.script``), the argument checks included: they are
written in the Python that TorchScript compiles (values quoted through ``_messages``, the
choices read from functions, as TorchScript reads no global tuple), and read the same in
eager mode as they always have.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

from .._arguments import check_float_dtype
from .._messages import show, show_shape


def _methods() -> Tuple[str, str, str, str, str]:
    """The methods (:data:`METHODS`), for the scriptable checks."""
    return ("auto", "direct", "unfold", "dense", "spmm")


METHODS = _methods()
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

IntOrPair = Union[int, Tuple[int, int], List[int]]


def _as_list(value: Union[Tuple[int, int], List[int]]) -> List[int]:
    """A sequence as a list: one type for TorchScript to index."""
    if isinstance(value, list):
        return value
    return list(value)


def pair(value: IntOrPair, name: str) -> List[int]:
    """``[a, b]`` from an int ``a`` (``[a, a]``), a one-element or a two-element sequence of
    ints; TypeError for anything else than an int or a sequence, ValueError for a sequence
    of another length or of non-ints. Signs are the caller's to check."""
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):  # torch.Size too
        raise TypeError(f"sparse_conv2d: {name} must be an int or a pair of ints, got "
                        f"{show(value)}")
    if isinstance(value, int):
        return [value, value]
    values = _as_list(value)
    if len(values) == 1:
        return [int(values[0]), int(values[0])]
    if len(values) != 2 or not all([isinstance(v, int) and not isinstance(v, bool)
                                    for v in values]):
        raise ValueError(f"sparse_conv2d: {name} must be an int or a pair of ints, got "
                         f"{show(value)}")
    return [int(values[0]), int(values[1])]


def resolve_padding(padding: Union[IntOrPair, str], kernel_size: List[int], stride: List[int],
                    dilation: List[int]) -> Tuple[List[int], List[int]]:
    """Splits ``padding`` (int, pair, 'same' or 'valid') into a symmetric part and the extra
    right/bottom padding that 'same' needs for even effective kernels (as F.conv2d does)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0], [0, 0]
        if padding != "same":
            raise ValueError(f"sparse_conv2d: padding must be an int, a pair, 'same' or "
                             f"'valid', got {show(padding)}")
        if stride != [1, 1]:
            raise ValueError("sparse_conv2d: padding='same' is not supported for strided "
                             f"convolutions (stride={stride})")
        total = [d * (k - 1) for d, k in zip(dilation, kernel_size)]
        symmetric = [t // 2 for t in total]
        return symmetric, [t - 2 * s for t, s in zip(total, symmetric)]
    pad = pair(padding, "padding")
    if pad[0] < 0 or pad[1] < 0:
        raise ValueError(f"sparse_conv2d: padding must be non-negative, got {show(padding)}")
    return pad, [0, 0]


def pack_sparse_filter(weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Packs the nonzero taps of a dense ``(C_out, C_in/groups, kH, kW)`` weight as CSR over
    output channels: ``(row_ptr, col_idx, values)`` with int64 indices, columns indexing
    ``C_in/groups * kH * kW``."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"pack_sparse_filter: weight must be a Tensor, got {type(weight).__name__}")
    return torch.ops.torch_sparse_conv.pack_sparse_filter(weight.detach())


def unpack_sparse_filter(row_ptr: Tensor, col_idx: Tensor, values: Tensor,
                         weight_size: List[int]) -> Tensor:
    """The dense weight a packed filter stands for (differentiable w.r.t. ``values``)."""
    rows = weight_size[0]
    taps = weight_size[1] * weight_size[2] * weight_size[3]
    counts = row_ptr[1:] - row_ptr[:-1]
    row_of = torch.repeat_interleave(torch.arange(rows, device=row_ptr.device), counts)
    dense = values.new_zeros(rows * taps).index_add(0, row_of * taps + col_idx, values)
    return dense.view(weight_size)


def sparse_conv2d_packed(input: Tensor, row_ptr: Tensor, col_idx: Tensor, values: Tensor,
                         weight_size: List[int], bias: Optional[Tensor], stride: List[int],
                         padding: List[int], extra_padding: List[int], dilation: List[int],
                         groups: int, method: str = "auto",
                         padding_mode: str = "zeros", residual: Optional[Tensor] = None,
                         relu: bool = False) -> Tensor:
    """Convolution with a packed weight; arguments already normalised (see SparseConv2d).

    ``padding`` is symmetric; ``extra_padding`` is added on the right/bottom only ('same' with
    an even kernel). ``input`` may be ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    The epilogue: ``relu(conv + residual)`` (either optional), exactly as the separate ops
    compute it. Where ``residual`` has the output's shape, dtype and device the kernel
    applies it as it stores the output; any other residual (one that broadcasts, or
    promotes the dtype) is added after the convolution, as ``+`` would.
    """
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if padding_mode != "zeros":
        pad = [padding[1], padding[1] + extra_padding[1], padding[0], padding[0] + extra_padding[0]]
        input = torch.nn.functional.pad(input, pad, mode=padding_mode)
        padding = [0, 0]
    elif extra_padding[0] != 0 or extra_padding[1] != 0:
        input = torch.nn.functional.pad(input, [0, extra_padding[1], 0, extra_padding[0]])
    # The residual the kernel takes (an unbatched call's 3-D one, batched), or the one added
    # after the call as `+` would add it (any other: a broadcast, another dtype, a number).
    fused: Optional[Tensor] = None
    late: Optional[Tensor] = residual
    if residual is not None and isinstance(residual, Tensor):
        if not unbatched:
            candidate = residual
        elif residual.dim() == 3:
            candidate = residual.unsqueeze(0)
        else:
            candidate = None
        if candidate is not None and _fits_output(candidate, input, weight_size, stride,
                                                  padding, dilation):
            fused = candidate
            late = None
    out = torch.ops.torch_sparse_conv.sparse_filter_conv2d(
        input, row_ptr, col_idx, values, weight_size, bias, stride, padding, dilation, groups,
        method, fused, relu and late is None)
    if unbatched:
        out = out.squeeze(0)
    if late is not None:
        out = out + late
        if relu:
            out = torch.relu(out)
    return out


def _fits_output(residual: Tensor, input: Tensor, weight_size: List[int], stride: List[int],
                 padding: List[int], dilation: List[int]) -> bool:
    """Whether ``residual`` is what the operator's epilogue takes: a strided tensor of the
    output's shape, with the input's dtype and device."""
    shape = [input.shape[0], weight_size[0]]
    for d in range(2):
        size = input.shape[2 + d] + 2 * padding[d] - dilation[d] * (weight_size[2 + d] - 1) - 1
        shape.append(size // stride[d] + 1)
    return (residual.layout == torch.strided and list(residual.shape) == shape
            and residual.dtype == input.dtype and residual.device == input.device)


def _check_tensors(input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"sparse_conv2d: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(weight, Tensor):
        raise TypeError(f"sparse_conv2d: weight must be a Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"sparse_conv2d: bias must be a Tensor or None, got {type(bias).__name__}")
    for name, tensor in (("input", input), ("weight", weight), ("bias", bias)):
        if tensor is not None and tensor.layout != torch.strided:
            raise TypeError(f"sparse_conv2d: {name} must be a dense (strided) tensor, got "
                            f"layout {tensor.layout}")
    if input.dim() not in (3, 4):
        raise ValueError("sparse_conv2d: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got "
                         f"shape {show_shape(input.shape)}")
    if weight.dim() != 4:
        raise ValueError("sparse_conv2d: weight must be 4-D (C_out, C_in/groups, kH, kW), got "
                         f"shape {show_shape(weight.shape)}")
    check_float_dtype(input, "sparse_conv2d", "input")
    if weight.dtype != input.dtype:
        raise TypeError(f"sparse_conv2d: weight dtype ({weight.dtype}) must match input dtype "
                        f"({input.dtype})")
    if weight.device != input.device:
        raise ValueError(f"sparse_conv2d: weight is on {weight.device} but input is on "
                         f"{input.device}")


def sparse_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  stride: IntOrPair = 1, padding: Union[IntOrPair, str] = 0,
                  dilation: IntOrPair = 1, groups: int = 1, method: str = "auto") -> Tensor:
    """2-D convolution with a pruned weight, equal to ``F.conv2d`` with the same arguments.

    Args:
        input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``, float32, float64, float16 or bfloat16
            (the last two accumulated in float32), any memory format; the output has
            the input's (channels-last in, channels-last out, as ``F.conv2d``).
        weight: dense ``(C_out, C_in/groups, kH, kW)``; its zeros are pruned taps and cost
            nothing. The gradient w.r.t. ``weight`` is zero at pruned taps (they stay pruned).
        bias: optional ``(C_out,)``.
        stride, dilation: int or pair, positive.
        padding: int, pair, ``'same'`` or ``'valid'``.
        groups: number of blocked connections, dividing ``C_in`` and ``C_out``.
        method: ``'auto'`` (default), ``'direct'`` (kept taps read in place, no im2col
            buffer), ``'unfold'`` (im2col of the union of kept taps and a dense GEMM),
            ``'dense'`` (``F.conv2d`` on the unpacked weight), ``'spmm'`` (CUDA only).

    The weight is packed on every call; to pack once, use :class:`SparseConv2d` or
    :func:`pack_sparse_filter` with :func:`sparse_conv2d_packed`.
    """
    _check_tensors(input, weight, bias)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"sparse_conv2d: groups must be a positive int, got {show(groups)}")
    if method not in _methods():
        raise ValueError(f"sparse_conv2d: method must be one of {show(_methods())}, got "
                         f"{show(method)}")
    kernel = [int(weight.shape[2]), int(weight.shape[3])]
    stride_ = pair(stride, "stride")
    dilation_ = pair(dilation, "dilation")
    if min(stride_) <= 0:
        raise ValueError(f"sparse_conv2d: stride must be positive, got {show(stride)}")
    if min(dilation_) <= 0:
        raise ValueError(f"sparse_conv2d: dilation must be positive, got {show(dilation)}")
    padding_, extra = resolve_padding(padding, kernel, stride_, dilation_)

    row_ptr, col_idx, values = torch.ops.torch_sparse_conv.pack_sparse_filter(weight.detach())
    if weight.requires_grad:
        # The same positions, gathered differentiably: boolean-mask order is row-major, which
        # is the CSR order of the packing.
        values = weight.reshape(weight.shape[0], -1)[weight.detach().reshape(
            weight.shape[0], -1) != 0]
    return sparse_conv2d_packed(input, row_ptr, col_idx, values, list(weight.shape), bias,
                                stride_, padding_, extra, dilation_, groups, method)
