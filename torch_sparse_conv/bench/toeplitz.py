"""Sparse-input (Toeplitz) conv2d benchmark: sparse_convolution's own 36-cell grid plus
one-variable sweeps (batch, density, image size, kernel size) around a base cell.

Grid cells: images 50x50 and 100x100, kernels 5x5 and 11x11, batch 1, 50, 500, density 0.001,
0.01, 0.1; mode 'same'; float64. As in sparse_convolution's benchmark, construction plus call
is timed. Contenders, same process, same inputs, every output checked equal to
scipy.signal.convolve2d's (or, where that is too slow to run, F.conv2d's) first:
  ours:compat          torch_sparse_conv.compat.Toeplitz_convolution2d (scipy in, scipy out)
  ours:<method>        the op on a torch CSR tensor on the CPU, each method the build accepts
                       (auto, direct, precomputed; one it rejects is recorded 'not available')
  ours:<method>@cuda   the same on the GPU (--device cuda), where the build has a CUDA kernel
  ours:compat-precomputed  compat with method='precomputed' (T built inside the timed call)
  ours:precomputed-kept[@cuda]  toeplitz_conv2d_precomputed with T built once, outside the
                       timer (what ToeplitzConv2d(method='precomputed') pays per call)
  sc:<method>+<backend>[@cuda]  every method and backend of sparse_convolution (if installed);
                       its torch backend also on the GPU with --device cuda
  scipy:convolve2d     scipy.signal.convolve2d per image on the densified input (dense out)
  torch:conv2d[@cuda]  F.conv2d on the densified input (dense out)
The dense peers get the input already densified (densifying is not timed: their best case).
The bar is sparse_convolution's default, direct with numba (scipy's, then F.conv2d's where
sparse_convolution is missing).
"""
import itertools
import zlib
from typing import Dict, List, Optional

import numpy as np
import scipy.sparse
import torch

from .. import toeplitz as toeplitz_module
from ..compat import Toeplitz_convolution2d
from ..toeplitz import toeplitz_matrix
from .peers import (dense_conv2d_same, probe, scipy_convolve2d_batch, sparse_convolution,
                    sparse_convolution_pairs)
from .timing import geometric_mean, time_interleaved

BARS = ["sc:direct+numba", "scipy:convolve2d", "torch:conv2d"]
OUR_METHODS = ["auto", "direct", "precomputed"]
BASE_CELL = (100, 5, 50, 0.01)  # (size, kernel, batch, density) the sweeps vary one by one
SWEEPS = dict(batch=[1, 10, 50, 200, 1000], density=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3],
              size=[25, 50, 100, 200, 400], kernel=[3, 5, 7, 11, 15, 21])
QUICK_SWEEPS = dict(batch=[10, 50], density=[0.01, 0.1], size=[50, 100], kernel=[5, 11])
SWEEP_FIELDS = ("size", "kernel", "batch", "density")
NOISE = 0.05  # differences under 5 % are not called a loss
SCIPY_MAX_WORK = 2e9  # multiply-adds past which scipy's dense convolve2d is left out


def grid(quick: bool) -> List[List]:
    """sparse_convolution's 36 cells as [size, kernel, batch, density] (one cell if quick)."""
    if quick:
        return [list(BASE_CELL)]
    return [list(cell) for cell in itertools.product([50, 100], [5, 11], [1, 50, 500],
                                                     [0.001, 0.01, 0.1])]


def default_config(quick: bool, device: str, batch: Optional[int] = None,
                   rounds: Optional[int] = None) -> Dict:
    """What to run. ``batch`` is ignored: the grid and sweeps set their own batches."""
    return dict(grid=grid(quick), base=list(BASE_CELL),
                sweeps=QUICK_SWEEPS if quick else SWEEPS,
                rounds=rounds or (3 if quick else 5), methods=OUR_METHODS, peers=True)


def plan(config: Dict) -> Dict[tuple, List[str]]:
    """Every distinct cell to measure, with the groups ('grid', 'sweep:<field>') it is in."""
    cells = {}
    for cell in config["grid"]:
        cells.setdefault(tuple(cell), []).append("grid")
    for field, values in config["sweeps"].items():
        index = SWEEP_FIELDS.index(field)
        for value in values:
            cell = list(config["base"])
            cell[index] = value
            cells.setdefault(tuple(cell), []).append(f"sweep:{field}")
    return cells


