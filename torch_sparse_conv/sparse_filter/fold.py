"""Folding eval-mode batch norm into the convolution before it, in place.

A ``BatchNorm2d`` in eval mode is a per-channel affine map, ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``; after a convolution it folds into that convolution's weight
(each output channel's taps times ``s``: pruned taps stay zero, the sparsity is unchanged) and
bias (``(b - mean) * s + beta``), and the batch norm becomes ``nn.Identity``. The model then
runs one operator less per layer; ``sparsify(model, fold_batchnorm=True)`` does it before
converting the convolutions.

Not exact: the folded model rounds once where the original rounded twice, so outputs differ
by float rounding (about 1e-6 relative in float32), and a folded model no longer trains its
batch norm. That is why it is an option, off by default.
"""
from typing import List, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """A plain nn.Conv2d (its weight a Parameter of its own: no parametrization or pruning
    hook computes it) followed by a BatchNorm2d in eval mode with running statistics."""
    return (type(conv) is nn.Conv2d and not parametrize.is_parametrized(conv)
            and not conv._forward_pre_hooks
            and isinstance(bn, nn.BatchNorm2d) and not bn.training
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        # In float64, so the fold adds one rounding of the result and no more.
        scale = (bn.running_var.double() + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        weight = conv.weight
        weight.copy_((weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=weight.requires_grad)
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def fold_batchnorm(model: nn.Module) -> List[Tuple[str, str]]:
    """Folds, in place, every eval-mode ``BatchNorm2d`` whose input is the output of an
    ``nn.Conv2d`` used by nothing else, into that convolution, and replaces the batch norm by
    ``nn.Identity``. Returns the ``(convolution, batch norm)`` names folded.

    The data flow is read by ``torch.fx.symbolic_trace``; a model it cannot trace raises
    that error (with the model's class named). Batch norms in training mode, without running
    statistics, or after a convolution whose output is also used elsewhere, or whose weight is
    computed (``torch.nn.utils.prune``, parametrizations), are left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm: model must be an nn.Module, got "
                        f"{type(model).__name__}")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:
        raise RuntimeError(f"fold_batchnorm: torch.fx cannot trace {type(model).__name__} "
                           f"({type(error).__name__}: {error}); fold its batch norms by hand "
                           "or leave fold_batchnorm off") from error
    modules = dict(model.named_modules())
    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        if len(source.users) != 1:
            continue
        conv, bn = modules.get(source.target), modules.get(node.target)
        if conv is None or bn is None or not _foldable(conv, bn):
            continue
        _fold(conv, bn)
        _set_submodule(model, node.target, nn.Identity())
        folded.append((source.target, node.target))
    return folded
