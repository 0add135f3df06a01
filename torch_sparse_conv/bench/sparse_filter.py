"""Sparse-filter conv2d benchmark: ResNet-50's 3x3 layers at several unstructured sparsities.

Contenders (same inputs, outputs checked equal first):
  dense        F.conv2d with the pruned weight (oneDNN on CPU, cuDNN on GPU)
  prune-mask   what torch.nn.utils.prune runs each forward: F.conv2d(x, weight * mask)
  seed-recipe  the seed recipe in plain PyTorch: F.unfold, rows of the kept-tap union, matmul
  ours:<m>     torch_sparse_conv's methods on the packed weight
"""
from typing import Dict, List

import torch
import torch.nn.functional as F

from .. import pack_sparse_filter, sparse_conv2d_packed
from .timing import check_same, geometric_mean, time_interleaved

# (channels, spatial size) of ResNet-50's 3x3 convolutions, one per stage.
RESNET50_3X3 = [(64, 56), (128, 28), (256, 14), (512, 7)]
SPARSITIES = [0.8, 0.9, 0.95, 0.98]


def seed_recipe(x, weight, union):
    """The recipe's unfold + matmul, made shape-correct: unfold only the union of kept taps."""
    n, _, h, w = x.shape
    columns = F.unfold(x, weight.shape[2:], padding=1)[:, union]
    out = weight.reshape(weight.shape[0], -1)[:, union] @ columns
    return out.view(n, weight.shape[0], h, w)


def run(batch: int = 8, device: str = "cpu", quick: bool = False, rounds: int = 15,
        progress=None) -> List[Dict]:
    layers = RESNET50_3X3[:2] if quick else RESNET50_3X3
    sparsities = [0.9, 0.95] if quick else SPARSITIES
    methods = ["direct", "unfold", "dense", "auto"] if device == "cpu" else \
        ["direct", "spmm", "dense", "auto"]
    rows = []
    generator = torch.Generator().manual_seed(0)
    for channels, size in layers:
        x = torch.randn(batch, channels, size, size, generator=generator).to(device)
        weight = torch.randn(channels, channels, 3, 3, generator=generator)
        for sparsity in sparsities:
            mask = (torch.rand(weight.shape, generator=generator) >= sparsity).float()
            pruned = (weight * mask).to(device)
            mask = mask.to(device)
            row_ptr, col_idx, values = pack_sparse_filter(pruned)
            union = (pruned.reshape(channels, -1) != 0).any(0).nonzero().squeeze(1)
            contenders = {
                "dense": lambda: F.conv2d(x, pruned, None, 1, 1),
                "prune-mask": lambda: F.conv2d(x, pruned * mask, None, 1, 1),
                "seed-recipe": lambda: seed_recipe(x, pruned, union),
            }
            for method in methods:
                contenders[f"ours:{method}"] = (
                    lambda m=method: sparse_conv2d_packed(
                        x, row_ptr, col_idx, values, list(pruned.shape), None, [1, 1], [1, 1],
                        [0, 0], [1, 1], 1, m))
            with torch.no_grad():
                check_same({name: fn() for name, fn in contenders.items()}, "dense",
                           rtol=1e-3, atol=1e-3)
                sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
                timed = {name: (lambda fn=fn: (fn(), sync())) for name, fn in contenders.items()}
                seconds = time_interleaved(timed, rounds=rounds, min_round_seconds=0.02)
            row = dict(layer=f"{channels}x{size}x{size}", channels=channels, size=size,
                       batch=batch, sparsity=sparsity, density=float(mask.mean()),
                       seconds=seconds,
                       speedup={name: seconds["dense"] / t for name, t in seconds.items()})
            rows.append(row)
            if progress:
                progress(row)
    return rows


def summarize(rows: List[Dict]) -> Dict:
    """Geometric-mean speedup over dense per contender and sparsity."""
    summary = {}
    for sparsity in sorted({r["sparsity"] for r in rows}):
        selected = [r for r in rows if r["sparsity"] == sparsity]
        summary[sparsity] = {name: geometric_mean(r["speedup"][name] for r in selected)
                             for name in selected[0]["speedup"]}
    return summary


def markdown(rows: List[Dict]) -> str:
    names = list(rows[0]["speedup"])
    lines = ["| layer | sparsity | dense ms | " + " | ".join(names[1:]) + " |",
             "|---|---|---|" + "---|" * (len(names) - 1)]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['sparsity']:.0%} | {r['seconds']['dense'] * 1e3:.2f} | "
                     + " | ".join(f"{r['speedup'][n]:.2f}x" for n in names[1:]) + " |")
    lines += ["", "Geometric mean of the speedup over dense, per sparsity:", "",
              "| sparsity | " + " | ".join(names[1:]) + " |",
              "|---|" + "---|" * (len(names) - 1)]
    for sparsity, means in summarize(rows).items():
        lines.append(f"| {sparsity:.0%} | " + " | ".join(f"{means[n]:.2f}x" for n in names[1:])
                     + " |")
    return "\n".join(lines)
