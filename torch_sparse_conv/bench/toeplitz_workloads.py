"""Sparse-input (Toeplitz) conv2d on the data its users have, not uniform random images:
calcium-imaging ROI footprints (suite ``roi``), event-camera time slices (``events``) and LiDAR
bird's-eye grids (``lidar``), as bench/workloads.py generates them; mode 'same', float64.

Contenders as in the toeplitz grid (bench/toeplitz.py), same process, same inputs:
ours:compat (construction + call, scipy in and out, as sparse_convolution's own benchmark
times it), the native op on a torch CSR tensor (ours:auto, ours:direct, ours:precomputed, and T
kept), every method and backend of sparse_convolution, scipy.signal.convolve2d and F.conv2d on
the densified batch. The bar is sparse_convolution's default, direct with numba.

Left out before timing, with a note: any contender but ours:compat, ours:auto and the bar
that would take over ``MAX_CALL_SECONDS`` a call (``QUICK_MAX_CALL_SECONDS`` with --quick;
estimated from calls on the first image and on the first ~1/16 of the images, extrapolated
linearly in the batch), the precomputed methods where T would hold over ``MAX_T_ENTRIES``
entries, and the dense peers where the densified batch would take over ``DENSE_MAX_BYTES``.
Every output is checked before timing: against scipy's (F.conv2d's where scipy is left out;
else against the bar's) on the whole batch, and against scipy.signal.convolve2d on up to
``SAMPLED_IMAGES`` images of it in every case.

Each row also has the bytes of ours:compat's and ours:auto's CSR output (index and value bytes
an entry, plus the row pointers) and the rate they are written at, beside this machine's write
bandwidth (measured once per run): the output of a blurred sparse batch is mostly fresh memory,
so that rate is the bound.
"""
import functools
import inspect
import math
import time
import zlib
from typing import Callable, Dict, List, Optional

import numpy as np
import scipy.signal
import scipy.sparse
import torch

from . import toeplitz, workloads
from .peers import probe
from .timing import geometric_mean, time_interleaved

MAX_CALL_SECONDS = 2.0       # optional contenders estimated slower than this are left out
QUICK_MAX_CALL_SECONDS = 0.3  # the same with --quick (a smoke test)
MAX_T_ENTRIES = 3e7          # precomputed methods: T of H*W*kh*kw entries (~0.5 GB at 16 B)
DENSE_MAX_BYTES = 2 ** 30    # dense peers: the densified float64 batch
SAMPLED_IMAGES = 8           # images always checked against scipy.signal.convolve2d
ALWAYS = ("ours:compat", "ours:auto", "sc:direct+numba")  # timed in every cell, never estimated
OURS = ("ours:compat", "ours:auto")                       # summarised, bytes reported


def _cells_roi(quick: bool) -> List[Dict]:
    counts, kernels = ([200], [3, 7]) if quick else ([500, 1000, 2000, 5000], [3, 7, 15])
    return [dict(label=f"512x512 n{n} k{k}", generator="roi_footprints",
                 args=dict(n_rois=n, frame=[512, 512]), shape=[512, 512], batch=n, kernel=k,
                 density=None) for n in counts for k in kernels]


def _cells_events(quick: bool) -> List[Dict]:
    shapes = [[260, 346]] if quick else [[260, 346], [480, 640]]
    batches, densities, kernels = ([8], [0.02], [3, 5]) if quick else (
        [1, 8, 64], [0.01, 0.05], [3, 5])
    return [dict(label=f"{h}x{w} b{b} d{d:.0%} k{k}", generator="event_frames",
                 args=dict(batch=b, shape=[h, w], density=d), shape=[h, w], batch=b, kernel=k,
                 density=d)
            for h, w in shapes for b in batches for d in densities for k in kernels]


def _cells_lidar(quick: bool) -> List[Dict]:
    batches, densities, kernels = ([1], [0.01], [3, 7]) if quick else (
        [1, 8], [0.005, 0.03], [3, 7])
    return [dict(label=f"512x512 b{b} d{d:.1%} k{k}", generator="lidar_bev",
                 args=dict(batch=b, shape=[512, 512], density=d), shape=[512, 512], batch=b,
                 kernel=k, density=d)
            for b in batches for d in densities for k in kernels]


