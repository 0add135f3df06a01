"""Sparse-filter conv2d benchmark: ResNet-50's 3x3 layers swept over unstructured sparsity.

Contenders (same inputs, outputs checked equal to dense float32 first):
  dense          F.conv2d with the pruned weight, torch's default flags: the baseline
                 (oneDNN on CPU; cuDNN on GPU, where torch's default lets convolutions use TF32)
  dense:tf32     GPU only: cuDNN with TF32 forced on (torch.backends.cudnn/cuda.matmul.allow_tf32)
  dense:no-tf32  GPU only: cuDNN with TF32 forced off (full float32)
  prune-mask     an nn.Conv2d pruned with torch.nn.utils.prune.custom_from_mask (each forward
                 multiplies the weight by the mask, then runs the dense conv)
  seed-recipe    the seed recipe in plain PyTorch: F.unfold, rows of the kept-tap union, matmul
  ours:<m>       torch_sparse_conv's methods on the packed weight; a method the build or device
                 lacks (say 'unfold' on CUDA) is probed once and recorded as not available
Speedup = baseline time / contender time; the crossover is the sparsity above which a
contender stays faster than the baseline.
"""
import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from .. import pack_sparse_filter, sparse_conv2d_packed
from .peers import probe, prune_masked_conv2d, tf32, with_tf32
from .timing import check_same, geometric_mean, time_interleaved

# (channels, spatial size) of ResNet-50's 3x3 convolutions, one per stage.
RESNET50_3X3 = [(64, 56), (128, 28), (256, 14), (512, 7)]
SPARSITIES = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99]
HEADLINE_SPARSITIES = [0.8, 0.9, 0.95, 0.98]  # the per-cell rows a compact table keeps
OUR_METHODS = ["direct", "unfold", "dense", "auto", "spmm"]
BASELINE = "dense"
# TF32 rounds the inputs to 10 mantissa bits: its outputs are compared more loosely, with an
# absolute bound relative to the output's largest magnitude (the error grows with the number
# of kept taps summed: 0.068 was seen at 512 channels, 50 % sparsity, outputs up to ~200).
TF32_TOLERANCE = (1e-2, 3e-3)
NOISE = 0.05  # differences under 5 % are not called a loss


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run: layers, sparsities, batch (8 on CPU, 64 on GPU as in issue 4) and rounds."""
    return dict(layers=RESNET50_3X3[:2] if quick else RESNET50_3X3,
                sparsities=[0.9, 0.95] if quick else SPARSITIES,
                batch=batch or (8 if device == "cpu" else 64),
                rounds=rounds or (5 if quick else 15), methods=OUR_METHODS)


def seed_recipe(x, weight, union):
    """The recipe's unfold + matmul, made shape-correct: unfold only the union of kept taps."""
    n, _, h, w = x.shape
    columns = F.unfold(x, weight.shape[2:], padding=1)[:, union]
    out = weight.reshape(weight.shape[0], -1)[:, union] @ columns
    return out.view(n, weight.shape[0], h, w)


def _contenders(x, weight, mask, device, methods):
    """Every contender for one (layer, sparsity) cell, and the methods that are not available.
    ``weight`` is unpruned; ``mask`` keeps its taps."""
    pruned = weight * mask
    channels = pruned.shape[0]
    row_ptr, col_idx, values = pack_sparse_filter(pruned)
    union = (pruned.reshape(channels, -1) != 0).any(0).nonzero().squeeze(1)
    contenders = {BASELINE: lambda: F.conv2d(x, pruned, None, 1, 1)}
    if device == "cuda":
        contenders["dense:tf32"] = with_tf32(True, contenders[BASELINE])
        contenders["dense:no-tf32"] = with_tf32(False, contenders[BASELINE])
    pruned_layer = prune_masked_conv2d(weight, mask, padding=1)
    contenders["prune-mask"] = lambda: pruned_layer(x)
    contenders["seed-recipe"] = lambda: seed_recipe(x, pruned, union)
    unavailable = {}
    for method in methods:
        fn = (lambda m=method: sparse_conv2d_packed(
            x, row_ptr, col_idx, values, list(pruned.shape), None, [1, 1], [1, 1], [0, 0],
            [1, 1], 1, m))
        error = probe(fn)
        if error is None:
            contenders[f"ours:{method}"] = fn
        else:
            unavailable[f"ours:{method}"] = error
    return contenders, unavailable


