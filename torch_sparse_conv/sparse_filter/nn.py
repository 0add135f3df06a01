"""nn.Module wrappers: SparseConv2d (a pruned nn.Conv2d) and sparsify (swap a model's layers)."""
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from . import fold, pooling
from .functional import (
    METHODS,
    PADDING_MODES,
    pair,
    resolve_padding,
    sparse_conv2d_packed,
    unpack_sparse_filter,
)

# sparsify's default, measured: the sparsity above which the sparse kernel ('direct') beats
# dense F.conv2d (oneDNN) on every ResNet-50 3x3 layer of BENCHMARKS.md's CPU table (its
# "Crossover" row, batch 8, 2 threads; 2026-11-24: 68.7 % at 64x56x56, 71.1 % at 128x28x28,
# 75.1 % at 256x14x14, 79.9 % at 512x7x7; 2026-12-01: 512x7x7 again last, at 80.2 %). Below it a
# layer stays an nn.Conv2d, where dense is faster;
# above it 'auto' still picks dense per call where its cost model predicts that
# (csrc/sparse_filter/method.h).
DEFAULT_MIN_SPARSITY = 0.8


def _positive_pair(value, name: str) -> List[int]:
    values = pair(value, name)
    if min(values) <= 0:
        raise ValueError(f"SparseConv2d: {name} must be positive, got {value!r}")
    return values


