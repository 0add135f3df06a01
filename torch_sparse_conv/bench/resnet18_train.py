"""Sparse training of a whole model: torchvision's ResNet-18 pruned to 90 % and 95 %, SGD steps
on random data, against the same pruned model trained in dense torch.

The model: ``torchvision.models.resnet18()`` with seeded random weights, every ``nn.Conv2d``
(the 7x7 stem, the sixteen 3x3 and the three 1x1 downsampling convolutions: 20 layers) pruned
with ``torch.nn.utils.prune.l1_unstructured`` to the cell's sparsity and left pruned (the
mask kept, as one trains a pruned model in torch), the Linear dense, BatchNorm in train mode.
Each contender starts from that model and its own SGD (momentum 0.9, weight decay 1e-4),
then takes the same steps: the same random 224x224 images and labels, cross-entropy, one
forward, one backward, one optimizer step. Contenders:
  dense           the masked model itself (``weight = weight_orig * weight_mask`` on every
                  call, oneDNN forward and backward): the baseline
  dense/compiled  the same model under ``torch.compile`` (forward and backward compiled by
                  Inductor, the optimizer step eager), the second baseline
  dense/channels-last  the masked model and its input in channels-last memory format (other
                  oneDNN kernels): as a CPU user tuning for oneDNN runs it, and the measure of
                  how far two float32 runs of the same training drift apart
  ours:<m>        ``sparsify(copy, method=m)``: every convolution a SparseConv2d on the
                  mask's pattern (all 20 must be converted), the optimizer over its values
Before the timed steps each contender takes ``warmup`` steps (compilation, first-call
allocations), after which its parameters, buffers and optimizer state are restored, so every
contender's timed steps start from the same state. The timed steps are interleaved: each step
every contender in turn (the order rotating); a contender's time per step is the median.
Checked after the run: the first step's loss equals the baseline's within
``first_step_rtol`` (the same weights: the forward's rounding only), every later step's within
``loss_rtol`` (rounding differences grow through SGD's steps, through ReLUs that flip and
BatchNorms over few values, up to a plateau: on 224x224 images at batch 16, 20 steps at 90 %,
dense/channels-last drifted from dense by up to 9.6e-3, ours by 5.8e-3), and every pruned tap
is still zero in every contender (ours keeps no value for it; the masked models multiply by
the mask). Useful GFLOP per step = 3 x 2 x (kept taps of each convolution x
N x its output pixels + the Linear's multiply-adds): the forward and the two gradients.
"""
import copy
import time
from typing import Callable, Dict, List, Optional

import torch

from . import resnet50, sparse_filter
from .timing import geometric_mean

NAME = "resnet18-train"
TITLE = "Sparse-filter training: the whole ResNet-18"
BASELINE = "dense"
COMPILED = "dense/compiled"
CHANNELS_LAST = "dense/channels-last"
OUR_METHODS = ["auto"]
SPARSITIES = [0.9, 0.95]
PASSES = 3  # the forward, the input's gradient and the weights' gradient
TARGET = 2.0  # issue 16: at least 2x the baseline's step at 90 %
PIN_HEAP = True
unavailable = resnet50.unavailable


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run; ``rounds`` replaces the number of timed steps (default 20), ``batch`` the
    batch (default 16). ``quick`` leaves torch.compile out (its compilation alone takes
    minutes on two cores)."""
    return dict(model="resnet18", image=resnet50.IMAGE, batch=batch or 16,
                sparsities=[0.9] if quick else SPARSITIES,
                steps=rounds or (3 if quick else 20), warmup=1 if quick else 2,
                methods=OUR_METHODS, compile=not quick, compile_backend="inductor",
                lr=0.01, momentum=0.9,
                weight_decay=1e-4, first_step_rtol=1e-5, loss_rtol=2e-2, seed=0)


def cells(config: Dict) -> int:
    return len(config["sparsities"])


def pruned_model(config: Dict, sparsity: float) -> torch.nn.Module:
    """The seeded model, every Conv2d pruned by magnitude with its mask kept, in train mode."""
    import torch.nn.utils.prune as prune
    import torchvision
    torch.manual_seed(config["seed"])
    model = torchvision.models.get_model(config["model"], weights=None)
    # Without grad the weight prune sets until the first forward is a plain tensor, so the
    # model can be deep-copied (a product still in the autograd graph cannot).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                prune.l1_unstructured(module, "weight", amount=sparsity)
    return model.train()


def _masks(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Every pruned convolution's mask, by module name."""
    return {name: module.weight_mask.clone() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Conv2d) and hasattr(module, "weight_mask")}


