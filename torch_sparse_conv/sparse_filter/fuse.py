"""Fusing the residual add and the ReLU that follow a SparseConv2d into its call.

A ResNet block ends ``out = relu(conv(x) + identity)`` (once its batch norm is folded into the
convolution, :mod:`.fold`): two passes over the output in memory after the convolution wrote
it. :class:`~torch_sparse_conv.SparseConv2d` takes both as arguments of its call
(``conv(x, residual=identity, relu=True)``) and applies them as it stores the output, with the
same bits as the separate ops. :func:`fuse_epilogues` rewrites a model's graph (``torch.fx``)
to call it that way; a module's own ``forward`` (torchvision's ``Bottleneck`` reuses one ReLU
module three times) cannot be changed in place, so the result is a ``GraphModule`` holding
the model's modules under the same names (its ``state_dict`` is the model's).

Rewritten, where a SparseConv2d's output is used by nothing else:
  * ``conv(x) + y`` and ``y + conv(x)`` (``+``, ``torch.add``, ``.add`` without ``alpha``;
    ``conv(x).add_(y)`` but not ``y.add_(conv(x))``, which changes ``y``) ->
    ``conv(x, residual=y)``, called where the add was: not where anything between the
    convolution and the add may work in place (an in-place op or module could change ``x``
    or ``y`` in between), nor for ``conv(x) + conv(x)``'s one node. (torch.fx records ``out += y`` as ``out + y``, a new tensor:
    the rewritten model computes what the traced one does.)
  * ``relu(conv(...))`` (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``.relu``, in place or not)
    -> ``conv(..., relu=True)``.
``nn.Identity`` calls (batch norms that folding replaced) are dropped first. A residual that
is not the output's shape, dtype and device is added after the convolution as before (the
call still computes what the graph did). Under autocast the residual is added to the
convolution's lower-precision output as ``+`` adds it (promoting); a model that added it in
place (``+=``) kept the lower dtype there.
"""
import operator
from typing import List, Optional, Tuple

import torch
from torch import fx, nn

from .nn import SparseConv2d
from .pooling import ChannelsLastMaxPool2d

_ADDS = (operator.add, operator.iadd, torch.add)
_RELUS = (torch.relu, torch.relu_, nn.functional.relu)


class _Tracer(fx.Tracer):
    """Keeps this package's modules as single calls (fx only keeps torch.nn's)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (isinstance(module, (SparseConv2d, ChannelsLastMaxPool2d))
                or super().is_leaf_module(module, qualified_name))


def _module(root: nn.Module, node: fx.Node) -> Optional[nn.Module]:
    return root.get_submodule(node.target) if node.op == "call_module" else None


def _sparse_call(root: nn.Module, node, fusing: str) -> bool:
    """A call of a SparseConv2d on one input whose output only one node uses, that can take
    ``fusing`` ('residual' or 'relu'): not fused already, and no residual after a ReLU."""
    return (isinstance(node, fx.Node) and isinstance(_module(root, node), SparseConv2d)
            and len(node.users) == 1 and fusing not in node.kwargs
            and not (fusing == "residual" and node.kwargs.get("relu", False))
            and len(node.args) == 1)


def _residual_add(node: fx.Node) -> Optional[Tuple[List, bool]]:
    """(the two summands, whether the first is changed in place) of an add without alpha."""
    if node.op == "call_function" and node.target in _ADDS and not node.kwargs \
            and len(node.args) == 2:
        return list(node.args), node.target is operator.iadd
    if node.op == "call_method" and node.target in ("add", "add_") and not node.kwargs \
            and len(node.args) == 2:
        return list(node.args), node.target == "add_"
    return None


def _is_relu(root: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(_module(root, node)) is nn.ReLU and len(node.args) == 1
    if node.op == "call_function" and node.target in _RELUS:
        return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1


_IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv,
                       operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul,
                       operator.iand, operator.ior, operator.ixor, operator.ilshift,
                       operator.irshift, operator.setitem)


def _may_mutate(root: nn.Module, node: fx.Node) -> bool:
    """Whether a node may change a tensor in place: an in-place method or function (a name
    ending in '_'), an in-place operator or setitem, an ``inplace=True`` argument, or a
    module set to work in place."""
    if node.kwargs.get("inplace", False):
        return True
    if node.op == "call_module":
        return bool(getattr(_module(root, node), "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_")
    if node.op == "call_function":
        return node.target in _IN_PLACE_OPERATORS or \
            getattr(node.target, "__name__", "").endswith("_")
    return False


def fuse_epilogues(model: nn.Module) -> Tuple[fx.GraphModule, List[str]]:
    """``model`` as a ``GraphModule`` whose SparseConv2d calls take the residual adds and
    ReLUs after them (see the module's docstring), and the names of the convolutions that
    took one (a name once per fused call). ``model`` itself is not changed; its modules are
    shared with the result. A model ``torch.fx`` cannot trace raises that error."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_epilogues: model must be an nn.Module, got "
                        f"{type(model).__name__}")
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:
        raise RuntimeError(f"fuse_epilogues: torch.fx cannot trace {type(model).__name__} "
                           f"({type(error).__name__}: {error}); leave fuse_epilogues off "
                           "for it") from error
    fused: List[str] = []
    for node in list(graph.nodes):
        if node.op == "call_module" and type(_module(model, node)) is nn.Identity \
                and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    for node in list(graph.nodes):
        summands = _residual_add(node)
        if summands is None:
            continue
        (first, second), in_place = summands
        for conv, other in ((first, second), (second, first)):
            if conv is second and in_place:
                break  # y += conv(x) changes y: not the same as a new tensor
            if not (_sparse_call(model, conv, "residual") and isinstance(other, fx.Node)
                    and other is not conv):
                continue
            # The fused call reads the input and the residual where the add was: only if
            # nothing between the convolution and the add may change either in place.
            order = {n: i for i, n in enumerate(graph.nodes)}
            if any(_may_mutate(model, n) for n in graph.nodes
                   if order[conv] < order[n] < order[node]):
                continue
            with graph.inserting_before(node):
                call = graph.call_module(conv.target, conv.args, {"residual": other})
            node.replace_all_uses_with(call)
            graph.erase_node(node)
            graph.erase_node(conv)
            fused.append(f"{conv.target}: residual")
            break
    for node in list(graph.nodes):
        if not _is_relu(model, node):
            continue
        conv = node.args[0]
        if _sparse_call(model, conv, "relu"):
            conv.kwargs = {**conv.kwargs, "relu": True}
            node.replace_all_uses_with(conv)
            graph.erase_node(node)
            fused.append(f"{conv.target}: relu")
    graph.lint()
    return fx.GraphModule(tracer.root, graph, type(model).__name__), fused
