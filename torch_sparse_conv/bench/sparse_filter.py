"""Sparse-filter conv2d benchmark: ResNet-50's 3x3 layers swept over unstructured sparsity.

Contenders (same inputs, outputs checked equal to dense float32 first):
  dense          F.conv2d with the pruned weight, torch's default flags: the baseline
                 (oneDNN on CPU; cuDNN on GPU, where torch's default lets convolutions use TF32)
  dense:tf32     GPU only: cuDNN with TF32 forced on (torch.backends.cudnn/cuda.matmul.allow_tf32)
  dense:no-tf32  GPU only: cuDNN with TF32 forced off (full float32)
  prune-mask     an nn.Conv2d pruned with torch.nn.utils.prune.custom_from_mask (each forward
                 multiplies the weight by the mask, then runs the dense conv)
  seed-recipe    the seed recipe in plain PyTorch: F.unfold, rows of the kept-tap union, matmul
  deepsparse     CPU, where scripts/setup_deepsparse.sh made its venv: DeepSparse 1.8 on the
                 same layer exported with its zeros, in a worker process, timed in turn with
                 the others (bench/deepsparse_peer.py); left out with a note where missing
  ours:<m>       torch_sparse_conv's methods on the packed weight; a method the build or device
                 lacks (say 'unfold' on CUDA) is probed once and recorded as not available
Speedup = baseline time / contender time; the crossover is the sparsity above which a
contender stays faster than the baseline. Useful GFLOP/s = 2 x kept taps x N x H_out x W_out
/ time (the work a perfect sparse kernel does), against the machine's float32 peak
(bench/machine.py: threads x clock x 32 FLOP a cycle).

bench/sparse_filter_layers.py runs the same cells on other layers and batches (ResNet-50's
1x1 and stride-2 layers, batch 1): a layer is ``(channels, size)`` (a 3x3, stride-1,
channels-to-channels layer, this suite's) or a dict with ``in_channels``, ``out_channels``,
``kernel``, ``stride`` and ``size`` (the input's; padding is kernel // 2).
"""
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import pack_sparse_filter, sparse_conv2d_packed
from . import deepsparse_peer
from .peers import probe, prune_masked_conv2d, tf32, with_tf32
from .timing import check_same, geometric_mean, time_interleaved_stats