def cells(config: Dict) -> int:
    """How many rows :func:`run` will produce (for the progress bar)."""
    return len(plan(config))


def make_batch(size: int, batch: int, density: float, seed: int) -> scipy.sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = [scipy.sparse.random(1, size * size, density=density, random_state=rng,
                                format="csr") for _ in range(batch)]
    return scipy.sparse.vstack(rows).tocsr()


def ours(x: torch.Tensor, kernel: torch.Tensor, shape, method: str) -> torch.Tensor:
    """Our op on a CSR batch: through toeplitz_conv2d for the methods the Python layer knows,
    straight through the registered op for others (so a method added to the op is timed
    before the wrapper lists it)."""
    if method in toeplitz_module.METHODS:
        return toeplitz_module.toeplitz_conv2d(x, kernel, shape, "same", method)
    crow, col, values = torch.ops.torch_sparse_conv.toeplitz_conv2d(
        x.crow_indices(), x.col_indices(), x.values(), kernel, list(shape), "same", method)
    return torch.sparse_csr_tensor(crow, col, values, size=x.shape, check_invariants=False)


def _as_dense(out, batch: int) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        out = out.to_dense() if out.layout != torch.strided else out
        return out.cpu().numpy().reshape(batch, -1)
    if scipy.sparse.issparse(out):
        return out.toarray().reshape(batch, -1)
    return np.asarray(out).reshape(batch, -1)


_KEPT_T = {}


def _precomputed_kept(x, kernel, shape):
    """x @ T with T built on the first call for this kernel and kept."""
    key = (kernel.data_ptr(), kernel.device, tuple(shape))
    if key not in _KEPT_T:
        _KEPT_T[key] = (kernel, toeplitz_matrix(kernel, shape, "same"))
    t = _KEPT_T[key][1]
    parts = torch.ops.torch_sparse_conv.toeplitz_conv2d_precomputed(
        x.crow_indices(), x.col_indices(), x.values(), kernel, list(shape), "same",
        t.crow_indices(), t.col_indices(), t.values())
    return torch.sparse_csr_tensor(*parts, size=(x.shape[0], shape[0] * shape[1]),
                                   check_invariants=False)


def _contenders(cell, config: Dict, device: str):
    """Every contender for one grid cell (all fed the same batch and kernel), and the ones
    left out before running, with why."""
    size, ksize, nbatch, density = cell
    seed = zlib.crc32(repr(tuple(cell)).encode())
    x = make_batch(size, nbatch, density, seed)
    k = np.random.default_rng(seed + 1).random((ksize, ksize))
    return contenders_for(x, k, (size, size), config, device)


def torch_csr(x: scipy.sparse.csr_matrix) -> torch.Tensor:
    """A scipy CSR batch as a torch CSR tensor (int64 indices, the same values)."""
    return torch.sparse_csr_tensor(torch.from_numpy(x.indptr.astype(np.int64)),
                                   torch.from_numpy(x.indices.astype(np.int64)),
                                   torch.from_numpy(x.data), size=x.shape,
                                   check_invariants=True)