def _effective_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Every convolution's weight as it computes with it, by module name (a compiled model's
    names without the wrapper's prefix)."""
    from .. import SparseConv2d, unpack_sparse_filter
    model = getattr(model, "_orig_mod", model)
    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, SparseConv2d):
            weights[name] = unpack_sparse_filter(module.row_ptr, module.col_idx,
                                                 module.values.detach(), module.weight_size)
        elif hasattr(module, "weight_orig"):  # pruned: what its next forward computes
            weights[name] = (module.weight_orig * module.weight_mask).detach()
        elif isinstance(module, torch.nn.Conv2d):
            weights[name] = module.weight.detach()
    return weights


class Trainer:
    """One contender: a model, its SGD, and a step on a batch that returns the loss."""

    def __init__(self, model: torch.nn.Module, config: Dict, channels_last: bool = False):
        self.model = model
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"],
                                         momentum=config["momentum"],
                                         weight_decay=config["weight_decay"])

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        images = images.contiguous(memory_format=self.memory_format)
        loss = torch.nn.functional.cross_entropy(self.model(images), labels)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def snapshot(self):
        return (copy.deepcopy(self.model.state_dict()),
                copy.deepcopy(self.optimizer.state_dict()))

    def restore(self, state) -> None:
        """In place (a compiled model keeps the tensors it was compiled against)."""
        self.model.load_state_dict(state[0])
        self.optimizer.load_state_dict(state[1])


def _trainers(model: torch.nn.Module, config: Dict, convs: int):
    """Each contender's Trainer on its own copy of ``model``, and why any could not be made."""
    from .. import SparseConv2d, sparsify
    trainers = {BASELINE: Trainer(copy.deepcopy(model), config)}
    unavailable_ = {}
    trainers[CHANNELS_LAST] = Trainer(copy.deepcopy(model).to(memory_format=torch.channels_last),
                                      config, channels_last=True)
    if config.get("compile"):
        trainers[COMPILED] = Trainer(torch.compile(copy.deepcopy(model),
                                                   backend=config["compile_backend"]), config)
    for method in config["methods"]:
        name = f"ours:{method}"
        try:
            converted, report = sparsify(copy.deepcopy(model), min_sparsity=0.0, method=method,
                                         return_report=True)
            count = sum(isinstance(m, SparseConv2d) for m in converted.modules())
            if count != convs:
                raise RuntimeError(f"sparsify converted {count} of {convs} convolutions: "
                                   f"{report}")
            trainers[name] = Trainer(converted.train(), config)
        except (RuntimeError, ValueError, TypeError) as error:
            first = (str(error).strip().splitlines() or [""])[0]
            unavailable_[name] = f"{type(error).__name__}: {first}"[:200]
    return trainers, unavailable_


def _check_pruned_taps(trainers: Dict[str, Trainer], masks: Dict[str, torch.Tensor]) -> Dict:
    """The number of pruned taps that are not zero, per contender; raises if any is."""
    counts = {}
    for name, trainer in trainers.items():
        weights = _effective_weights(trainer.model)
        counts[name] = sum(int(((weights[layer] != 0) & (mask == 0)).sum())
                           for layer, mask in masks.items())
        if counts[name]:
            raise AssertionError(f"benchmark contender {name!r}: {counts[name]} pruned taps "
                                 "are no longer zero after training")
    return counts