class SparseConv2d(nn.Module):
    """A 2-D convolution whose weight keeps only some taps, computed at their cost.

    Constructed like :class:`torch.nn.Conv2d`, plus the initial pattern:

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in ``nn.Conv2d`` (padding may be 'same'/'valid').
        density: fraction of taps kept at initialisation (0 < density <= 1).
        pattern: ``'magnitude'`` keeps the largest initial weights, ``'random'`` a uniformly
            random subset.
        method: the kernel used in forward: ``'auto'``, ``'direct'``, ``'unfold'``, ``'dense'``.

    The kept values are the Parameter ``values``; the pattern (``row_ptr``, ``col_idx``) is a
    buffer, so training never revives a pruned tap. ``from_dense`` converts an existing
    (possibly ``torch.nn.utils.prune``-pruned) ``nn.Conv2d``; ``to_dense`` converts back.
    """

    __constants__ = ["in_channels", "out_channels", "groups", "method", "padding_mode"]

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 density: float = 0.1, pattern: str = "magnitude", method: str = "auto",
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SparseConv2d: {name} must be a positive int, got {value!r}")
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"SparseConv2d: dtype must be a floating-point dtype, got {dtype}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"SparseConv2d: groups ({groups}) must be positive and divide "
                             f"in_channels ({in_channels}) and out_channels ({out_channels})")
        if method not in METHODS:
            raise ValueError(f"SparseConv2d: method must be one of {METHODS}, got {method!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"SparseConv2d: padding_mode must be one of {PADDING_MODES}, "
                             f"got {padding_mode!r}")
        if isinstance(density, bool) or not isinstance(density, (int, float)) \
                or not 0.0 < density <= 1.0:
            raise ValueError(f"SparseConv2d: density must be in (0, 1], got {density}")
        if pattern not in ("magnitude", "random"):
            raise ValueError(f"SparseConv2d: pattern must be 'magnitude' or 'random', got "
                             f"{pattern!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size: List[int] = _positive_pair(kernel_size, "kernel_size")
        self.stride: List[int] = _positive_pair(stride, "stride")
        self.dilation: List[int] = _positive_pair(dilation, "dilation")
        self.groups = groups
        self.padding_mode = padding_mode
        self.method = method
        self.padding = padding  # as given, for repr and to_dense
        self._padding, self._extra_padding = resolve_padding(
            padding, self.kernel_size, self.stride, self.dilation)
        self.weight_size: List[int] = [out_channels, in_channels // groups] + self.kernel_size

        weight = torch.empty(self.weight_size, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Conv2d's initialisation
        keep = max(1, round(density * weight.numel()))
        score = weight.abs() if pattern == "magnitude" else torch.rand_like(weight)
        threshold = score.flatten().kthvalue(weight.numel() - keep + 1).values
        weight = weight * (score >= threshold)
        self._set_packed(weight)
        if bias:
            fan_in = self.weight_size[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            self.bias = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype)
                                     .uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    def _set_packed(self, weight: Tensor) -> None:
        row_ptr, col_idx, values = torch.ops.torch_sparse_conv.pack_sparse_filter(
            weight.detach())
        self.register_buffer("row_ptr", row_ptr)
        self.register_buffer("col_idx", col_idx)
        self.values = nn.Parameter(values)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, mask: Optional[Tensor] = None,
                   method: str = "auto") -> "SparseConv2d":
        """A SparseConv2d computing exactly what ``conv`` computes, keeping its nonzero taps
        (times ``mask`` if given). Works on layers pruned with ``torch.nn.utils.prune``."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"SparseConv2d.from_dense: conv must be an nn.Conv2d, got "
                            f"{type(conv).__name__}")
        weight = conv.weight.detach()
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.shape != weight.shape:
                raise ValueError(f"SparseConv2d.from_dense: mask must be a tensor of shape "
                                 f"{tuple(weight.shape)}")
            # A mask selects taps; it never scales them. Float 0/1 masks (what
            # torch.nn.utils.prune stores as weight_mask) are accepted as selections.
            if mask.dtype != torch.bool:
                if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError("SparseConv2d.from_dense: mask must be boolean or hold "
                                     "only 0s and 1s (it selects taps, it does not scale "
                                     f"them), got a {mask.dtype} mask with other values")
                mask = mask != 0
            weight = torch.where(mask.to(weight.device), weight, torch.zeros_like(weight))
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_channels = conv.in_channels
        module.out_channels = conv.out_channels
        module.kernel_size = list(conv.kernel_size)
        module.stride = list(conv.stride)
        module.dilation = list(conv.dilation)
        module.groups = conv.groups
        module.padding_mode = conv.padding_mode
        if method not in METHODS:
            raise ValueError(f"SparseConv2d: method must be one of {METHODS}, got {method!r}")
        module.method = method
        module.padding = conv.padding
        module._padding, module._extra_padding = resolve_padding(
            conv.padding if isinstance(conv.padding, str) else list(conv.padding),
            module.kernel_size, module.stride, module.dilation)
        module.weight_size = list(weight.shape)
        module._set_packed(weight.clone())
        if conv.bias is not None:
            module.bias = nn.Parameter(conv.bias.detach().clone())
        else:
            module.register_parameter("bias", None)
        return module

    def dense_weight(self) -> Tensor:
        """The dense ``(C_out, C_in/groups, kH, kW)`` weight, zeros at pruned taps
        (differentiable w.r.t. ``values``)."""
        return unpack_sparse_filter(self.row_ptr, self.col_idx, self.values, self.weight_size)

    def to_dense(self) -> nn.Conv2d:
        """An equivalent ``nn.Conv2d``."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device=self.values.device, dtype=self.values.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    @property
    def nnz(self) -> int:
        return int(self.col_idx.numel())

    @property
    def density(self) -> float:
        total = 1
        for size in self.weight_size:
            total *= size
        return self.nnz / total if total else 0.0

    def forward(self, input: Tensor, residual: Optional[Tensor] = None,
                relu: bool = False) -> Tensor:
        """The convolution of ``input``; with ``residual`` and ``relu``, the epilogue a
        residual block ends with, ``relu(conv(input) + residual)``, computed as the output
        is stored (the same bits as the separate ops; see :func:`fuse_epilogues`)."""
        return sparse_conv2d_packed(input, self.row_ptr, self.col_idx, self.values,
                                    self.weight_size, self.bias, self.stride, self._padding,
                                    self._extra_padding, self.dilation, self.groups,
                                    self.method, self.padding_mode, residual, relu)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A dense nn.Conv2d checkpoint (a `weight` entry, no packed one): its nonzero taps
        # become the pattern. (load_state_dict hands each module a copy of the dict.)
        weight_key = prefix + "weight"
        if weight_key in state_dict and prefix + "values" not in state_dict:
            weight = state_dict.pop(weight_key)
            if tuple(weight.shape) != tuple(self.weight_size):
                error_msgs.append(f"size mismatch for {weight_key}: copying a dense weight of "
                                  f"shape {tuple(weight.shape)}, the SparseConv2d's dense shape "
                                  f"is {tuple(self.weight_size)}.")
                return
            row_ptr, col_idx, values = torch.ops.torch_sparse_conv.pack_sparse_filter(
                weight.detach().to(self.values.dtype))
            state_dict.update({prefix + "row_ptr": row_ptr, prefix + "col_idx": col_idx,
                               prefix + "values": values})
        # The pattern's size (nnz) is data: adopt the stored one before the shape check.
        for name in ("row_ptr", "col_idx"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.row_ptr.device))
        key = prefix + "values"
        if key in state_dict and state_dict[key].shape != self.values.shape:
            self.values = nn.Parameter(self.values.new_empty(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}"
                f", stride={tuple(self.stride)}")
        if self.padding != 0 and self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != [1, 1]:
            text += f", dilation={tuple(self.dilation)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text + f", density={self.density:.3f}, nnz={self.nnz}, method={self.method}"


@dataclass
class SparsifyDecision:
    """What :func:`sparsify` did with one ``nn.Conv2d``: converted or not, and why."""
    name: str
    shape: Tuple[int, ...]
    sparsity: float  # fraction of zero taps of the (effective) weight; nan if unknown
    converted: bool
    reason: str


class SparsifyReport(list):
    """The :class:`SparsifyDecision` of every ``nn.Conv2d`` met, in model order; ``str()`` is
    a table. ``folded``: the (convolution, batch norm) pairs folded first, ``pooled``: the
    max pools made channels-last, and ``fused``: the calls that took an epilogue, if asked."""

    def __init__(self, *decisions):
        super().__init__(*decisions)
        self.folded: List[Tuple[str, str]] = []
        self.pooled: List[str] = []
        self.fused: List[str] = []

    @property
    def converted(self) -> List[str]:
        return [d.name for d in self if d.converted]

    def __str__(self) -> str:
        rows = [("layer", "shape", "sparsity", "converted", "why")] + [
            (d.name, "x".join(map(str, d.shape)), f"{d.sparsity:.3f}",
             "yes" if d.converted else "no", d.reason) for d in self]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " +
                         row[4] for row in rows)