# (channels, spatial size) of ResNet-50's 3x3 convolutions, one per stage.
RESNET50_3X3 = [(64, 56), (128, 28), (256, 14), (512, 7)]
SPARSITIES = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99]
HEADLINE_SPARSITIES = [0.8, 0.9, 0.95, 0.98]  # the per-cell rows a compact table keeps
OUR_METHODS = ["direct", "unfold", "dense", "auto", "spmm"]
BASELINE = "dense"
PEER = deepsparse_peer.NAME
# The contenders a compact GFLOP/s table keeps (the JSON and the full table have every one).
GFLOPS_HEADLINE = [BASELINE, "ours:auto", "ours:direct", PEER]
# TF32 rounds the inputs to 10 mantissa bits: its outputs are compared more loosely, with an
# absolute bound relative to the output's largest magnitude (the error grows with the number
# of kept taps summed: 0.068 was seen at 512 channels, 50 % sparsity, outputs up to ~200).
TF32_TOLERANCE = (1e-2, 3e-3)
NOISE = 0.05  # differences under 5 % are not called a loss
PIN_HEAP = True  # __main__ raises glibc's malloc thresholds before this suite (bench/machine.py)


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run: layers, sparsities, batch (8 on CPU, 64 on GPU as in issue 4), rounds, and
    DeepSparse as a peer on the CPU."""
    return dict(layers=RESNET50_3X3[:2] if quick else RESNET50_3X3,
                sparsities=[0.9, 0.95] if quick else SPARSITIES,
                batch=batch or (8 if device == "cpu" else 64),
                rounds=rounds or (5 if quick else 15), methods=OUR_METHODS,
                deepsparse=device == "cpu")


def layer_spec(layer) -> Dict:
    """A layer as a dict (in_channels, out_channels, kernel, stride, size, padding,
    out_size); ``(channels, size)`` is a 3x3 stride-1 layer from channels to channels."""
    if isinstance(layer, dict):
        spec = dict(layer)
    else:
        channels, size = layer
        spec = dict(in_channels=channels, out_channels=channels, kernel=3, stride=1, size=size)
    spec.setdefault("stride", 1)
    spec["padding"] = spec["kernel"] // 2
    spec["out_size"] = (spec["size"] + 2 * spec["padding"] - spec["kernel"]) // spec["stride"] + 1
    return spec


def layer_kind(spec: Dict) -> str:
    """'3x3', '1x1', '3x3/2' (kernel, and the stride where it is not 1)."""
    kind = f"{spec['kernel']}x{spec['kernel']}"
    return kind + (f"/{spec['stride']}" if spec["stride"] != 1 else "")


def layer_label(spec: Dict) -> str:
    """'64x56x56' for this suite's 3x3 stride-1 square layers (as in every earlier result);
    else e.g. '1x1 256->64 @56' or '3x3/2 128->128 @56->28'."""
    if spec["kernel"] == 3 and spec["stride"] == 1 and spec["in_channels"] == spec["out_channels"]:
        return f"{spec['in_channels']}x{spec['size']}x{spec['size']}"
    size = f"@{spec['size']}" + (f"->{spec['out_size']}" if spec["out_size"] != spec["size"]
                                 else "")
    return f"{layer_kind(spec)} {spec['in_channels']}->{spec['out_channels']} {size}"


def useful_flop(kept: int, batch: int, out_size: int) -> float:
    """2 x kept taps x N x H_out x W_out: a multiply and an add per kept tap per output pixel."""
    return 2.0 * kept * batch * out_size * out_size


def seed_recipe(x, weight, union, stride: int = 1, padding: int = 1):
    """The recipe's unfold + matmul, made shape-correct: unfold only the union of kept taps."""
    n = x.shape[0]
    columns = F.unfold(x, weight.shape[2:], padding=padding, stride=stride)[:, union]
    out = weight.reshape(weight.shape[0], -1)[:, union] @ columns
    h = (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1
    w = (x.shape[3] + 2 * padding - weight.shape[3]) // stride + 1
    return out.view(n, weight.shape[0], h, w)


def _contenders(x, weight, mask, device, methods, stride: int = 1, padding: int = 1):
    """Every contender for one (layer, sparsity) cell, and the methods that are not available.
    ``weight`` is unpruned; ``mask`` keeps its taps."""
    pruned = weight * mask
    channels = pruned.shape[0]
    row_ptr, col_idx, values = pack_sparse_filter(pruned)
    union = (pruned.reshape(channels, -1) != 0).any(0).nonzero().squeeze(1)
    contenders = {BASELINE: lambda: F.conv2d(x, pruned, None, stride, padding)}
    if device == "cuda":
        contenders["dense:tf32"] = with_tf32(True, contenders[BASELINE])
        contenders["dense:no-tf32"] = with_tf32(False, contenders[BASELINE])
    pruned_layer = prune_masked_conv2d(weight, mask, padding=padding, stride=stride)
    contenders["prune-mask"] = lambda: pruned_layer(x)
    contenders["seed-recipe"] = lambda: seed_recipe(x, pruned, union, stride, padding)
    unavailable = {}
    for method in methods:
        fn = (lambda m=method: sparse_conv2d_packed(
            x, row_ptr, col_idx, values, list(pruned.shape), None, [stride, stride],
            [padding, padding], [0, 0], [1, 1], 1, m))
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
    catches any wrong tap or index (those errors are of the output's own size). Returns the
    reference output."""
    outputs = {name: fn() for name, fn in contenders.items()}
    with tf32(False):
        outputs["reference"] = contenders[BASELINE]()
    scale = outputs["reference"].abs().max().item()
    tolerance = (TF32_TOLERANCE[0], TF32_TOLERANCE[1] * scale)
    loose = {name: tolerance for name in outputs} if device == "cuda" else {}
    check_same(outputs, "reference", rtol=1e-3, atol=1e-3, tolerances=loose)
    return outputs["reference"]


class PeerSession:
    """The DeepSparse worker for one suite run (started only if the config asks for it, on
    the CPU), and what the report says about it. :meth:`contender` gives a checked contender
    for one cell, or None and why not; a worker that fails is not asked again."""

    def __init__(self, wanted: bool, device: str, threads: int):
        self.peer, self.note = None, None
        if wanted and device == "cpu":
            self.peer, self.note = deepsparse_peer.start(threads)
        elif wanted:
            self.note = f"DeepSparse left out: CPU only (device {device})"

    def record(self) -> Dict:
        """For the result JSON (config['deepsparse_peer'])."""
        return deepsparse_peer.describe_for_json(self.peer, self.note or "not asked for")

    def contender(self, model: torch.nn.Module, x: torch.Tensor, reference: torch.Tensor,
                  label: str, rtol: float = 1e-3, atol: float = 1e-3):
        """``(contender, None)`` when DeepSparse computes ``reference`` from ``x`` within
        the tolerance; ``(None, why)`` otherwise (also when no peer runs: the start note)."""
        if self.peer is None:
            return None, self.note
        try:
            remote = self.peer.contender(model, x, label)
        except deepsparse_peer.WorkerError as error:
            self.note = f"DeepSparse left out after the worker failed: {error}"
            self.peer.close()
            self.peer = None
            return None, self.note
        except NotImplementedError as error:  # onnx_spec.Unsupported
            return None, f"DeepSparse: not exported: {error}"
        try:
            check_same({"reference": reference, PEER: remote()}, "reference", rtol=rtol,
                       atol=atol)
        except (AssertionError, deepsparse_peer.WorkerError) as error:
            remote.free()
            return None, f"DeepSparse left out in this cell: {error}"
        return remote, None

    def time(self, contenders: Dict, unavailable: Dict, **timing) -> Dict:
        """``time_interleaved_stats(contenders, **timing)``; if the worker fails on the way,
        the cell is timed again without DeepSparse, and ``unavailable`` says why."""
        try:
            return time_interleaved_stats(contenders, **timing)
        except deepsparse_peer.WorkerError as error:
            contenders.pop(PEER, None)
            self.note = f"DeepSparse left out after the worker failed: {error}"
            unavailable[PEER] = self.note
            self.close()
            return time_interleaved_stats(contenders, **timing)

    def close(self, config: Optional[Dict] = None) -> None:
        """Ends the worker; with ``config``, records there how the peer ended (where the run
        asked for it)."""
        if self.peer is not None:
            self.peer.close()
            self.peer = None
        if config is not None and config.get("deepsparse"):
            config["deepsparse_peer"]["note_at_end"] = self.note


def _peer_model(pruned: torch.Tensor, spec: Dict) -> torch.nn.Module:
    """The pruned layer as the nn.Conv2d DeepSparse gets (through bench/onnx_spec.py)."""
    conv = torch.nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel"],
                           stride=spec["stride"], padding=spec["padding"], bias=False)
    with torch.no_grad():
        conv.weight.copy_(pruned.cpu())
    return torch.nn.Sequential(conv).eval()


def _batches(config: Dict) -> List[int]:
    return list(config.get("batches") or [config["batch"]])


def _measure_cell(x, weight, mask, spec: Dict, device: str, config: Dict,
                  session: PeerSession, label: str) -> Tuple[Dict, Dict, Dict]:
    """Checks and times every contender of one cell: (seconds, faults, unavailable)."""
    with torch.no_grad():
        contenders, unavailable = _contenders(x, weight, mask, device, config["methods"],
                                              spec["stride"], spec["padding"])
        reference = _check(contenders, device)
        remote, why = (None, None)
        if config.get("deepsparse"):
            remote, why = session.contender(_peer_model(weight * mask, spec), x.cpu(),
                                            reference.cpu(), label)
        if remote is not None:
            contenders[PEER] = remote
        elif why:
            unavailable[PEER] = why
        stats = session.time(contenders, unavailable, rounds=config["rounds"],
                             min_round_seconds=0.02, device=device)
        if remote is not None and session.peer is not None:
            remote.free()
    return stats["seconds"], stats["faults"], unavailable


def run(config: Dict, device: str = "cpu", progress=None, measure=None,
        passes: int = 1) -> List[Dict]:
    """One row per (layer, batch, sparsity): seconds, speedup over the baseline, useful
    GFLOP/s and minor page faults per call of each contender. With ``config['deepsparse']``
    the DeepSparse peer is tried (CPU only) and what was found is recorded in
    ``config['deepsparse_peer']``. ``measure`` replaces the forward cell's measurement (the
    training suite's steps, bench/sparse_filter_train.py), each of ``passes`` passes as
    much useful work as the forward."""
    measure = measure or _measure_cell
    rows = []
    generator = torch.Generator().manual_seed(0)
    batches = _batches(config)
    session = PeerSession(config.get("deepsparse", False), device, torch.get_num_threads())
    if config.get("deepsparse"):
        config["deepsparse_peer"] = session.record()
    try:
        for layer in config["layers"]:
            spec = layer_spec(layer)
            label = layer_label(spec)
            x_all = torch.randn(max(batches), spec["in_channels"], spec["size"], spec["size"],
                                generator=generator).to(device)
            weight = torch.randn(spec["out_channels"], spec["in_channels"], spec["kernel"],
                                 spec["kernel"], generator=generator)
            masks = [(sparsity, (torch.rand(weight.shape, generator=generator) >= sparsity)
                      .float()) for sparsity in config["sparsities"]]
            for batch in batches:
                x = x_all[:batch].contiguous()
                for sparsity, mask in masks:
                    seconds, faults, unavailable = measure(
                        x, weight.to(device), mask.to(device), spec, device, config, session,
                        f"{label.replace(' ', '_').replace('>', '')}-b{batch}-s{sparsity}")
                    kept = int(mask.sum())
                    flop = passes * useful_flop(kept, batch, spec["out_size"])
                    row = dict(layer=label, kind=layer_kind(spec), channels=spec["in_channels"],
                               in_channels=spec["in_channels"],
                               out_channels=spec["out_channels"], kernel=spec["kernel"],
                               stride=spec["stride"], size=spec["size"],
                               out_size=spec["out_size"], batch=batch, sparsity=sparsity,
                               density=float(mask.mean()), kept=kept, useful_gflop=flop / 1e9,
                               seconds=seconds, faults=faults, unavailable=unavailable,
                               **rates(seconds, flop))
                    rows.append(row)
                    if progress:
                        progress(row)
    finally:
        session.close(config)
    return rows


def rates(seconds: Dict[str, float], flop: float) -> Dict[str, Dict[str, float]]:
    """Each contender's speedup over the baseline and useful GFLOP/s, from its seconds."""
    return dict(speedup={name: seconds[BASELINE] / t for name, t in seconds.items()},
                gflops={name: flop / t / 1e9 for name, t in seconds.items()})


def cells(config: Dict) -> int:
    """How many rows :func:`run` will produce (for the progress bar)."""
    return len(config["layers"]) * len(config["sparsities"]) * len(_batches(config))


def describe(row: Dict) -> str:
    """One cell in a few words, for the progress bar."""
    fastest = min(row["seconds"], key=row["seconds"].get)
    return (f"{row['layer']} b{row['batch']} {row['sparsity']:.0%}: fastest {fastest} "
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


def series(row: Dict, rows: List[Dict]) -> str:
    """The name of the line a row is on (a layer swept over sparsity): its layer, with the
    batch where ``rows`` hold more than one batch."""
    several = len({r["batch"] for r in rows}) > 1
    return f"{row['layer']} b{row['batch']}" if several else row["layer"]


def crossovers(rows: List[Dict]) -> Dict[str, Dict[str, Dict]]:
    """Per contender of ours, per layer (and batch, where there are several): :func:`crossover`."""
    keys = list(dict.fromkeys(series(r, rows) for r in rows))
    result = {}
    for name in contender_names(rows):
        if not name.startswith("ours:"):
            continue
        result[name] = {key: crossover([(r["sparsity"], r["speedup"][name]) for r in rows
                                        if series(r, rows) == key and name in r["speedup"]])
                        for key in keys}
    return result


def summarize(rows: List[Dict]) -> Dict:
    """Geometric-mean speedup over the baseline per sparsity and contender, crossovers, and
    per contender the best useful GFLOP/s of any cell."""
    per_sparsity = {}
    for sparsity in sorted({r["sparsity"] for r in rows}):
        selected = [r for r in rows if r["sparsity"] == sparsity]
        per_sparsity[str(sparsity)] = {
            name: geometric_mean(r["speedup"][name] for r in selected if name in r["speedup"])
            for name in contender_names(selected)}
    best = {}
    for r in rows:
        for name, rate in r.get("gflops", {}).items():
            if rate > best.get(name, dict(gflops=-1.0))["gflops"]:
                best[name] = dict(gflops=rate, layer=r["layer"], batch=r["batch"],
                                  sparsity=r["sparsity"])
    return dict(geomean=per_sparsity, crossover=crossovers(rows), best_gflops=best)


def _crossover_text(c: Dict) -> str:
    if c["kind"] == "never":
        return "never (in range)"
    if c["kind"] == "below":
        return f"<= {c['sparsity']:.0%}"
    return f"{c['sparsity']:.1%}"


def peak_lines(result: Dict) -> List[str]:
    """The peak the GFLOP/s are measured against and how it was found, from the machine
    record (bench/machine.py's cpu_peak); nothing where the result has none."""
    peak = result.get("machine", {}).get("peak")
    if not peak or not peak.get("peak_gflops"):
        return []
    text = (f"float32 peak {peak['peak_gflops']:.0f} GFLOP/s = {peak['cores']} cores x "
            f"{peak['mhz']:.0f} MHz x {peak['flop_per_cycle']} FLOP/cycle (one 512-bit FMA a "
            f"cycle a core; clock from {peak['mhz_source']})")
    if peak.get("sgemm_gflops"):
        text += (f"; a 2048x2048 float32 matmul through torch reached "
                 f"{peak['sgemm_gflops']:.0f} GFLOP/s here (above the peak: the cores ran "
                 f"faster than the clock reported, or retire more than one 512-bit FMA a "
                 f"cycle, as Intel Xeons with two FMA units do; the matmul's rate is the "
                 f"better yardstick then)" if peak["sgemm_gflops"] > peak["peak_gflops"]
                 else f"; a 2048x2048 float32 matmul through torch reached "
                      f"{peak['sgemm_gflops']:.0f} GFLOP/s here")
    return [text + "."]


def _peak(result: Dict) -> Optional[float]:
    return (result.get("machine", {}).get("peak") or {}).get("peak_gflops")


def _row_key(r: Dict, several_batches: bool) -> str:
    return f"| {r['layer']} | " + (f"{r['batch']} | " if several_batches else "") + \
        f"{r['sparsity']:.0%} |"


def gflops_table(result: Dict, rows: List[Dict], compact: bool) -> List[str]:
    """Useful GFLOP/s per cell and contender (compact: the headline contenders), and the best
    contender's share of the peak."""
    if not any("gflops" in r for r in rows):
        return []
    every = contender_names(rows)
    names = [n for n in (GFLOPS_HEADLINE if compact else every) if n in every]
    several = len({r["batch"] for r in rows}) > 1
    peak = _peak(result)
    head = "| layer | " + ("batch | " if several else "") + "sparsity | useful GFLOP | "
    lines = ["Useful GFLOP/s (2 x kept taps x N x H_out x W_out / time)"
             + (f"; the last column: the fastest contender's share of the {peak:.0f} GFLOP/s "
                "peak" if peak else "") + ":", "",
             head + " | ".join(names) + " | fastest |",
             "|---|" + ("---|" if several else "") + "---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        rates = r.get("gflops", {})
        if not rates:
            continue
        fastest = max(rates, key=rates.get)
        share = f", {rates[fastest] / peak:.0%} of peak" if peak else ""
        lines.append(_row_key(r, several) + f" {r['useful_gflop']:.3g} | "
                     + " | ".join(f"{rates[n]:.1f}" if n in rates else "n/a" for n in names)
                     + f" | {fastest} {rates[fastest]:.1f}{share} |")
    return lines


def faults_line(result: Dict) -> List[str]:
    """The most minor page faults per call any contender had in any cell, and the heap
    setting they were measured under."""
    worst = {}
    for r in result["rows"]:
        for name, count in r.get("faults", {}).items():
            worst[name] = max(worst.get(name, 0.0), count)
    if not worst:
        return []
    heap = result.get("heap") or {}
    how = ("glibc malloc thresholds raised (mallopt M_MMAP_THRESHOLD "
           f"{heap.get('M_MMAP_THRESHOLD', 0) / 2 ** 20:.0f} MiB, M_TRIM_THRESHOLD "
           f"{heap.get('M_TRIM_THRESHOLD', 0) / 2 ** 30:.0f} GiB)" if heap.get("applied")
           else "glibc malloc defaults")
    return [f"Minor page faults per call, the most in any cell ({how}): "
            + ", ".join(f"{name} {count:.3g}" for name, count in worst.items()) + "."]


def markdown(result: Dict, compact: bool = False) -> str:
    """Tables: speedup per cell, useful GFLOP/s per cell, geometric mean per sparsity,
    crossover per layer (where two or more sparsities were measured). ``compact`` keeps the
    per-cell rows of the headline sparsities only (the means and the crossovers still use
    every sparsity) and the headline contenders' GFLOP/s."""
    rows = result["rows"]
    if not rows:
        return "(no cells)"
    names = [n for n in contender_names(rows) if n != BASELINE]
    batches = sorted({r["batch"] for r in rows})
    several = len(batches) > 1
    batch_text = (f"batch {batches[0]}" if not several
                  else "batches " + ", ".join(map(str, batches)))
    lines = []
    if result.get("device") == "cuda":
        machine = result.get("machine", {})
        lines += [f"Baseline `{BASELINE}`: cuDNN through F.conv2d with torch's default flags "
                  f"(torch.backends.cudnn.allow_tf32="
                  f"{machine.get('default_cudnn_allow_tf32', '?')}, "
                  f"torch.backends.cuda.matmul.allow_tf32="
                  f"{machine.get('default_matmul_allow_tf32', '?')}); {batch_text}.", ""]
    else:
        lines += [f"Baseline `{BASELINE}`: F.conv2d (oneDNN); {batch_text}.", ""]
    peak = peak_lines(result)
    lines += peak + ([""] if peak else [])
    lines += ["| layer | " + ("batch | " if several else "") + f"sparsity | {BASELINE} ms | "
              + " | ".join(names) + " |",
              "|---|" + ("---|" if several else "") + "---|---|" + "---|" * len(names)]
    shown = [r for r in rows if r["sparsity"] in HEADLINE_SPARSITIES] if compact else rows
    shown = shown or rows
    for r in shown:
        cells_ = [f"{r['speedup'][n]:.2f}x" if n in r["speedup"] else "n/a" for n in names]
        lines.append(_row_key(r, several) + f" {r['seconds'][BASELINE] * 1e3:.3g} | "
                     + " | ".join(cells_) + " |")
    table = gflops_table(result, shown, compact)
    if table:
        lines += [""] + table
    summary = summarize(rows)
    lines += ["", f"Geometric mean of the speedup over `{BASELINE}`, per sparsity:", "",
              "| sparsity | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for sparsity, means in summary["geomean"].items():
        lines.append(f"| {float(sparsity):.0%} | "
                     + " | ".join(f"{means[n]:.2f}x" if n in means else "n/a" for n in names)
                     + " |")
    keys = list(dict.fromkeys(series(r, rows) for r in rows))
    swept = min(sum(series(r, rows) == key for r in rows) for key in keys)
    if summary["crossover"] and swept >= 2:
        lines += ["", f"Crossover: the sparsity above which each of our methods beats "
                  f"`{BASELINE}` (interpolated between sampled sparsities):", "",
                  "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, per_layer in summary["crossover"].items():
            lines.append(f"| {name} | " + " | ".join(_crossover_text(per_layer[key])
                                                      for key in keys) + " |")
    faults = faults_line(result)
    if faults:
        lines += [""] + faults
    missing = {}
    for r in rows:
        for name, error in r.get("unavailable", {}).items():
            missing.setdefault(name, {}).setdefault(error, []).append(r)
    if missing:
        lines += ["", "Not available in this build or on this device, or left out:", ""]
        for name, errors in missing.items():
            for error, where in errors.items():
                cells_ = "" if len(where) == len(rows) else \
                    f" ({len(where)} of {len(rows)} cells)"
                lines.append(f"- `{name}`{cells_}: {error}")
    return "\n".join(lines)


def losses(result: Dict) -> List[str]:
    """Plain words on where we lose: cells where our best method is slower than a peer by
    more than the noise margin, or where ``auto`` is below 0.95x of the baseline."""
    words = []
    rows = result["rows"]
    for r in rows:
        ours = {n: s for n, s in r["speedup"].items() if n.startswith("ours:")}
        if not ours:
            continue
        where = f"{series(r, rows)} at {r['sparsity']:.0%}"
        best_ours = max(ours, key=ours.get)
        peers = {n: s for n, s in r["speedup"].items() if not n.startswith("ours:")}
        best_peer = max(peers, key=peers.get)
        if peers[best_peer] > ours[best_ours] * (1 + NOISE):
            words.append(f"{where}: our best ({best_ours}, {ours[best_ours]:.2f}x) is slower "
                         f"than {best_peer} ({peers[best_peer]:.2f}x)")
        if "ours:auto" in ours and ours["ours:auto"] < 0.95:
            words.append(f"{where}: ours:auto is {ours['ours:auto']:.2f}x of {BASELINE}")
    return words
