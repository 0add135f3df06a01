"""Max pooling of NCHW CPU tensors in inference, fast, in place of ``nn.MaxPool2d``.

torch's CPU max pool is slow on NCHW tensors and fast on channels-last ones (one vector of
channels a step): ResNet-50's stem pool, (8, 64, 112, 112) at 3x3 stride 2, took 25 ms NCHW
against 1.8 ms channels-last (2 threads, AMD EPYC Zen 4; 15 % of a sparsified ResNet-50's
batch-8 forward). Two ways around it, each where it was measured to pay:

* float32 and float64 inputs pooled to rows of at least :data:`MIN_ONE_PASS_COLUMNS` output
  columns go to this library's one-pass NCHW kernel
  (``torch.ops.torch_sparse_conv._max_pool2d_nchw``, csrc/sparse_filter/cpu/max_pool.cpp),
  vectorised along each row's output columns: no layout copy (rule:
  :func:`pools_in_one_pass`).
* Other large inputs (float16, bfloat16, narrower rows: 7x7 planes pooled to 3x3 have
  columns too few for its vectors, but many channels) go through channels-last: the input
  converted, pooled, the output converted back. On the stem pool that took 6.2-6.5 ms:
  3.9-8x faster than the NCHW pool on every ResNet-sized tensor measured and 1.9-2.9x from
  131,072 elements, but 0.66-1.2x at 32,768-65,536 elements and 0.5x on tiny ones, where the
  two copies cost more than the pool (rule: :func:`pools_through_channels_last`).

Exact: a maximum rounds nothing, and every kernel takes a window's values in the same order
with the same rule, so the values are the same bits, NaN where a window holds one (a bfloat16
NaN's sign and payload may differ; tests/sparse_filter/test_pooling.py checks ties, NaN, -inf
and -0.0). The output keeps the input's NCHW format, so the layers after it see what they saw
before. An input autograd records takes ``nn.MaxPool2d``'s path (the one-pass kernel has no
backward; through channels-last, autograd would keep the channels-last copy for the backward
and hand the layer before a channels-last gradient): the speed-up is for inference.

A model scripted or exported with a :class:`ChannelsLastMaxPool2d` calls this library's
operator where it pools in one pass: loading it needs ``import torch_sparse_conv`` (as for
its ``SparseConv2d`` layers), or :func:`densify` first for a plain-torch artifact.

``sparsify(model, pool_channels_last=True)`` swaps a model's ``nn.MaxPool2d`` layers for
:class:`ChannelsLastMaxPool2d` (an option, off by default: ``sparsify`` otherwise only touches
convolutions); :func:`pool_channels_last` does it alone. (The names date from when
channels-last was the only fast path.)
"""
from typing import List

import torch
from torch._jit_internal import BroadcastingList2
import torch.nn.functional as F
from torch import Tensor, nn

# Below these the NCHW pool was as fast or faster (the two layout copies cost more than the
# pool), 2 threads: 0.48-0.53x on 4x3x32x32 and 1x16x8x8, 0.66-1.18x on tensors of 32,768
# and 65,536 elements (1x128x16x16, 2x32x32x32, 8x8x32x32, ...); 1.9-2.9x at 131,072
# (1x512x16x16, 8x64x16x16, 1x8x128x128, 1x32x64x64), 3.9-8.1x from 8x512x7x7 up.
MIN_CHANNELS = 8
MIN_ELEMENTS = 1 << 17


# From this many output columns on, a float32/float64 NCHW input is pooled by this library's
# one-pass kernel (torch.ops.torch_sparse_conv._max_pool2d_nchw), which is vectorised along
# a row's output columns: 2 threads, Intel Xeon VM, against the copies through channels-last,
# ResNet-50's stem pool (3x3/2, 112x112 -> 56x56) 0.39 against 0.82 ms at batch 1 and 1.7
# against 7.0 ms at batch 8, 2x2 and 3x3/2 pools of 32x32 planes 1.4-3.7x faster; on narrower
# rows it lost (8 columns: 1x512x16x16 0.75x; 7x7 planes pooled to 3x3 0.1x).
MIN_ONE_PASS_COLUMNS = 16


def _two(value: BroadcastingList2[int]) -> List[int]:
    """A pooling argument as torch reads it: an int or a one-element sequence for both
    dimensions, else the sequence as it is (the one-pass rule takes only two values)."""
    if isinstance(value, int):
        return [value, value]
    if len(value) == 1:
        return [value[0], value[0]]
    return [v for v in value]