# ------------------------------------------------------------------------- measurements

def csr_output_bytes(out) -> Optional[int]:
    """Bytes of a CSR result as stored: per entry its column index and value, plus the row
    pointers (a torch CSR tensor or a scipy matrix); None for anything else."""
    if isinstance(out, torch.Tensor) and out.layout == torch.sparse_csr:
        crow, col, values = out.crow_indices(), out.col_indices(), out.values()
        return (col.numel() * (col.element_size() + values.element_size())
                + crow.numel() * crow.element_size())
    if scipy.sparse.issparse(out) and out.format == "csr":
        return (out.indices.nbytes + out.data.nbytes + out.indptr.nbytes)
    return None


def effective_gbps(nbytes: Optional[int], seconds: float) -> Optional[float]:
    """Output bytes over the time per call, in GB/s (10^9 bytes)."""
    return None if nbytes is None or seconds <= 0 else nbytes / seconds / 1e9


@functools.lru_cache(maxsize=None)
def _write_bandwidth(threads: int, megabytes: int, repeats: int) -> Dict[str, float]:
    n = megabytes * 2 ** 20 // 8
    buffer = torch.empty(n, dtype=torch.float64)
    buffer.fill_(0.0)
    warm, fresh = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.fill_(1.0)
        warm.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.empty(n, dtype=torch.float64).fill_(1.0)
        fresh.append(time.perf_counter() - start)
    return dict(warm=float(n * 8 / np.median(warm) / 1e9),
                fresh=float(n * 8 / np.median(fresh) / 1e9))


def write_bandwidth(megabytes: int = 128, repeats: int = 5) -> Dict[str, float]:
    """This machine's write bandwidth at torch's thread count, GB/s (median of ``repeats``
    fills of ``megabytes``, measured once a process for each thread count): ``warm`` fills a
    buffer already mapped, ``fresh`` allocates and fills a new one (page faults included, as
    a newly allocated output pays them)."""
    return dict(_write_bandwidth(torch.get_num_threads(), megabytes, repeats))