def _check_losses(losses: Dict[str, List[float]], first_rtol: float,
                  rtol: float) -> Dict[str, float]:
    """The largest relative difference from the baseline's loss over the steps, per
    contender; raises past ``first_rtol`` at the first step or ``rtol`` at any."""
    expected = losses[BASELINE]
    errors = {}
    for name, values in losses.items():
        differences = [abs(v - e) / abs(e) for v, e in zip(values, expected)]
        errors[name] = max(differences)
        if differences[0] > first_rtol or errors[name] > rtol:
            raise AssertionError(f"benchmark contender {name!r}: losses {values} differ from "
                                 f"{BASELINE!r}'s {expected} by {differences[0]:.3g} at the "
                                 f"first step, up to {errors[name]:.3g} at any (relative; "
                                 f"allowed {first_rtol:g} and {rtol:g})")
    return errors


def _timed(step: Callable[[], float]):
    start = time.perf_counter()
    loss = step()
    return time.perf_counter() - start, loss


def train(trainers: Dict[str, Trainer], batches: List, warmup: int) -> Dict:
    """Warm-up steps (then every contender restored), then the timed steps interleaved.
    Returns the seconds and the loss of every timed step, and the first warm-up step's time
    (compilation, for the compiled model), per contender."""
    first_step = {}
    for name, trainer in trainers.items():
        state = trainer.snapshot()
        for i in range(warmup):
            seconds, _ = _timed(lambda: trainer.step(*batches[i % len(batches)]))
            first_step.setdefault(name, seconds)
        trainer.restore(state)
    names = list(trainers)
    seconds = {name: [] for name in names}
    losses = {name: [] for name in names}
    for i, (images, labels) in enumerate(batches):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            took, loss = _timed(lambda: trainers[name].step(images, labels))
            seconds[name].append(took)
            losses[name].append(loss)
    return dict(step_seconds=seconds, losses=losses, first_step_seconds=first_step)