def _pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                 ceil_mode: bool) -> int:
    """The output size of a max pool along one dimension, as torch computes it."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_arguments_accepted(kernel_size: List[int], stride: List[int], padding: List[int],
                            dilation: List[int]) -> bool:
    """Whether torch's max pool accepts these arguments (two values each; padding at most
    half the kernel and half its reach): the one rule of the one-pass kernel's callers, its
    fake kernel included (the C++ kernel checks the same)."""
    if len(kernel_size) != 2 or len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        return False
    for d in range(2):
        if kernel_size[d] < 1 or stride[d] < 1 or dilation[d] < 1 or padding[d] < 0:
            return False
        if (padding[d] > kernel_size[d] // 2
                or padding[d] > ((kernel_size[d] - 1) * dilation[d] + 1) // 2):
            return False
    return True


def pools_in_one_pass(input: Tensor, kernel_size: List[int], stride: List[int],
                      padding: List[int], dilation: List[int], ceil_mode: bool,
                      min_columns: int = MIN_ONE_PASS_COLUMNS) -> bool:
    """Whether :class:`ChannelsLastMaxPool2d` pools ``input`` with this library's one-pass
    NCHW kernel: a float32 or float64 input that :func:`pools_through_channels_last` would
    accept (at any size: the kernel copies nothing) with no empty channel, row or column
    dimension, arguments that ``nn.MaxPool2d`` accepts (two values each; any other goes to
    torch's pool, which raises its own error), pooled to rows of at least ``min_columns``
    output columns."""
    if not (input.dtype in (torch.float32, torch.float64)
            and pools_through_channels_last(input, min_channels=1, min_elements=0)
            and input.size(1) > 0 and input.size(2) > 0 and input.size(3) > 0):
        return False
    if not pool_arguments_accepted(kernel_size, stride, padding, dilation):
        return False
    height = _pooled_size(input.size(2), kernel_size[0], stride[0], padding[0], dilation[0],
                          ceil_mode)
    width = _pooled_size(input.size(3), kernel_size[1], stride[1], padding[1], dilation[1],
                         ceil_mode)
    return height > 0 and width >= min_columns


def pools_through_channels_last(input: Tensor, min_channels: int = MIN_CHANNELS,
                                min_elements: int = MIN_ELEMENTS) -> bool:
    """Whether :class:`ChannelsLastMaxPool2d` pools ``input`` through channels-last: a 4-D
    strided CPU tensor that autograd does not record, NCHW-contiguous and not also
    channels-last-contiguous (then it is already fast), with at least ``min_channels``
    channels and ``min_elements`` elements. (The limits are arguments, not globals read
    inside, so that TorchScript compiles it.)"""
    return (input.dim() == 4 and input.device.type == "cpu" and input.layout == torch.strided
            and not (input.requires_grad and torch.is_grad_enabled())
            and input.size(1) >= min_channels and input.numel() >= min_elements
            and input.is_contiguous()
            and not input.is_contiguous(memory_format=torch.channels_last))


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (without ``return_indices``) that pools NCHW CPU inputs in inference
    by the library's one-pass kernel (float32/float64, rows of at least
    :data:`MIN_ONE_PASS_COLUMNS` output columns) or, if large, through channels-last, and
    returns the result NCHW: the same values, 2-18x faster than torch's NCHW pool on
    ResNet-sized activations. Other inputs (CUDA, channels-last, small, requiring grad) take
    ``nn.MaxPool2d``'s path unchanged. Takes ``nn.MaxPool2d``'s arguments, in its order;
    ``return_indices=True`` is refused. Build one from an existing layer with
    :meth:`from_max_pool` and back with :meth:`to_max_pool`; its ``state_dict`` is
    ``nn.MaxPool2d``'s (empty)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        if return_indices:
            raise ValueError("ChannelsLastMaxPool2d: return_indices=True is not supported "
                             "(it returns the pooled tensor only); use nn.MaxPool2d")
        super().__init__(kernel_size, stride, padding, dilation, return_indices=False,
                         ceil_mode=ceil_mode)

    @classmethod
    def from_max_pool(cls, pool: nn.MaxPool2d) -> "ChannelsLastMaxPool2d":
        """The same pooling as ``pool`` (which must not return indices), in its training
        mode."""
        if not isinstance(pool, nn.MaxPool2d):
            raise TypeError(f"from_max_pool: pool must be an nn.MaxPool2d, got "
                            f"{type(pool).__name__}")
        if pool.return_indices:
            raise ValueError("from_max_pool: pool returns indices (return_indices=True); "
                             "ChannelsLastMaxPool2d returns the pooled tensor only")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                   ceil_mode=pool.ceil_mode).train(pool.training)

    def to_max_pool(self) -> nn.MaxPool2d:
        """The equivalent ``nn.MaxPool2d``, in this module's training mode."""
        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode).train(self.training)

    def forward(self, input: Tensor) -> Tensor:
        kernel_size = _two(self.kernel_size)
        # nn.MaxPool2d's stride defaults to the kernel size (stored so by its constructor; an
        # empty one means the same to torch's pool).
        stride = _two(self.stride)
        if len(stride) == 0:
            stride = kernel_size
        padding = _two(self.padding)
        dilation = _two(self.dilation)
        if pools_in_one_pass(input, kernel_size, stride, padding, dilation, self.ceil_mode):
            return torch.ops.torch_sparse_conv._max_pool2d_nchw(
                input, kernel_size, stride, padding, dilation, self.ceil_mode)
        through_channels_last = pools_through_channels_last(input)
        pooled = F.max_pool2d(
            input.contiguous(memory_format=torch.channels_last) if through_channels_last
            else input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode)
        return pooled.contiguous() if through_channels_last else pooled


def pool_channels_last(model: nn.Module) -> List[str]:
    """Replaces, in place, every plain ``nn.MaxPool2d`` of ``model`` that does not return
    indices by the equivalent :class:`ChannelsLastMaxPool2d`; returns the names replaced
    (as in ``model.named_modules()``). Subclasses (they may compute something else) and
    pools returning indices are left as they are. The new modules are in the old ones'
    training mode (:meth:`ChannelsLastMaxPool2d.from_max_pool`); hooks registered on the
    old ones are not carried over. ``torch.fx`` traces into the new modules' forward (a
    branch on the input), so fold batch norm (``fold_batchnorm``, which traces) before, as
    ``sparsify`` does."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"pool_channels_last: model must be an nn.Module, got "
                        f"{type(model).__name__}")
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.MaxPool2d and not child.return_indices:
                setattr(module, child_name, ChannelsLastMaxPool2d.from_max_pool(child))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