def _overrides(conv: nn.Conv2d, method: str) -> bool:
    """Whether the class of ``conv`` (or a class between it and nn.Conv2d) redefines
    ``method``: then what it computes may not be nn.Conv2d's convolution. (The class that
    torch.nn.utils.parametrize substitutes only adds properties.)"""
    for cls in type(conv).__mro__:
        if cls is nn.Conv2d:
            return False
        if method in vars(cls):
            return True
    return False


def _decide(name: str, conv: nn.Conv2d, min_sparsity: float,
            layer_filter: Optional[Callable[[str, nn.Conv2d], bool]]) -> SparsifyDecision:
    """Whether (and why) one nn.Conv2d, of any subclass, is converted."""
    if isinstance(conv, LazyModuleMixin) and conv.has_uninitialized_params():
        return SparsifyDecision(name, (), math.nan, False,
                                "lazy layer not initialised yet (run one forward first)")
    weight = conv.weight.detach()  # the effective weight: masked, parametrized or normalised
    shape = tuple(weight.shape)
    sparsity = float((weight == 0).sum()) / max(1, weight.numel())
    if layer_filter is not None and not layer_filter(name, conv):
        return SparsifyDecision(name, shape, sparsity, False, "excluded by layer_filter")
    if _overrides(conv, "forward") or _overrides(conv, "_conv_forward"):
        return SparsifyDecision(name, shape, sparsity, False,
                                f"{type(conv).__name__} overrides nn.Conv2d's forward")
    if weight.dtype not in (torch.float32, torch.float64):
        return SparsifyDecision(name, shape, sparsity, False,
                                f"{weight.dtype} weight (CPU kernels: float32, float64)")
    if sparsity < min_sparsity:
        return SparsifyDecision(name, shape, sparsity, False,
                                f"sparsity below min_sparsity={min_sparsity:g}")
    if parametrize.is_parametrized(conv, "weight"):
        how = "converted from its parametrized weight (the parametrization is not kept)"
    elif type(conv) is not nn.Conv2d:
        how = f"converted from {type(conv).__name__} (nn.Conv2d's forward)"
    elif conv._forward_pre_hooks:
        how = "converted from its weight as its hooks compute it (pruning mask, weight norm)"
    else:
        how = "converted"
    return SparsifyDecision(name, shape, sparsity, True, how)


