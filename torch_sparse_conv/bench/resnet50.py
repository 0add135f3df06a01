"""Whole-model sparse-filter benchmark: torchvision's ResNet-50, every convolution pruned, as
torch_sparse_conv.sparsify converts it, against the same pruned model in dense torch.

The model: ``torchvision.models.resnet50()`` with random weights (seeded), every ``nn.Conv2d``
(the 7x7 stem, the 1x1 and 3x3 convolutions of the bottlenecks, the 1x1 downsampling ones:
53 layers) magnitude-pruned to the cell's sparsity layer by layer
(``torch.nn.utils.prune.l1_unstructured``, then ``prune.remove``: plain zeros in the
weights), the final Linear left dense. Its BatchNorm statistics are then re-estimated on one
random batch (train mode, cumulative average), so activations keep their scale through the
pruned layers as a trained model's would; then eval mode. Inputs: random 224x224 images,
batch 1 and 8; every call under ``torch.inference_mode``.

Contenders, outputs checked against ``dense`` first (rtol 1e-3, atol 1e-3 x the largest
logit; a whole network sums rounding differences over 53 layers):
  dense          the pruned model as it is (oneDNN through nn.Conv2d): the baseline
  ours:<m>       ``torch_sparse_conv.sparsify(copy, method=m)``: every pruned convolution a
                 SparseConv2d (the report must say all 53 were converted), the rest unchanged
  dense+fold-bn  the pruned model with every eval-mode BatchNorm folded into the convolution
                 before it (torch_sparse_conv.sparse_filter.fold_batchnorm), in dense torch
  ours:auto+fold-bn  ``sparsify(copy, fold_batchnorm=True)``: the same folding, then sparse
  ours:auto+fold-bn+pool  ``sparsify(copy, fold_batchnorm=True, pool_channels_last=True)``:
                 also the stem's max pool by ChannelsLastMaxPool2d (the library's one-pass
                 NCHW kernel there, the same bits; torch's NCHW pool is 9-18x slower on that
                 tensor)
  ours:auto+fold-bn+pool+fuse  the same with ``fuse_epilogues=True``: each block's residual
                 add and ReLUs applied by the convolutions as they store their outputs
                 (sparse_filter/fuse.py; the same bits, checked against the unfused model)
  dense/channels-last, ours:auto+fold-bn/channels-last
                 ``dense`` and ``ours:auto+fold-bn`` with the model and the input in
                 channels-last memory format (``.to(memory_format=torch.channels_last)``), as
                 a CPU user tuning for oneDNN runs them; speedups still over NCHW ``dense``
  deepsparse     DeepSparse 1.8 on the same pruned model exported with its zeros (BatchNorm,
                 ReLU, pooling, residual adds and the Linear as ONNX operators; DeepSparse
                 folds what it folds), in its worker process (bench/deepsparse_peer.py)
Timing as in every suite (bench/timing.py): warm-up calls, then rounds that call each
contender in turn, the median a contender's time. Useful GFLOP = 2 x (kept taps of each
convolution x N x its output pixels + the Linear's multiply-adds).
"""
import copy
from typing import Dict, List, Optional

import torch

from ..sparse_filter import fold_batchnorm
from . import sparse_filter
from .timing import check_same, geometric_mean

SPARSITIES = [0.9, 0.95]
BATCHES = [1, 8]
IMAGE = 224
OUR_METHODS = ["auto", "direct"]
BASELINE = "dense"
# The same pruned model with its batch norms folded into the convolutions, in dense torch:
# the fair baseline for ours:auto+fold-bn (any torch user can fold).
FOLDED_BASELINE = "dense+fold-bn"
PEER = sparse_filter.PEER
# Contenders also run with the model and input channels-last, under NAME + CHANNELS_LAST.
IN_CHANNELS_LAST = [BASELINE, "ours:auto+fold-bn"]
CHANNELS_LAST = "/channels-last"
TOLERANCE = (1e-3, 1e-3)  # rtol; atol as a fraction of the largest output magnitude
NOISE = sparse_filter.NOISE
PIN_HEAP = True
TITLE = "Sparse-filter conv2d: the whole ResNet-50"