def _check(contenders, device):
    """Outputs equal to dense full float32 before any time is trusted. On a GPU the reference
    is cuDNN with TF32 off; torch's default lets cuDNN (so also any of our methods that falls
    back to it) use TF32, so there every contender gets the looser TF32 bound, which still
    catches any wrong tap or index (those errors are of the output's own size)."""
    outputs = {name: fn() for name, fn in contenders.items()}
    with tf32(False):
        outputs["reference"] = contenders[BASELINE]()
    scale = outputs["reference"].abs().max().item()
    tolerance = (TF32_TOLERANCE[0], TF32_TOLERANCE[1] * scale)
    loose = {name: tolerance for name in outputs} if device == "cuda" else {}
    check_same(outputs, "reference", rtol=1e-3, atol=1e-3, tolerances=loose)


def run(config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
    """One row per (layer, sparsity): seconds and speedup over the baseline per contender."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    batch = config["batch"]
    for channels, size in config["layers"]:
        x = torch.randn(batch, channels, size, size, generator=generator).to(device)
        weight = torch.randn(channels, channels, 3, 3, generator=generator)
        for sparsity in config["sparsities"]:
            mask = (torch.rand(weight.shape, generator=generator) >= sparsity).float()
            with torch.no_grad():
                contenders, unavailable = _contenders(x, weight.to(device), mask.to(device),
                                                      device, config["methods"])
                _check(contenders, device)
                seconds = time_interleaved(contenders, rounds=config["rounds"],
                                           min_round_seconds=0.02, device=device)
            row = dict(layer=f"{channels}x{size}x{size}", channels=channels, size=size,
                       batch=batch, sparsity=sparsity, density=float(mask.mean()),
                       seconds=seconds, unavailable=unavailable,
                       speedup={name: seconds[BASELINE] / t for name, t in seconds.items()})
            rows.append(row)
            if progress:
                progress(row)
    return rows


def cells(config: Dict) -> int:
    """How many rows :func:`run` will produce (for the progress bar)."""
    return len(config["layers"]) * len(config["sparsities"])


def describe(row: Dict) -> str:
    """One cell in a few words, for the progress bar."""
    fastest = min(row["seconds"], key=row["seconds"].get)
    return (f"{row['layer']} {row['sparsity']:.0%}: fastest {fastest} "
            f"{row['seconds'][fastest] * 1e3:.3g} ms")


def contender_names(rows: List[Dict]) -> List[str]:
    """Every contender timed in any of ``rows``, in first-seen order."""
    names = []
    for row in rows:
        names += [n for n in row["speedup"] if n not in names]
    return names


def crossover(points) -> Dict:
    """Where a contender starts to beat the baseline, from (sparsity, speedup) points.

    The crossover is the lowest sparsity above which every sampled speedup is >= 1,
    interpolated linearly in log(speedup) between the last losing and the first winning
    sample. ``kind`` says 'between' (interpolated), 'below' (wins at every sample: the
    crossover is at or below the lowest) or 'never' (loses at the highest sample, or never
    gets more than the noise margin above parity, as a dense fallback that ties)."""
    points = sorted(points)
    if not points or points[-1][1] < 1.0 or max(a for _, a in points) < 1.0 + NOISE:
        return dict(kind="never", sparsity=None)  # a tie with the baseline is no crossover
    first = len(points) - 1
    while first > 0 and points[first - 1][1] >= 1.0:
        first -= 1
    if first == 0:
        return dict(kind="below", sparsity=points[0][0])
    (s0, a0), (s1, a1) = points[first - 1], points[first]
    t = -math.log(a0) / (math.log(a1) - math.log(a0)) if a1 != a0 else 0.0
    return dict(kind="between", sparsity=s0 + t * (s1 - s0))


def crossovers(rows: List[Dict]) -> Dict[str, Dict[str, Dict]]:
    """Per contender of ours, per layer: :func:`crossover`."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    result = {}
    for name in contender_names(rows):
        if not name.startswith("ours:"):
            continue
        result[name] = {layer: crossover([(r["sparsity"], r["speedup"][name]) for r in rows
                                          if r["layer"] == layer and name in r["speedup"]])
                        for layer in layers}
    return result


def summarize(rows: List[Dict]) -> Dict:
    """Geometric-mean speedup over the baseline per sparsity and contender, and crossovers."""
    per_sparsity = {}
    for sparsity in sorted({r["sparsity"] for r in rows}):
        selected = [r for r in rows if r["sparsity"] == sparsity]
        per_sparsity[str(sparsity)] = {
            name: geometric_mean(r["speedup"][name] for r in selected if name in r["speedup"])
            for name in contender_names(selected)}
    return dict(geomean=per_sparsity, crossover=crossovers(rows))


def _crossover_text(c: Dict) -> str:
    if c["kind"] == "never":
        return "never (in range)"
    if c["kind"] == "below":
        return f"<= {c['sparsity']:.0%}"
    return f"{c['sparsity']:.1%}"


def markdown(result: Dict, compact: bool = False) -> str:
    """Tables: speedup per cell, geometric mean per sparsity, crossover per layer.
    ``compact`` keeps the per-cell rows of the headline sparsities only (the means and the
    crossovers still use every sparsity)."""
    rows = result["rows"]
    names = [n for n in contender_names(rows) if n != BASELINE]
    lines = []
    if result.get("device") == "cuda":
        machine = result.get("machine", {})
        lines += [f"Baseline `{BASELINE}`: cuDNN through F.conv2d with torch's default flags "
                  f"(torch.backends.cudnn.allow_tf32="
                  f"{machine.get('default_cudnn_allow_tf32', '?')}, "
                  f"torch.backends.cuda.matmul.allow_tf32="
                  f"{machine.get('default_matmul_allow_tf32', '?')}); batch {rows[0]['batch']}.",
                  ""]
    else:
        lines += [f"Baseline `{BASELINE}`: F.conv2d (oneDNN); batch {rows[0]['batch']}.", ""]
    lines += [f"| layer | sparsity | {BASELINE} ms | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    shown = [r for r in rows if r["sparsity"] in HEADLINE_SPARSITIES] if compact else rows
    for r in shown or rows:
        cells_ = [f"{r['speedup'][n]:.2f}x" if n in r["speedup"] else "n/a" for n in names]
        lines.append(f"| {r['layer']} | {r['sparsity']:.0%} | {r['seconds'][BASELINE] * 1e3:.3g} | "
                     + " | ".join(cells_) + " |")
    summary = summarize(rows)
    lines += ["", f"Geometric mean of the speedup over `{BASELINE}`, per sparsity:", "",
              "| sparsity | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for sparsity, means in summary["geomean"].items():
        lines.append(f"| {float(sparsity):.0%} | "
                     + " | ".join(f"{means[n]:.2f}x" if n in means else "n/a" for n in names)
                     + " |")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    if summary["crossover"]:
        lines += ["", f"Crossover: the sparsity above which each of our methods beats "
                  f"`{BASELINE}` (interpolated between sampled sparsities):", "",
                  "| method | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
        for name, per_layer in summary["crossover"].items():
            lines.append(f"| {name} | " + " | ".join(_crossover_text(per_layer[layer])
                                                      for layer in layers) + " |")
    missing = {n: e for r in rows for n, e in r.get("unavailable", {}).items()}
    if missing:
        lines += ["", "Not available in this build or on this device:", ""]
        lines += [f"- `{name}`: {error}" for name, error in missing.items()]
    return "\n".join(lines)


def losses(result: Dict) -> List[str]:
    """Plain words on where we lose: cells where our best method is slower than a peer by
    more than the noise margin, or where ``auto`` is below 0.95x of the baseline."""
    words = []
    for r in result["rows"]:
        ours = {n: s for n, s in r["speedup"].items() if n.startswith("ours:")}
        if not ours:
            continue
        best_ours = max(ours, key=ours.get)
        peers = {n: s for n, s in r["speedup"].items() if not n.startswith("ours:")}
        best_peer = max(peers, key=peers.get)
        if peers[best_peer] > ours[best_ours] * (1 + NOISE):
            words.append(f"{r['layer']} at {r['sparsity']:.0%}: our best ({best_ours}, "
                         f"{ours[best_ours]:.2f}x) is slower than {best_peer} "
                         f"({peers[best_peer]:.2f}x)")
        if "ours:auto" in ours and ours["ours:auto"] < 0.95:
            words.append(f"{r['layer']} at {r['sparsity']:.0%}: ours:auto is "
                         f"{ours['ours:auto']:.2f}x of {BASELINE}")
    return words