def sparsify(model: nn.Module, min_sparsity: float = DEFAULT_MIN_SPARSITY,
             method: str = "auto", *,
             layer_filter: Optional[Callable[[str, nn.Conv2d], bool]] = None,
             return_report: bool = False, fold_batchnorm: bool = False,
             pool_channels_last: bool = False, fuse_epilogues: bool = False):
    """Replaces, in place, every ``nn.Conv2d`` of ``model`` whose weight has at least
    ``min_sparsity`` zero taps by an equivalent :class:`SparseConv2d`, and returns ``model``
    (with ``return_report=True``, ``(model, report)``: a :class:`SparsifyReport` saying, for
    every ``nn.Conv2d``, its shape, sparsity, and whether it was converted or why not).

    Every ``nn.Conv2d`` subclass is handled: layers pruned with ``torch.nn.utils.prune``, with
    weight norm or another parametrization of ``weight`` are converted from the weight they
    compute (masks, hooks and parametrizations are not carried over: the pattern and values
    are); subclasses that keep ``nn.Conv2d``'s forward are converted; lazy layers not yet
    initialised and subclasses with their own forward are left as they are, with the reason.
    ``layer_filter(name, module)`` returning False keeps a layer dense (names as in
    ``model.named_modules()``). Layers below the threshold stay dense, where they are faster:
    the default 0.8 is where the sparse kernel overtook oneDNN on the slowest-to-gain of
    ResNet-50's 3x3 layers (512x7x7, 79.9-80.2 % at batch 8; see ``DEFAULT_MIN_SPARSITY``).

    ``fold_batchnorm=True`` first folds every eval-mode ``BatchNorm2d`` that follows a
    convolution into it (:func:`~torch_sparse_conv.sparse_filter.fold.fold_batchnorm`: not
    bit-exact, and the model must trace with ``torch.fx``); the report's ``folded`` lists
    the pairs.

    ``pool_channels_last=True`` also replaces every plain ``nn.MaxPool2d`` (not subclasses,
    not those returning indices) by a
    :class:`~torch_sparse_conv.sparse_filter.pooling.ChannelsLastMaxPool2d`, which pools NCHW
    CPU activations in inference by a one-pass kernel (float32/float64) or, if large, through
    channels-last: the same bits, 2-18x faster than
    torch's NCHW pool (ResNet-50's stem pool was 15 % of its sparsified batch-8 forward); the
    report's ``pooled`` lists them. :func:`densify` turns them back.

    ``fuse_epilogues=True`` then has every converted layer apply the residual add and the
    ReLU after it as it stores its output
    (:func:`~torch_sparse_conv.sparse_filter.fuse.fuse_epilogues`: the same bits; with
    ``fold_batchnorm`` the ResNet block's ``relu(conv(x) + identity)`` fuses). The model's
    graph is rewritten, so the result is a new ``torch.fx.GraphModule`` sharing the model's
    modules and ``state_dict`` keys (the model must trace with ``torch.fx``); the report's
    ``fused`` lists each fused call. Densify the model before fusing, not the result.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sparsify: model must be an nn.Module, got {type(model).__name__}")
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"sparsify: min_sparsity must be in [0, 1], got {min_sparsity}")
    if isinstance(model, nn.Conv2d):
        raise TypeError("sparsify: pass the model that contains the Conv2d (a Conv2d can't "
                        "replace itself in place); use SparseConv2d.from_dense for one layer")
    report = SparsifyReport()
    if fold_batchnorm:
        report.folded = fold.fold_batchnorm(model)
    if pool_channels_last:
        report.pooled = pooling.pool_channels_last(model)
    _sparsify_children(model, "", min_sparsity, method, layer_filter, report)
    if fuse_epilogues:
        from . import fuse  # (fuse imports this module)
        model, report.fused = fuse.fuse_epilogues(model)
    return (model, report) if return_report else model


def _sparsify_children(module: nn.Module, prefix: str, min_sparsity: float, method: str,
                       layer_filter, report: SparsifyReport) -> None:
    for child_name, child in list(module.named_children()):
        name = prefix + child_name
        if isinstance(child, SparseConv2d):
            continue
        if isinstance(child, nn.Conv2d):  # never entered: a Conv2d's children are its own
            decision = _decide(name, child, min_sparsity, layer_filter)
            report.append(decision)
            if decision.converted:
                setattr(module, child_name, SparseConv2d.from_dense(child, method=method))
        else:
            _sparsify_children(child, name + ".", min_sparsity, method, layer_filter, report)


def densify(model: nn.Module) -> nn.Module:
    """The inverse of :func:`sparsify`: replaces, in place, every :class:`SparseConv2d` of
    ``model`` by the equivalent ``nn.Conv2d`` (:meth:`SparseConv2d.to_dense`, zeros at the
    pruned taps) and returns ``model``; a SparseConv2d given alone comes back as its
    ``nn.Conv2d``, and a ChannelsLastMaxPool2d (``sparsify(..., pool_channels_last=True)``)
    as its ``nn.MaxPool2d``. The result's ``state_dict`` loads into the dense architecture."""
    if isinstance(model, SparseConv2d):
        return model.to_dense()
    if isinstance(model, pooling.ChannelsLastMaxPool2d):
        return model.to_max_pool()
    if not isinstance(model, nn.Module):
        raise TypeError(f"densify: model must be an nn.Module, got {type(model).__name__}")
    for name, child in list(model.named_children()):
        setattr(model, name, densify(child))
    return model


def dense_state_dict(model: nn.Module) -> dict:
    """``model.state_dict()`` as the dense architecture has it: each :class:`SparseConv2d`'s
    ``row_ptr``, ``col_idx`` and ``values`` become its dense ``weight`` (zeros at the pruned
    taps), without copying the model. Loads into the model before :func:`sparsify` (and, as
    a SparseConv2d loads dense weights too, back into the sparsified one)."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, SparseConv2d):
            prefix = name + "." if name else ""
            for key in ("row_ptr", "col_idx", "values"):
                state.pop(prefix + key)
            state[prefix + "weight"] = module.dense_weight().detach()
    return state