def contenders_for(x: scipy.sparse.csr_matrix, k: np.ndarray, shape, config: Dict,
                   device: str, dense: bool = True):
    """Every contender on the scipy CSR batch ``x`` ``(B, H*W)`` of ``shape = (H, W)`` images
    and the kernel ``k``, mode 'same', and the ones left out before running, with why.
    ``dense=False`` leaves out the peers that need the batch densified (too big to hold)."""
    nbatch = x.shape[0]
    x_cpu = torch_csr(x)
    k_cpu = torch.from_numpy(k)
    devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
    contenders = {
        "ours:compat": lambda: Toeplitz_convolution2d(shape, k, "same")(x),
        # T built inside the timed construction + call, as sparse_convolution's own
        # precomputed method builds it.
        "ours:compat-precomputed": lambda: Toeplitz_convolution2d(
            shape, k, "same", method="precomputed")(x),
    }
    for dev in devices:
        x_dev, k_dev = x_cpu.to(dev), k_cpu.to(dev)
        suffix = "" if dev == "cpu" else "@" + dev
        for method in config["methods"]:
            contenders[f"ours:{method}{suffix}"] = (
                lambda m=method, xd=x_dev, kd=k_dev: ours(xd, kd, shape, m))
        # T built once outside the timer: what ToeplitzConv2d(method='precomputed') pays per
        # call once it keeps T.
        contenders[f"ours:precomputed-kept{suffix}"] = (
            lambda xd=x_dev, kd=k_dev: _precomputed_kept(xd, kd, shape))
    package = sparse_convolution() if config.get("peers", True) else None
    if package is not None:
        for method, backend in sparse_convolution_pairs(package):
            for dev in devices if backend == "torch" else ["cpu"]:
                suffix = "" if dev == "cpu" else "@" + dev
                contenders[f"sc:{method}+{backend}{suffix}"] = (
                    lambda m=method, b=backend, d=dev: package.Toeplitz_convolution2d(
                        shape, k, "same", method=m, backend=b, device=d)(x))
    skipped = {}
    if package is None and config.get("peers", True):
        skipped["sc:*"] = "sparse_convolution is not installed"
    if not dense:
        return contenders, skipped
    images = x.toarray().reshape(nbatch, *shape)
    images_cpu = torch.from_numpy(images).unsqueeze(1)
    if nbatch * shape[0] * shape[1] * k.size <= SCIPY_MAX_WORK:
        contenders["scipy:convolve2d"] = lambda: scipy_convolve2d_batch(images, k, "same")
    else:
        skipped["scipy:convolve2d"] = "left out: too slow at this size"
    for dev in devices:
        images_dev, k_dev = images_cpu.to(dev), k_cpu.to(dev)
        contenders["torch:conv2d" + ("" if dev == "cpu" else "@" + dev)] = (
            lambda i=images_dev, kd=k_dev: dense_conv2d_same(i, kd))
    return contenders, skipped


def _check(contenders: Dict, nbatch: int) -> Dict[str, str]:
    """Runs each contender once and checks it against scipy's result (F.conv2d's where scipy
    was left out). Returns the contenders that could not run, with why; drops them."""
    unavailable, outputs = {}, {}
    for name in list(contenders):
        result = {}
        error = probe(lambda: result.setdefault("out", contenders[name]()))
        if error is None:
            outputs[name] = _as_dense(result["out"], nbatch)
        else:
            unavailable[name] = error
            del contenders[name]
    reference = "scipy:convolve2d" if "scipy:convolve2d" in outputs else "torch:conv2d"
    for name, out in outputs.items():
        if not np.allclose(out, outputs[reference], atol=1e-10):
            raise AssertionError(f"benchmark contender {name!r} disagrees with {reference!r} "
                                 f"(max abs error {np.abs(out - outputs[reference]).max():.3g})")
    return unavailable


