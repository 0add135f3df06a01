"""What the sparse-filter suites need to know about the machine, and one setting they make.

* :func:`cpu_peak`: the float32 peak the per-layer tables measure their useful GFLOP/s
  against, ``threads x clock x FLOP per cycle`` with the clock read at run time (lscpu's
  maximum where the kernel exposes one, else /proc/cpuinfo's ``cpu MHz``). 32 FLOP a cycle a
  core is one 512-bit FMA a cycle (16 float32 lanes x 2): what AMD Zen 4 sustains (it runs a
  512-bit FMA as two 256-bit halves on its two FMA pipes) and the figure the issue gives for
  this machine. A virtual machine often reports its nominal clock, not the boost one: where
  a kernel's useful GFLOP/s come out above the peak, the cores ran faster than reported; on
  an Intel Xeon with two 512-bit FMA units a core retires 64 FLOP a cycle, twice the figure.
  So the peak record also has :func:`sgemm_gflops`, a large float32 matmul through torch, as
  the rate this machine attains in practice.
* :func:`pin_heap`: glibc's malloc, left alone, hands a large tensor fresh pages on every
  call (through mmap, or after trimming the top of the heap), and faulting them in costs more
  than some convolutions: the dense baseline on 64@56, batch 8 swung between ~8.6 and ~15.5 ms
  with ~3100 minor faults a call. Raising the mmap and trim thresholds keeps freed memory in
  the heap, so every contender reuses its memory from the call before.
  :data:`HEAP_ENV` says the same to a child process (the DeepSparse worker) through glibc's
  environment tunables.
"""
import ctypes
import ctypes.util
import os
import re
import resource
import subprocess
import time
from typing import Callable, Dict, Optional

import torch

FLOP_PER_CYCLE_FP32 = 32          # one 512-bit FMA a cycle a core: 16 lanes x 2 FLOP
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# The largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2 = 4 * 1024 * 1024 *
# sizeof(long)); allocations above it are still mmapped. Every activation of the suites is
# under it (the largest, ResNet-50's first ones at batch 8: 25.7 MB).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 ** 31 - 1      # an int: never give the top of the heap back
HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}

_PINNED: Optional[Dict] = None


def _lscpu_max_mhz() -> Optional[float]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^CPU max MHz:\s*([0-9.]+)", text, re.M)
    return float(match.group(1)) if match else None


def _cpuinfo_mhz() -> Optional[float]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            values = [float(line.split(":", 1)[1]) for line in cpuinfo
                      if line.startswith("cpu MHz")]
    except (OSError, ValueError):
        return None
    return max(values) if values else None


def cpu_frequency() -> Dict:
    """The clock in MHz and where it was read: ``lscpu`` (its 'CPU max MHz') where the kernel
    has cpufreq, else ``/proc/cpuinfo`` (the highest 'cpu MHz' line)."""
    mhz = _lscpu_max_mhz()
    if mhz:
        return dict(mhz=mhz, source="lscpu CPU max MHz")
    mhz = _cpuinfo_mhz()
    if mhz:
        return dict(mhz=mhz, source="/proc/cpuinfo cpu MHz")
    return dict(mhz=None, source="not found")


def sgemm_gflops(threads: int, size: int = 2048, seconds: float = 0.3) -> float:
    """GFLOP/s of a ``size`` x ``size`` float32 matmul through torch at ``threads`` threads,
    the best of calls over about ``seconds``: the rate this machine attains on dense work."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        out = torch.empty(size, size)
        torch.mm(a, b, out=out)
        best, deadline = float("inf"), time.perf_counter() + seconds
        while True:
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
    finally:
        torch.set_num_threads(saved)
    return 2.0 * size ** 3 / best / 1e9


def cpu_peak(threads: int, measure: bool = True) -> Dict:
    """The float32 roofline: ``peak_gflops = min(threads, cores) x MHz x 32 / 1000``, how the
    clock was read, and (``measure``) the GFLOP/s of a large matmul here."""
    frequency = cpu_frequency()
    cores = min(threads, os.cpu_count() or threads)
    peak = None if frequency["mhz"] is None else \
        cores * frequency["mhz"] * FLOP_PER_CYCLE_FP32 / 1e3
    info = dict(cores=cores, mhz=frequency["mhz"], mhz_source=frequency["source"],
                flop_per_cycle=FLOP_PER_CYCLE_FP32, peak_gflops=peak,
                formula=f"{cores} cores x {frequency['mhz']} MHz x {FLOP_PER_CYCLE_FP32} "
                        "FLOP/cycle (one 512-bit FMA a cycle a core)")
    if measure:
        info["sgemm_gflops"] = sgemm_gflops(threads)
    return info


def pin_heap() -> Dict:
    """Raises glibc's mmap threshold to :data:`MMAP_THRESHOLD` and its trim threshold to
    :data:`TRIM_THRESHOLD` in this process (``mallopt`` through ctypes), once; returns what
    was done, for the result JSON. Elsewhere than glibc it does nothing and says so. The
    setting is process-wide and stays: every later allocation reuses freed heap memory."""
    global _PINNED
    if _PINNED is not None:
        return dict(_PINNED)
    record = dict(how="mallopt", M_MMAP_THRESHOLD=MMAP_THRESHOLD,
                  M_TRIM_THRESHOLD=TRIM_THRESHOLD, env_for_workers=dict(HEAP_ENV))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        record.update(applied=False, why=f"no glibc mallopt here ({error})")
    else:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        applied = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
                   mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        record.update(applied=all(applied))
        if not all(applied):
            record["why"] = f"mallopt returned failure (mmap: {applied[0]}, trim: {applied[1]})"
    _PINNED = record
    return dict(record)


def heap_state() -> Dict:
    """What :func:`pin_heap` did in this process, or that it was not called."""
    return dict(_PINNED) if _PINNED is not None else dict(how="glibc defaults", applied=False)


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``'s ru_minflt)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def faults_per_call(fn: Callable[[], object], calls: int = 10, warmup: int = 3) -> float:
    """Minor page faults per call of ``fn``, after ``warmup`` calls (the heap grows to what
    the call needs in the first ones, pinned or not)."""
    for _ in range(warmup):
        fn()
    before = minor_faults()
    for _ in range(calls):
        fn()
    return (minor_faults() - before) / calls