def _call_seconds(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _estimates(x, k, shape, config: Dict, device: str, names: List[str],
               limit: float) -> Dict[str, float]:
    """Seconds a call of each of ``names`` would take on the whole batch: a warm-up call on
    the first image (it pays any JIT compile), a timed one there, one on the first ~1/16 of
    the images, a straight line through the two. A call on one image already over ``limit``
    is estimated at that call's time (methods whose cost does not grow with the batch, such
    as building T, pay it there)."""
    nbatch = x.shape[0]
    if not names or nbatch == 0:
        return {}
    part = min(nbatch, max(2, math.ceil(nbatch / 16)))
    one, _ = toeplitz.contenders_for(x[:1], k, shape, config, device)
    few, _ = toeplitz.contenders_for(x[:part], k, shape, config, device)
    estimates = {}
    for name in names:
        if name not in one:
            continue
        if probe(one[name]) is not None:  # fails here: left to the check to say why
            continue
        t1 = _call_seconds(one[name], device)
        if part == 1 or t1 > limit:
            estimates[name] = t1 * nbatch if part == 1 else t1
            continue
        tp = _call_seconds(few[name], device)
        estimates[name] = t1 + max(0.0, (tp - t1) / (part - 1)) * (nbatch - 1)
    return estimates


def _as_rows(out, rows) -> np.ndarray:
    """Rows ``rows`` of an output (torch or scipy CSR, or dense) as a dense numpy array."""
    if isinstance(out, torch.Tensor):
        out = out.cpu()
        if out.layout == torch.sparse_csr:
            crow, col, values = (a.numpy() for a in (out.crow_indices(), out.col_indices(),
                                                      out.values()))
            out = scipy.sparse.csr_matrix((values, col, crow), shape=out.shape)
        else:
            return out.numpy().reshape(out.shape[0], -1)[rows]
    if scipy.sparse.issparse(out):
        return out.tocsr()[rows].toarray()
    return np.asarray(out).reshape(np.shape(out)[0], -1)[rows]


def _agree(out, reference, nbatch: int, ncols: int) -> float:
    """Largest excess of |out - reference| over np.allclose's bound (atol 1e-10), compared
    in row blocks so a large batch is never densified whole; <= 0 where they agree."""
    step = max(1, 2 ** 24 // max(ncols, 1))
    worst = -np.inf
    for start in range(0, nbatch, step):
        rows = np.arange(start, min(nbatch, start + step))
        a, b = _as_rows(out, rows), _as_rows(reference, rows)
        worst = max(worst, float(np.max(np.abs(a - b) - (1e-10 + 1e-5 * np.abs(b)),
                                        initial=-np.inf)))
    return worst


def _check(contenders: Dict, x, k, shape, reference_order) -> Dict:
    """Runs each contender once and checks its output (see the module's docstring); drops
    the ones that fail to run (returned with why). Returns the outputs of :data:`OURS` too."""
    nbatch, ncols = x.shape
    sample = np.unique(np.linspace(0, nbatch - 1, min(nbatch, SAMPLED_IMAGES)).astype(int))
    images = x[sample].toarray().reshape(len(sample), *shape)
    expected = np.stack([scipy.signal.convolve2d(im, k, "same").reshape(-1) for im in images])
    unavailable, kept = {}, {}
    reference_name = next((n for n in reference_order if n in contenders), None)
    names = ([reference_name] if reference_name else []) + [
        n for n in contenders if n != reference_name]
    reference = None
    for name in names:
        result = {}
        error = probe(lambda: result.setdefault("out", contenders[name]()))
        if error is not None:
            unavailable[name] = error
            del contenders[name]
            continue
        out = result["out"]
        excess = np.max(np.abs(_as_rows(out, sample) - expected)
                        - (1e-10 + 1e-5 * np.abs(expected)), initial=-np.inf)
        if excess > 0:
            raise AssertionError(f"benchmark contender {name!r} disagrees with "
                                 f"scipy.signal.convolve2d on images {sample.tolist()}")
        if reference is None:
            reference = out
        elif _agree(out, reference, nbatch, ncols) > 0:
            raise AssertionError(f"benchmark contender {name!r} disagrees with "
                                 f"{reference_name!r}")
        if name in OURS:
            kept[name] = csr_output_bytes(out), _nnz(out)
    return dict(unavailable=unavailable, outputs=kept)


def _nnz(out) -> Optional[int]:
    if isinstance(out, torch.Tensor) and out.layout == torch.sparse_csr:
        return int(out.values().numel())
    return int(out.nnz) if scipy.sparse.issparse(out) else None


# ------------------------------------------------------------------------- the suites

class WorkloadSuite:
    """One named suite (``roi``, ``events``, ``lidar``) with the interface bench/report.py
    and __main__.py expect of a suite module: default_config, cells, run, describe,
    summarize, markdown, losses and a docstring whose first paragraph describes it."""

    def __init__(self, name: str, title: str, doc: str, make_cells: Callable):
        self.name, self.title, self._make_cells = name, title, make_cells
        self.__doc__ = inspect.cleandoc(doc) + "\n\n" + __doc__.split("\n\n", 1)[1]

    def default_config(self, quick: bool, device: str, batch: Optional[int] = None,
                       rounds: Optional[int] = None) -> Dict:
        """What to run. ``batch`` is ignored: the cells set their own batches."""
        return dict(cells=self._make_cells(quick), rounds=rounds or (2 if quick else 5),
                    methods=toeplitz.OUR_METHODS, peers=True,
                    max_call_seconds=QUICK_MAX_CALL_SECONDS if quick else MAX_CALL_SECONDS)

    def cells(self, config: Dict) -> int:
        """How many rows :meth:`run` will produce (for the progress bar)."""
        return len(config["cells"])

    def _left_out(self, cell: Dict, x, k, config: Dict, device: str):
        """Contenders that would be too slow or too big in this cell, with why."""
        shape = cell["shape"]
        left_out = {}
        t_entries = shape[0] * shape[1] * k.size
        dense_bytes = x.shape[0] * shape[0] * shape[1] * 8
        every, _ = toeplitz.contenders_for(x[:1], k, shape, config, device)
        names = [n for n in every if n not in ALWAYS]
        for name in names:
            if "precomputed" in name and t_entries > MAX_T_ENTRIES:
                left_out[name] = (f"left out: T would hold {t_entries:.3g} entries (over "
                                  f"{MAX_T_ENTRIES:.3g})")
        dense = dense_bytes <= DENSE_MAX_BYTES
        if not dense:
            for name in ("scipy:convolve2d", "torch:conv2d"):
                left_out[name] = (f"left out: the densified batch would take "
                                  f"{dense_bytes / 1e9:.3g} GB (over {DENSE_MAX_BYTES / 1e9:.3g})")
        tried = [n for n in names if n not in left_out]
        tried = [n for n in tried if dense or not n.startswith(("scipy:", "torch:"))]
        limit = config.get("max_call_seconds", MAX_CALL_SECONDS)
        for name, seconds in _estimates(x, k, shape, config, device, tried, limit).items():
            if seconds > limit:
                left_out[name] = f"left out: about {seconds:.3g} s a call (over {limit:g} s)"
        toeplitz._KEPT_T.clear()
        return left_out, dense

    def run(self, config: Dict, device: str = "cpu", progress=None) -> List[Dict]:
        """One row per cell: seconds per contender, speedup over the bar, the winner, ours'
        output bytes and the rate they are written at."""
        bandwidth = write_bandwidth()
        rows = []
        for cell in config["cells"]:
            seed = zlib.crc32(repr((self.name, cell["label"])).encode())
            x = getattr(workloads, cell["generator"])(seed=seed, **cell["args"])
            k = workloads.gaussian_kernel(cell["kernel"])
            left_out, dense = self._left_out(cell, x, k, config, device)
            contenders, skipped = toeplitz.contenders_for(x, k, cell["shape"], config, device,
                                                          dense=dense)
            for name in left_out:
                contenders.pop(name, None)
            checked = _check(contenders, x, k, cell["shape"],
                             ["scipy:convolve2d", "torch:conv2d"] + list(toeplitz.BARS))
            unavailable = dict(skipped, **left_out, **checked["unavailable"])
            seconds = time_interleaved(contenders, rounds=config["rounds"], warmup=1,
                                       min_round_seconds=0.02, device=device)
            toeplitz._KEPT_T.clear()
            bar = next(name for name in toeplitz.BARS if name in seconds)
            output = {name: dict(bytes=nbytes, nnz=nnz,
                                 gbps=effective_gbps(nbytes, seconds[name]))
                      for name, (nbytes, nnz) in checked["outputs"].items()}
            row = dict(cell=cell["label"], shape=cell["shape"], batch=x.shape[0],
                       kernel=cell["kernel"], density=cell["density"],
                       measured_density=workloads.density(x), nnz=int(x.nnz),
                       seconds=seconds, bar=bar, winner=min(seconds, key=seconds.get),
                       speedup={name: seconds[bar] / t for name, t in seconds.items()},
                       output=output, bandwidth=bandwidth, unavailable=unavailable,
                       groups=[self.name])
            rows.append(row)
            if progress:
                progress(row)
        return rows

    describe = staticmethod(toeplitz.describe)

    def summarize(self, rows: List[Dict]) -> Dict:
        """For ours:compat and ours:auto: geometric-mean speedup over the bar, the worst
        cell, the cells slower than the bar; and how many cells each contender wins."""
        summary = dict(ours={}, winners={})
        for name in OURS:
            pairs = [(r["cell"], r["speedup"][name]) for r in rows if name in r["speedup"]]
            if not pairs:
                continue
            worst = min(pairs, key=lambda p: p[1])
            summary["ours"][name] = dict(
                geomean=geometric_mean(s for _, s in pairs), cells=len(pairs),
                worst=dict(cell=worst[0], speedup=worst[1]),
                lost=[c for c, s in pairs if s < 1.0], below_2x=sum(s < 2.0 for _, s in pairs))
        for r in rows:
            summary["winners"][r["winner"]] = summary["winners"].get(r["winner"], 0) + 1
        return summary

    def markdown(self, result: Dict, compact: bool = False) -> str:
        """Milliseconds per contender (ours with the speedup over the bar) and each cell's
        winner; the summary; output bytes and write rates; what was left out, and why."""
        rows = result["rows"]
        if not rows:
            return "(no cells)"
        bars = ", ".join(sorted({r["bar"] for r in rows}))
        lines = [f"Milliseconds per call; ours with its speedup over the bar ({bars}). "
                 "Input: stored entries (measured density).", ""]
        lines += toeplitz._table(rows, "cell", lambda r: f"{r['cell']}: {r['nnz']} "
                                 f"({r['measured_density']:.2%})", compact)
        lines.append("")
        summary = self.summarize(rows)
        for name, s in summary["ours"].items():
            lost = f"; slower in {len(s['lost'])}: {', '.join(s['lost'])}" if s["lost"] else \
                "; slower in none"
            lines.append(f"- {name}: geometric-mean speedup {s['geomean']:.2f}x over "
                         f"{s['cells']} cells, worst {s['worst']['speedup']:.2f}x "
                         f"({s['worst']['cell']}), {s['below_2x']} under 2x{lost}")
        lines.append("- cells won outright: " + ", ".join(
            f"{name} {count}" for name, count in sorted(summary["winners"].items(),
                                                         key=lambda item: -item[1])))
        bandwidth = rows[0].get("bandwidth", {})
        lines += ["", "Output written against this machine's write bandwidth "
                  f"({bandwidth.get('warm', float('nan')):.3g} GB/s into mapped memory, "
                  f"{bandwidth.get('fresh', float('nan')):.3g} GB/s into fresh memory, "
                  "torch fill_ at the run's threads): output entries, MB of CSR output (index "
                  "+ value bytes an entry, row pointers), the rate it is written at.", ""]
        header = ["cell", "output entries"] + [f"{n} MB" for n in OURS] + \
            [f"{n} GB/s" for n in OURS] + [f"{n} % of fresh" for n in OURS]
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for r in rows:
            out = r.get("output", {})
            entries = next((o["nnz"] for o in out.values() if o.get("nnz") is not None), None)
            mb = [_fmt(out.get(n, {}).get("bytes"), 1e-6) for n in OURS]
            rate = [_fmt(out.get(n, {}).get("gbps"), 1.0) for n in OURS]
            share = [_fmt(out.get(n, {}).get("gbps"), 100 / bandwidth["fresh"])
                     if bandwidth.get("fresh") else "n/a" for n in OURS]
            lines.append(f"| {r['cell']} | {entries if entries is not None else 'n/a'} | "
                         + " | ".join(mb + rate + share) + " |")
        missing = {}
        for r in rows:
            for name, why in r.get("unavailable", {}).items():
                missing.setdefault(name, []).append((r["cell"], why))
        if missing:
            lines += ["", "Not available or left out:", ""]
            for name, cases in missing.items():
                cells_ = ", ".join(c for c, _ in cases)
                lines.append(f"- `{name}` in {len(cases)} of {len(rows)} cells ({cells_}); "
                             f"e.g. {cases[0][1]}")
        return "\n".join(lines)

    losses = staticmethod(toeplitz.losses)


def _fmt(value, scale: float) -> str:
    return "n/a" if value is None else f"{value * scale:.3g}"


ROI = WorkloadSuite(
    "roi", "Sparse-input conv2d on calcium-imaging ROI footprints",
    """ROI footprints (workloads.roi_footprints: elliptical Gaussian blobs, radius 3-10 px,
    thresholded at 15 % of the peak and normalised, one ROI a row) on a 512x512 frame, 500 to
    5000 ROIs, blurred with normalised Gaussian kernels 3x3, 7x7 and 15x15 (sigma size/6),
    mode 'same': what sparse_convolution's users mostly do.""", _cells_roi)
EVENTS = WorkloadSuite(
    "events", "Sparse-input conv2d on event-camera frames",
    """Event-camera time slices (workloads.event_frames: moving edges plus background
    activity, polarity +-1) of 260x346 (DVS346) and 480x640 pixels, batches of 1, 8 and 64
    slices at 1 % and 5 % density, normalised Gaussian kernels 3x3 and 5x5, mode 'same'.""",
    _cells_events)
LIDAR = WorkloadSuite(
    "lidar", "Sparse-input conv2d on LiDAR bird's-eye grids",
    """LiDAR bird's-eye-view grids (workloads.lidar_bev: road edges, walls and range rings a
    few cells wide, plus clutter; mean intensity a cell) of 512x512 cells, batches 1 and 8 at
    0.5 % and 3 % density, normalised Gaussian kernels 3x3 and 7x7, mode 'same'.""",
    _cells_lidar)
SUITES = {suite.name: suite for suite in (ROI, EVENTS, LIDAR)}