def unavailable() -> Optional[str]:
    """Why this suite cannot run here (torchvision missing), or None."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return ("suite resnet50 needs torchvision (a benchmark-only dependency: pip install "
                "torchvision==0.26.0, the release built for torch 2.11.0)")
    return None


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run: the model, sparsities, batches (``batch`` replaces the list), rounds."""
    return dict(model="resnet50", image=IMAGE,
                sparsities=[0.9] if quick else SPARSITIES,
                batches=[batch] if batch else ([1] if quick else BATCHES),
                rounds=rounds or (3 if quick else 10), methods=OUR_METHODS,
                deepsparse=device == "cpu", calibration_batch=4, seed=0,
                fold_batchnorm=True)


def cells(config: Dict) -> int:
    """How many rows :func:`run` will produce (for the progress bar)."""
    return len(config["sparsities"]) * len(config["batches"])


def pruned_model(config: Dict, sparsity: float) -> torch.nn.Module:
    """The torchvision model named in the config, seeded, every Conv2d magnitude-pruned to
    ``sparsity``, BatchNorm statistics re-estimated on one random batch, in eval mode."""
    import torch.nn.utils.prune as prune
    import torchvision
    torch.manual_seed(config["seed"])
    model = torchvision.models.get_model(config["model"], weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=sparsity)
            prune.remove(module, "weight")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.randn(config["calibration_batch"], 3, config["image"], config["image"]))
    return model.eval()


def conv_work(model: torch.nn.Module, image: int) -> Dict:
    """Per image: the kept taps of every Conv2d times its output pixels, the Linear layers'
    multiply-adds, the number of Conv2d and their kept and total taps (forward hooks on one
    image)."""
    work = dict(macs=0.0, dense_macs=0.0, convs=0, kept=0, taps=0)
    hooks = []

    def on_conv(module, inputs, output):
        pixels = output.shape[-2] * output.shape[-1]
        kept = int((module.weight != 0).sum())
        work["macs"] += kept * pixels
        work["dense_macs"] += module.weight.numel() * pixels
        work["convs"] += 1
        work["kept"] += kept
        work["taps"] += module.weight.numel()

    def on_linear(module, inputs, output):
        work["macs"] += module.weight.numel()
        work["dense_macs"] += module.weight.numel()

    for module in model.modules():
        if type(module) is torch.nn.Conv2d:
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(on_linear))
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, image, image))
    finally:
        for hook in hooks:
            hook.remove()
    return work


def _ours(model: torch.nn.Module, method: str, convs: int, fold: bool = False,
          pool: bool = False, fuse: bool = False):
    """``sparsify`` on a copy with ``method`` (and ``fold_batchnorm=fold``,
    ``pool_channels_last=pool``, ``fuse_epilogues=fuse``); every Conv2d must have been
    converted."""
    from .. import SparseConv2d, sparsify
    converted, report = sparsify(copy.deepcopy(model), min_sparsity=0.8, method=method,
                                 return_report=True, fold_batchnorm=fold,
                                 pool_channels_last=pool, fuse_epilogues=fuse)
    count = sum(isinstance(m, SparseConv2d) for m in converted.modules())
    if count != convs:
        raise RuntimeError(f"sparsify converted {count} of {convs} convolutions: {report}")
    return converted.eval()


def _call(model, x):
    def call():
        with torch.inference_mode():
            return model(x)
    return call


