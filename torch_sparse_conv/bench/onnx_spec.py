"""A model written out for the DeepSparse worker to rebuild as ONNX: a JSON graph plus one
.npy file per weight, the pruned zeros kept in them as zeros.

Why not torch.onnx.export: torch 2.11's exporters need the ``onnx`` package (and the default
one also ``onnxscript``) in the benchmark's environment, and onnx's wheels for the numpy 2
that .venv has are not the onnx 1.14 that deepsparse 1.8 wants. So the model is traced here
with ``torch.fx`` and the worker, which has onnx 1.14, builds the ONNX graph from this
description (bench/deepsparse_worker.py, :func:`build_onnx` there). Only the operators that
convolution layers and ResNets use are translated; anything else raises
:class:`Unsupported`, which the bench records as the peer's note for that cell.

The spec (``graph.json``)::

    {"inputs":  [{"name": "x", "shape": [N, C, H, W]}],
     "outputs": [{"name": "out", "shape": [...]}],
     "nodes":   [{"op": "Conv", "inputs": ["x", "w0"], "output": "t1",
                  "attrs": {"kernel_shape": [3, 3], ...}}, ...],
     "initializers": {"w0": "w0.npy", ...},
     "opset": 13}
"""
import json
import operator
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

OPSET = 13


class Unsupported(NotImplementedError):
    """A module or function this translation does not know."""


def _pair(value) -> List[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


class _Writer:
    def __init__(self, directory: str):
        self.directory = directory
        self.nodes: List[Dict] = []
        self.initializers: Dict[str, str] = {}

    def weight(self, name: str, tensor: torch.Tensor) -> str:
        key = f"w{len(self.initializers)}_{name.replace('.', '_')}"
        path = f"{key}.npy"
        array = tensor.detach().to(torch.float32).cpu().contiguous().numpy()
        np.save(os.path.join(self.directory, path), array)
        self.initializers[key] = path
        return key

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs) -> None:
        self.nodes.append(dict(op=op, inputs=list(inputs), output=output, attrs=attrs))


def _conv(w: _Writer, name: str, module: nn.Conv2d, x: str, out: str) -> None:
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise Unsupported(f"{name}: Conv2d padding {module.padding!r} / mode "
                          f"{module.padding_mode!r}")
    inputs = [x, w.weight(name + ".weight", module.weight)]
    if module.bias is not None:
        inputs.append(w.weight(name + ".bias", module.bias))
    ph, pw = _pair(module.padding)
    w.node("Conv", inputs, out, kernel_shape=list(module.kernel_size),
           strides=_pair(module.stride), pads=[ph, pw, ph, pw],
           dilations=_pair(module.dilation), group=int(module.groups))


def _module(w: _Writer, name: str, module: nn.Module, x: str, out: str) -> None:
    if type(module) is nn.Conv2d:
        _conv(w, name, module, x, out)
    elif isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.training:
            raise Unsupported(f"{name}: BatchNorm2d without running statistics or in training")
        weight = module.weight if module.weight is not None else \
            torch.ones_like(module.running_mean)
        bias = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        w.node("BatchNormalization",
               [x, w.weight(name + ".weight", weight), w.weight(name + ".bias", bias),
                w.weight(name + ".mean", module.running_mean),
                w.weight(name + ".var", module.running_var)], out, epsilon=float(module.eps))
    elif isinstance(module, nn.ReLU):
        w.node("Relu", [x], out)
    elif isinstance(module, nn.MaxPool2d):
        if module.return_indices or _pair(module.dilation) != [1, 1]:
            raise Unsupported(f"{name}: MaxPool2d with indices or dilation")
        ph, pw = _pair(module.padding)
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        w.node("MaxPool", [x], out, kernel_shape=kernel, strides=stride, pads=[ph, pw, ph, pw],
               ceil_mode=int(module.ceil_mode))
    elif isinstance(module, nn.AdaptiveAvgPool2d) and _pair(module.output_size) == [1, 1]:
        w.node("GlobalAveragePool", [x], out)
    elif isinstance(module, nn.Linear):
        inputs = [x, w.weight(name + ".weight", module.weight)]
        if module.bias is not None:
            inputs.append(w.weight(name + ".bias", module.bias))
        w.node("Gemm", inputs, out, transB=1)
    elif isinstance(module, nn.Flatten):
        _flatten_axis((None, module.start_dim, module.end_dim), {})
        w.node("Flatten", [x], out, axis=1)
    elif isinstance(module, nn.Identity):
        w.node("Identity", [x], out)
    else:
        raise Unsupported(f"{name}: {type(module).__name__} is not translated")


_ADD = (operator.add, torch.add)
_RELU = (F.relu, torch.relu)


def _flatten_axis(args, kwargs) -> int:
    start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
    end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
    if int(start) != 1 or int(end) != -1:
        raise Unsupported(f"flatten({start}, {end}): only flatten(x, 1) is translated")
    return 1


def write(model: nn.Module, example: torch.Tensor, directory: str) -> Dict:
    """Traces ``model`` (eval mode) with ``torch.fx`` and writes ``directory/graph.json`` and
    the weights; returns the spec. The output shape is the one ``model(example)`` has."""
    os.makedirs(directory, exist_ok=True)
    traced = torch.fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    w = _Writer(directory)
    names: Dict[str, str] = {}
    inputs, outputs = [], []
    for node in traced.graph.nodes:
        value = f"t{len(names)}_{node.name}"
        if node.op == "placeholder":
            if inputs:
                raise Unsupported("more than one input")
            inputs.append(dict(name=value, shape=list(example.shape)))
        elif node.op == "call_module":
            _module(w, node.target, modules[node.target], names[node.args[0].name], value)
        elif node.op in ("call_function", "call_method"):
            target = node.target
            args = [names[a.name] if isinstance(a, torch.fx.Node) else a for a in node.args]
            if target in _ADD and len(args) == 2 and not node.kwargs:
                w.node("Add", args, value)
            elif target in _RELU or target == "relu":
                w.node("Relu", args[:1], value)
            elif target in (torch.flatten, "flatten"):
                w.node("Flatten", args[:1], value, axis=_flatten_axis(node.args, node.kwargs))
            else:
                raise Unsupported(f"{node.op} {target!r} is not translated")
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node):
                raise Unsupported("the model must return one tensor")
            value = names[result.name]
        else:
            raise Unsupported(f"fx node {node.op} {node.target!r} is not translated")
        names[node.name] = value
    with torch.no_grad():
        out_shape = list(model(example).shape)
    outputs.append(dict(name=names[result.name], shape=out_shape))
    spec = dict(inputs=inputs, outputs=outputs, nodes=w.nodes, initializers=w.initializers,
                opset=OPSET)
    with open(os.path.join(directory, "graph.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return spec
