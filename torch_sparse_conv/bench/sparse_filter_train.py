"""Sparse-filter training step on ResNet-50's layers: the forward and both gradients.

One step = the forward, the gradient of the input and the gradient of the weight (for ours:
of the kept values), for a fixed random grad_output, as a layer pruned during training
(gradual magnitude pruning, sparse fine-tuning) runs them on every batch. Layers: the 3x3
stride-1 ones (64@56, 128@28, 256@14, 512@7), the eight 1x1 ones and the three stride-2 3x3
ones of bench/sparse_filter_layers.py; batch 8 and 32, 90 % and 95 % sparsity. Contenders:
  dense       an nn.Conv2d holding the pruned weight (oneDNN forward and backward): the
              baseline
  prune-mask  the layer pruned with torch.nn.utils.prune.custom_from_mask (the weight times
              the mask every step, then the dense convolution: how torch trains it)
  ours:<m>    SparseConv2d.from_dense(conv, method=m): gradients of the input and of values
Checked first: the output, the input's gradient and the weight's gradient at the kept taps
equal dense's (rtol 1e-3, atol 1e-3 x the largest magnitude of each). Useful GFLOP per step =
3 x 2 x kept taps x N x H_out x W_out (the forward, and each gradient as much again); the
same interleaved rounds and medians as every suite (bench/timing.py).
"""
from typing import Dict, List, Optional, Tuple

import torch

from .. import SparseConv2d, unpack_sparse_filter
from . import sparse_filter, sparse_filter_layers
from .timing import check_same

NAME = "sparse-filter-train"
TITLE = "Sparse-filter training step on ResNet-50's layers"
SPARSITIES = [0.9, 0.95]
BATCHES = [8, 32]  # issue 16's batch, and a larger one as training runs it
OUR_METHODS = ["auto", "direct"]
BASELINE = sparse_filter.BASELINE
PASSES = 3  # forward, gradient of the input, gradient of the weight
PIN_HEAP = True


def layers(quick: bool) -> List:
    """The 3x3 stride-1 layers, then the 1x1 and the stride-2 ones (two of each when quick)."""
    if quick:
        return (sparse_filter.RESNET50_3X3[:2] + sparse_filter_layers.RESNET50_1X1[:1]
                + sparse_filter_layers.RESNET50_3X3_STRIDE2[:1])
    return (sparse_filter.RESNET50_3X3 + sparse_filter_layers.RESNET50_1X1
            + sparse_filter_layers.RESNET50_3X3_STRIDE2)


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run; ``batch`` replaces the default batches (8 and 32; 8 when quick)."""
    return dict(layers=layers(quick), sparsities=[0.9] if quick else SPARSITIES,
                batches=[batch] if batch else (BATCHES[:1] if quick else BATCHES),
                rounds=rounds or (5 if quick else 15),
                methods=OUR_METHODS, deepsparse=False, training=True)


def _step(layer: torch.nn.Module, weight: torch.Tensor, x: torch.Tensor,
          grad_output: torch.Tensor):
    """forward + gradients of ``x`` and ``weight`` (a leaf of ``layer``)."""
    def step():
        out = layer(x)
        grad_x, grad_w = torch.autograd.grad(out, (x, weight), grad_output)
        return out, grad_x, grad_w
    return step


def _contenders(x, weight, mask, spec: Dict, methods: List[str]):
    """Each contender's step, and a function giving (output, grad_x, weight grad at the
    kept taps as a dense tensor) to check it with."""
    import torch.nn.utils.prune as prune
    pruned = (weight * mask).detach()
    conv = torch.nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel"],
                           stride=spec["stride"], padding=spec["padding"], bias=False)
    with torch.no_grad():
        conv.weight.copy_(pruned)
    masked = torch.nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel"],
                             stride=spec["stride"], padding=spec["padding"], bias=False)
    with torch.no_grad():
        masked.weight.copy_(weight)
    prune.custom_from_mask(masked, "weight", mask)
    x = x.detach().requires_grad_()
    out_size = spec["out_size"]
    grad_output = torch.randn(x.shape[0], spec["out_channels"], out_size, out_size,
                              generator=torch.Generator().manual_seed(0))
    steps = {BASELINE: _step(conv, conv.weight, x, grad_output),
             "prune-mask": _step(masked, masked.weight_orig, x, grad_output)}
    # The kept taps are the pattern's: a weight that is exactly zero under the mask (randn
    # gives one now and then) is pruned too, and has no value to get a gradient.
    kept = (pruned != 0).to(pruned.dtype)
    dense_grads = {BASELINE: lambda g: g * kept, "prune-mask": lambda g: g * kept}
    unavailable = {}
    for method in methods:
        layer = SparseConv2d.from_dense(conv, method=method)
        steps[f"ours:{method}"] = _step(layer, layer.values, x, grad_output)
        # The kept values' gradient as a dense weight-shaped tensor (zeros elsewhere).
        dense_grads[f"ours:{method}"] = (lambda g, layer=layer: unpack_sparse_filter(
            layer.row_ptr, layer.col_idx, g, layer.weight_size))
    return steps, dense_grads, unavailable


def _check(steps: Dict, dense_grads: Dict) -> None:
    """Every contender's output and gradients against dense's."""
    results = {name: step() for name, step in steps.items()}
    for part in range(3):
        values = {name: (dense_grads[name](result[2]) if part == 2 else result[part]).detach()
                  for name, result in results.items()}
        scale = values[BASELINE].abs().max().item()
        check_same(values, BASELINE, rtol=1e-3, atol=1e-3 * max(scale, 1e-6))


def measure_cell(x, weight, mask, spec: Dict, device: str, config: Dict,
                 session: sparse_filter.PeerSession, label: str) -> Tuple[Dict, Dict, Dict]:
    """sparse_filter.run's cell measurement for training steps: (seconds, faults,
    unavailable)."""
    if device != "cpu":
        raise RuntimeError(f"suite {NAME} runs on the CPU only (device {device})")
    steps, dense_grads, unavailable = _contenders(x, weight, mask, spec, config["methods"])
    _check(steps, dense_grads)
    stats = session.time(steps, unavailable, rounds=config["rounds"], min_round_seconds=0.02,
                         device=device)
    return stats["seconds"], stats["faults"], unavailable


def run(config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
    """One row per (layer, sparsity), as sparse_filter.run's, useful GFLOP counting the three
    passes."""
    return sparse_filter.run(config, device, progress, measure=measure_cell, passes=PASSES)


cells = sparse_filter.cells
describe = sparse_filter.describe
summarize = sparse_filter.summarize
losses = sparse_filter.losses


def markdown(result: Dict, compact: bool = False) -> str:
    """sparse_filter's tables, with the baseline said to be a training step."""
    text = sparse_filter.markdown(result, compact).replace(
        "Useful GFLOP/s (2 x kept taps x N x H_out x W_out / time)",
        f"Useful GFLOP/s ({PASSES} passes x 2 x kept taps x N x H_out x W_out / time)", 1)
    return text.replace(f"Baseline `{BASELINE}`: F.conv2d (oneDNN)",
                        f"Baseline `{BASELINE}`: a training step of nn.Conv2d with the pruned "
                        "weight (oneDNN forward and backward); each cell one step: the forward, "
                        "the input's gradient and the weight's (ours: the kept values')", 1)