def run(config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
    """One row per (sparsity, batch): seconds, speedup over dense, useful GFLOP/s, images/s
    and minor page faults per call of each contender. With ``config['deepsparse']`` the
    DeepSparse peer is tried (CPU only); what was found is in ``config['deepsparse_peer']``."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    rows = []
    session = sparse_filter.PeerSession(config.get("deepsparse", False), device,
                                        torch.get_num_threads())
    if config.get("deepsparse"):
        config["deepsparse_peer"] = session.record()
    generator = torch.Generator().manual_seed(config["seed"])
    try:
        for sparsity in config["sparsities"]:
            model = pruned_model(config, sparsity)
            work = conv_work(model, config["image"])
            models = {BASELINE: model.to(device)}
            unavailable_ = {}
            variants = [(f"ours:{m}", m, False, False, False) for m in config["methods"]]
            if config.get("fold_batchnorm"):
                folded = copy.deepcopy(model)
                fold_batchnorm(folded)
                models[FOLDED_BASELINE] = folded.to(device)
                variants.append(("ours:auto+fold-bn", "auto", True, False, False))
                variants.append(("ours:auto+fold-bn+pool", "auto", True, True, False))
                variants.append(("ours:auto+fold-bn+pool+fuse", "auto", True, True, True))
            for name, method, fold, pool, fuse in variants:
                try:
                    models[name] = _ours(model, method, work["convs"], fold, pool,
                                         fuse).to(device)
                except (RuntimeError, ValueError, TypeError) as error:
                    first = (str(error).strip().splitlines() or [""])[0]
                    unavailable_[name] = f"{type(error).__name__}: {first}"[:200]
            for name in IN_CHANNELS_LAST:
                if name in models:
                    models[name + CHANNELS_LAST] = copy.deepcopy(models[name]).to(
                        memory_format=torch.channels_last)
            for batch in config["batches"]:
                x = torch.randn(batch, 3, config["image"], config["image"],
                                generator=generator).to(device)
                x_last = x.contiguous(memory_format=torch.channels_last)
                contenders = {name: _call(m, x_last if name.endswith(CHANNELS_LAST) else x)
                              for name, m in models.items()}
                outputs = {name: fn() for name, fn in contenders.items()}
                scale = outputs[BASELINE].abs().max().item()
                tolerance = (TOLERANCE[0], TOLERANCE[1] * max(scale, 1e-6))
                check_same(outputs, BASELINE, rtol=tolerance[0], atol=tolerance[1])
                fused, unfused = "ours:auto+fold-bn+pool+fuse", "ours:auto+fold-bn+pool"
                if fused in outputs and unfused in outputs and \
                        not torch.equal(outputs[fused], outputs[unfused]):
                    raise RuntimeError(f"{fused}'s output differs from {unfused}'s bits")
                cell_unavailable = dict(unavailable_)
                remote = None
                if config.get("deepsparse"):
                    remote, why = session.contender(
                        model, x.cpu(), outputs[BASELINE].cpu(),
                        f"{config['model']}-b{batch}-s{sparsity}", *tolerance)
                    if remote is not None:
                        contenders[PEER] = remote
                    else:
                        cell_unavailable[PEER] = why
                stats = session.time(contenders, cell_unavailable, rounds=config["rounds"],
                                     warmup=2, min_round_seconds=0.0, device=device)
                if remote is not None and session.peer is not None:
                    remote.free()
                seconds = stats["seconds"]
                flop = 2.0 * work["macs"] * batch
                row = dict(model=config["model"], image=config["image"], batch=batch,
                           sparsity=sparsity, convs=work["convs"], kept=work["kept"],
                           taps=work["taps"], density=work["kept"] / work["taps"],
                           useful_gflop=flop / 1e9,
                           dense_gflop=2.0 * work["dense_macs"] * batch / 1e9,
                           seconds=seconds, faults=stats["faults"],
                           unavailable=cell_unavailable,
                           images_per_second={n: batch / t for n, t in seconds.items()},
                           **sparse_filter.rates(seconds, flop))
                rows.append(row)
                if progress:
                    progress(row)
    finally:
        session.close(config)
    return rows


def describe(row: Dict) -> str:
    """One cell in a few words, for the progress bar."""
    fastest = min(row["seconds"], key=row["seconds"].get)
    return (f"b{row['batch']} {row['sparsity']:.0%}: fastest {fastest} "
            f"{row['seconds'][fastest] * 1e3:.3g} ms")


def summarize(rows: List[Dict]) -> Dict:
    """Per contender: geometric-mean speedup over dense, per batch and overall."""
    names = sparse_filter.contender_names(rows)
    summary = dict(geomean={}, per_batch={})
    for name in names:
        summary["geomean"][name] = geometric_mean(r["speedup"][name] for r in rows
                                                  if name in r["speedup"])
    for batch in sorted({r["batch"] for r in rows}):
        selected = [r for r in rows if r["batch"] == batch]
        summary["per_batch"][str(batch)] = {
            name: geometric_mean(r["speedup"][name] for r in selected if name in r["speedup"])
            for name in sparse_filter.contender_names(selected)}
    return summary


def speedup_cells(row: Dict, names: List[str]) -> str:
    """A table row's cells for ``names``: speedup (time), or n/a where one did not run."""
    return " | ".join(f"{row['speedup'][n]:.2f}x ({row['seconds'][n] * 1e3:.4g} ms)"
                      if n in row["speedup"] else "n/a" for n in names)


def markdown(result: Dict, compact: bool = False) -> str:
    """Speedup per cell, useful GFLOP/s and images/s per cell, what was left out."""
    rows = result["rows"]
    if not rows:
        return "(no cells)"
    names = [n for n in sparse_filter.contender_names(rows) if n != BASELINE]
    first = rows[0]
    lines = [f"Model `{first['model']}` ({first['convs']} convolutions pruned, Linear dense), "
             f"{first['image']}x{first['image']} inputs; baseline `{BASELINE}`: the pruned "
             "model in torch (oneDNN).", ""]
    lines += sparse_filter.peak_lines(result) + [""]
    lines += [f"| batch | sparsity | kept taps | useful GFLOP | {BASELINE} ms | "
              + " | ".join(names) + " |", "|---|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['sparsity']:.0%} | {r['kept']:,} of {r['taps']:,} | "
                     f"{r['useful_gflop']:.3g} | {r['seconds'][BASELINE] * 1e3:.4g} | "
                     + speedup_cells(r, names) + " |")
    every = sparse_filter.contender_names(rows)
    peak = sparse_filter._peak(result)
    lines += ["", "Useful GFLOP/s (images/s)"
              + (f"; the last column: the fastest contender's share of the {peak:.0f} GFLOP/s "
                 "peak" if peak else "") + ":", "",
              "| batch | sparsity | " + " | ".join(every) + " | fastest |",
              "|---|---|" + "---|" * len(every) + "---|"]
    for r in rows:
        fastest = max(r["gflops"], key=r["gflops"].get)
        share = f", {r['gflops'][fastest] / peak:.0%} of peak" if peak else ""
        lines.append(f"| {r['batch']} | {r['sparsity']:.0%} | "
                     + " | ".join(f"{r['gflops'][n]:.1f} ({r['images_per_second'][n]:.3g})"
                                  if n in r["gflops"] else "n/a" for n in every)
                     + f" | {fastest} {r['gflops'][fastest]:.1f}{share} |")
    faults = sparse_filter.faults_line(result)
    if faults:
        lines += [""] + faults
    missing = {}
    for r in rows:
        for name, error in r.get("unavailable", {}).items():
            missing.setdefault(name, {}).setdefault(error, 0)
            missing[name][error] += 1
    if missing:
        lines += ["", "Not available or left out:", ""]
        for name, errors in missing.items():
            for error, count in errors.items():
                where = "" if count == len(rows) else f" ({count} of {len(rows)} cells)"
                lines.append(f"- `{name}`{where}: {error}")
    return "\n".join(lines)


def losses(result: Dict) -> List[str]:
    """Cells where our best is slower than a peer by more than the noise margin, or where
    ours:auto is below 0.95x of dense."""
    words = []
    for r in result["rows"]:
        where = f"batch {r['batch']} at {r['sparsity']:.0%}"
        ours = {n: s for n, s in r["speedup"].items() if n.startswith("ours:")}
        peers = {n: s for n, s in r["speedup"].items() if not n.startswith("ours:")}
        if not ours:
            continue
        best_ours, best_peer = max(ours, key=ours.get), max(peers, key=peers.get)
        if peers[best_peer] > ours[best_ours] * (1 + NOISE):
            words.append(f"{where}: our best ({best_ours}, {ours[best_ours]:.2f}x) is slower "
                         f"than {best_peer} ({peers[best_peer]:.2f}x)")
        if "ours:auto" in ours and ours["ours:auto"] < 0.95:
            words.append(f"{where}: ours:auto is {ours['ours:auto']:.2f}x of {BASELINE}")
    return words