def run(config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
    """One row per sparsity: seconds per step (medians), speedups over the baseline, useful
    GFLOP/s, every step's loss and time, the checks' results."""
    if device != "cpu":
        raise RuntimeError(f"suite {NAME} runs on the CPU only (device {device})")
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    rows = []
    for sparsity in config["sparsities"]:
        model = pruned_model(config, sparsity)
        work = resnet50.conv_work(copy.deepcopy(model).eval(), config["image"])
        masks = _masks(model)
        trainers, unavailable_ = _trainers(model, config, work["convs"])
        generator = torch.Generator().manual_seed(config["seed"])
        batches = [(torch.randn(config["batch"], 3, config["image"], config["image"],
                                generator=generator),
                    torch.randint(0, 1000, (config["batch"],), generator=generator))
                   for _ in range(config["steps"])]
        measured = train(trainers, batches, config["warmup"])
        pruned_nonzero = _check_pruned_taps(trainers, masks)
        loss_errors = _check_losses(measured["losses"], config["first_step_rtol"],
                                    config["loss_rtol"])
        seconds = {name: float(torch.tensor(times).median())
                   for name, times in measured["step_seconds"].items()}
        flop = PASSES * 2.0 * work["macs"] * config["batch"]
        row = dict(model=config["model"], image=config["image"], batch=config["batch"],
                   sparsity=sparsity, convs=work["convs"], kept=work["kept"],
                   taps=work["taps"], density=work["kept"] / work["taps"],
                   steps=config["steps"], useful_gflop=flop / 1e9,
                   dense_gflop=PASSES * 2.0 * work["dense_macs"] * config["batch"] / 1e9,
                   seconds=seconds, faults={}, unavailable=unavailable_,
                   loss_max_rel_error=loss_errors, pruned_taps_nonzero=pruned_nonzero,
                   **measured, **sparse_filter.rates(seconds, flop))
        rows.append(row)
        if progress:
            progress(row)
    return rows


def describe(row: Dict) -> str:
    """One cell in a few words, for the progress bar."""
    ours = {n: s for n, s in row["speedup"].items() if n.startswith("ours:")}
    best = max(ours, key=ours.get) if ours else BASELINE
    return f"{row['sparsity']:.0%}: {best} {row['speedup'][best]:.2f}x"


def summarize(rows: List[Dict]) -> Dict:
    """Per contender: the geometric-mean speedup over the baseline."""
    names = sparse_filter.contender_names(rows)
    return dict(geomean={name: geometric_mean(r["speedup"][name] for r in rows
                                              if name in r["speedup"]) for name in names})


def markdown(result: Dict, compact: bool = False) -> str:
    """Time per step and speedup per cell, useful GFLOP/s, the checks, what was left out."""
    rows = result["rows"]
    if not rows:
        return "(no cells)"
    names = [n for n in sparse_filter.contender_names(rows) if n != BASELINE]
    first = rows[0]
    lines = [f"Model `{first['model']}` ({first['convs']} convolutions pruned, Linear dense), "
             f"{first['image']}x{first['image']} random images, batch {first['batch']}, "
             f"{first['steps']} timed SGD steps per contender; baseline `{BASELINE}`: the "
             "masked model in torch (oneDNN).", ""]
    lines += sparse_filter.peak_lines(result) + [""]
    lines += [f"| sparsity | kept taps | useful GFLOP/step | {BASELINE} ms/step | "
              + " | ".join(names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['sparsity']:.0%} | {r['kept']:,} of {r['taps']:,} | "
                     f"{r['useful_gflop']:.3g} | {r['seconds'][BASELINE] * 1e3:.4g} | "
                     + resnet50.speedup_cells(r, names) + " |")
    every = sparse_filter.contender_names(rows)
    lines += ["", "Useful GFLOP/s; the largest relative difference of a step's loss from "
              f"`{BASELINE}`'s; the first warm-up step's time (compilation included):", "",
              "| sparsity | " + " | ".join(every) + " |", "|---|" + "---|" * len(every)]
    for r in rows:
        lines.append(f"| {r['sparsity']:.0%} | " + " | ".join(
            f"{r['gflops'][n]:.1f} GFLOP/s; loss {r['loss_max_rel_error'][n]:.1e}; "
            f"first step {r['first_step_seconds'][n]:.3g} s" if n in r["gflops"] else "n/a"
            for n in every) + " |")
    for r in rows:
        final = ", ".join(f"{n} {r['losses'][n][-1]:.5f}" for n in every)
        nonzero = sum(r["pruned_taps_nonzero"].values())
        lines += ["", f"At {r['sparsity']:.0%}: last step's loss {final}; pruned taps not "
                  f"zero after the steps: {nonzero} (checked in every contender)."]
    missing = {(name, error) for r in rows for name, error in r.get("unavailable", {}).items()}
    if missing:
        lines += ["", "Not available or left out:", ""]
        lines += [f"- `{name}`: {error}" for name, error in sorted(missing)]
    return "\n".join(lines)


def losses(result: Dict) -> List[str]:
    """Cells where ours is slower than a baseline by more than the noise margin, or below
    issue 16's 2x at 90 %."""
    words = []
    for r in result["rows"]:
        where = f"{r['sparsity']:.0%}"
        for name, speedup in r["speedup"].items():
            if not name.startswith("ours:"):
                continue
            slower = [b for b in (BASELINE, COMPILED, CHANNELS_LAST) if b in r["speedup"]
                      and r["speedup"][b] > speedup * (1 + sparse_filter.NOISE)]
            for baseline in slower:
                words.append(f"{where}: {name} ({speedup:.2f}x) is slower than {baseline} "
                             f"({r['speedup'][baseline]:.2f}x)")
            if r["sparsity"] == 0.9 and speedup < TARGET:
                words.append(f"{where}: {name} is {speedup:.2f}x of {BASELINE}, short of the "
                             f"{TARGET:g}x target")
    return words