def run(config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
    """One row per distinct cell: seconds per contender, speedup over the bar, the winner."""
    rows = []
    for cell, groups in plan(config).items():
        size, ksize, nbatch, density = cell
        contenders, skipped = _contenders(cell, config, device)
        unavailable = _check(contenders, nbatch)
        unavailable.update(skipped)
        seconds = time_interleaved(contenders, rounds=config["rounds"], warmup=1,
                                   min_round_seconds=0.02, device=device)
        bar = next(name for name in BARS if name in seconds)
        row = dict(cell=f"{size}x{size} k{ksize} b{nbatch} d{density:g}", size=size,
                   kernel=ksize, batch=nbatch, density=density, groups=groups,
                   seconds=seconds, bar=bar, winner=min(seconds, key=seconds.get),
                   speedup={name: seconds[bar] / t for name, t in seconds.items()},
                   unavailable=unavailable)
        rows.append(row)
        if progress:
            progress(row)
    return rows


def describe(row: Dict) -> str:
    """One cell in a few words, for the progress bar."""
    return f"{row['cell']}: fastest {row['winner']} {row['seconds'][row['winner']] * 1e3:.3g} ms"


def names_of(rows: List[Dict]) -> List[str]:
    """Every contender timed in any of ``rows``, in first-seen order."""
    names = []
    for row in rows:
        names += [n for n in row["seconds"] if n not in names]
    return names


def in_group(rows: List[Dict], group: str) -> List[Dict]:
    """The rows of the grid ('grid') or of one sweep ('sweep:<field>')."""
    return [r for r in rows if group in r["groups"]]


def summarize(rows: List[Dict]) -> Dict:
    """For each of our contenders on the grid: cells faster than the bar, geometric-mean
    speedup; and how many grid cells each contender wins outright."""
    cells_ = in_group(rows, "grid")
    summary = dict(ours={}, winners={})
    for name in names_of(cells_):
        if name.startswith("ours:"):
            speedups = [r["speedup"][name] for r in cells_ if name in r["speedup"]]
            summary["ours"][name] = dict(
                wins=sum(s > 1.0 for s in speedups), cells=len(speedups),
                geomean=geometric_mean(speedups))
    for r in cells_:
        summary["winners"][r["winner"]] = summary["winners"].get(r["winner"], 0) + 1
    return summary


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


def _shown(name: str) -> bool:
    """The columns a compact table keeps: ours, the bar and the dense peers."""
    return name.startswith(("ours:", "scipy:", "torch:")) or name in BARS


def _table(rows: List[Dict], first: str, label, compact: bool) -> List[str]:
    """Milliseconds per contender (ours with the speedup over the bar) and the winner; a
    compact table folds the other sparse_convolution pairs into one 'best other' column."""
    names = [n for n in names_of(rows) if _shown(n) or not compact]
    others = [n for n in names_of(rows) if n not in names]
    header = names + (["best other sparse_convolution"] if others else [])
    lines = [f"| {first} | " + " | ".join(header) + " | winner |",
             "|---|" + "---|" * (len(header) + 1)]
    for r in rows:
        cells_ = []
        for name in names:
            if name not in r["seconds"]:
                cells_.append("n/a")
                continue
            text = _ms(r["seconds"][name])
            if name.startswith("ours:"):
                text += f" ({r['speedup'][name]:.2f}x)"
            cells_.append(text)
        if others:
            present = [n for n in others if n in r["seconds"]]
            best = min(present, key=r["seconds"].get) if present else None
            cells_.append(f"{best} {_ms(r['seconds'][best])}" if best else "n/a")
        lines.append(f"| {label(r)} | " + " | ".join(cells_) + f" | {r['winner']} |")
    return lines


def markdown(result: Dict, compact: bool = False) -> str:
    """The grid (milliseconds; ours with the speedup over the bar; each cell's winner), the
    summary, and one table per sweep. ``compact`` keeps ours, the bar and the dense peers and
    folds the rest of sparse_convolution into its best."""
    rows = result["rows"]
    lines = []
    grid_rows = in_group(rows, "grid")
    if grid_rows:
        bars = sorted({r["bar"] for r in grid_rows})
        lines += [f"Grid: milliseconds per call; ours with its speedup over the bar "
                  f"({', '.join(bars)}).", ""]
        lines += _table(grid_rows, "cell", lambda r: r["cell"], compact)
        summary = summarize(rows)
        lines += [""]
        for name, s in summary["ours"].items():
            lines.append(f"- {name}: faster than the bar in {s['wins']} of {s['cells']} cells, "
                         f"geometric-mean speedup {s['geomean']:.2f}x")
        lines.append("- cells won outright: " + ", ".join(
            f"{name} {count}" for name, count in sorted(summary["winners"].items(),
                                                         key=lambda item: -item[1])))
    base = result.get("config", {}).get("base", list(BASE_CELL))
    for field in SWEEP_FIELDS:
        swept = sorted(in_group(rows, f"sweep:{field}"), key=lambda r: r[field])
        if not swept:
            continue
        fixed = ", ".join(f"{f} {v:g}" for f, v in zip(SWEEP_FIELDS, base) if f != field)
        lines += ["", f"Sweep over {field} ({fixed}); milliseconds per call:", ""]
        lines += _table(swept, field, lambda r, f=field: f"{r[f]:g}", compact)
    missing = {n: e for r in rows for n, e in r.get("unavailable", {}).items()}
    if missing:
        lines += ["", "Not available or left out (in at least one cell):", ""]
        lines += [f"- `{name}`: {error}" for name, error in missing.items()]
    return "\n".join(lines)


def losses(result: Dict) -> List[str]:
    """Plain words on where we lose: cells whose winner is not one of ours, by more than the
    noise margin."""
    words = []
    for r in result["rows"]:
        if r["winner"].startswith("ours:"):
            continue
        ours_ = {n: s for n, s in r["seconds"].items() if n.startswith("ours:")}
        if not ours_:
            continue
        best = min(ours_, key=ours_.get)
        if ours_[best] <= r["seconds"][r["winner"]] * (1 + NOISE):
            continue
        words.append(f"{r['cell']}: {r['winner']} ({_ms(r['seconds'][r['winner']])} ms) beats "
                     f"our best, {best} ({_ms(ours_[best])} ms), by "
                     f"{ours_[best] / r['seconds'][r['winner']]:.2f}x")
    return words
