"""Timing done carefully: warm-up, interleaved rounds, medians, outputs checked first.

On a GPU every measurement is bracketed by CUDA events after a synchronisation, so queued
kernels of one contender never land in another's time, and host-only contenders (scipy,
numba) are measured the same way (the events then measure wall time).

The loop is ours, not torch.utils.benchmark.Timer's, on measurement (2026-12-01, the shared
2-core machine, 1 thread). Timer's blocked_autorange times one statement in blocks, never
several in turn, so it cannot make interleaved rounds. Used as the per-sample measurement
inside this loop instead (``Timer("fn()", ...).timeit(n)`` per round), it reads the same
per-call times (a 1.4 us ``torch.add``: 1.364 us with Timer, 1.375 us here, within noise) but
runs ``max(n // 100, 2)`` unrecorded warm-up calls before every sample: 15 rounds of a 25 ms
call took 1.14 s with Timer against 0.38 s here, and of the 1.4 us call 4.1 ms against 2.8 ms
(sampling a fast call doubles its repeat up to 64, so every doubling paid them). It also sets
torch's thread count to its own ``num_threads`` (default 1) around each sample, and reading
``Measurement.mean`` costs about 0.27 ms of statistics. On a GPU it synchronises and reads the
host clock where this loop reads CUDA events; no GPU was lent to compare those.

``time_interleaved_stats`` also counts minor page faults per call of each contender
(getrusage's ru_minflt around each sample), so a result shows whether a contender paid for
fresh memory (bench/machine.py's ``pin_heap`` is there to make that zero). A contender that
runs in another process (the DeepSparse worker) is a :class:`RemoteTimed`: it takes its turn
in every round like the others, timing its sample where it runs by the same rule.
"""
import resource
import statistics
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch

MAX_REPEAT = 64  # a fast call is repeated, doubling, at most this many times a sample


def check_same(outputs: Dict[str, torch.Tensor], reference: str, rtol=1e-4, atol=1e-4,
               tolerances: Optional[Mapping[str, Tuple[float, float]]] = None) -> None:
    """Every contender must compute the reference's result before its time is trusted.

    ``tolerances`` overrides ``(rtol, atol)`` for named contenders (TF32 convolutions round
    their inputs to 10 mantissa bits, so they get a looser bound than float32 ones)."""
    expected = outputs[reference]
    for name, value in outputs.items():
        r, a = (tolerances or {}).get(name, (rtol, atol))
        value = value.to(expected.device)
        if not torch.allclose(value, expected, rtol=r, atol=a):
            error = (value - expected).abs().max().item()
            raise AssertionError(f"benchmark contender {name!r} disagrees with {reference!r} "
                                 f"(max abs error {error:.3g}, rtol {r:g}, atol {a:g})")


def _elapsed_cpu(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def _elapsed_cuda(fn: Callable[[], object], repeat: int) -> float:
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3


class RemoteTimed:
    """A contender timed somewhere else (another process: the DeepSparse worker), taking its
    turn in :func:`time_interleaved`'s rounds like any other. Calling it returns its output
    (for the check); :meth:`sample` times one round's sample where it runs, with the same rule
    as the loop (repeat, doubling up to ``max_repeat``, until ``min_seconds``), and returns
    ``(seconds per call, minor page faults per call)`` as measured there."""

    def __call__(self):
        raise NotImplementedError

    def warmup(self, calls: int) -> None:
        raise NotImplementedError

    def sample(self, min_seconds: float, max_repeat: int) -> Tuple[float, float]:
        raise NotImplementedError


def thread_pool(name: str) -> str:
    """The thread pool a contender runs on: numba's (sparse_convolution's numba backend, its
    own OpenMP runtime) or torch's (everything else in this process; single-threaded numpy
    and scipy count with it)."""
    return "numba" if name.endswith("+numba") else "torch"


def needs_lead_in(previous: Optional[str], name: str) -> bool:
    """Whether ``name`` gets an untimed call before its timed one: when the contender before
    it ran on the other thread pool. A pool's idle threads keep spinning for a while after a
    call, so the next contender on the other pool found both cores busy: measured on a 2-core
    event batch, ours took 2.4 ms right after sparse_convolution's numba call and 1.1 ms after
    its own (and numba likewise after ours). The lead-in call lets the spinning end, and is
    given alike to whichever pool comes second."""
    return previous is not None and thread_pool(previous) != thread_pool(name)


def time_interleaved_stats(contenders: Dict[str, Callable[[], object]], rounds: int = 15,
                           warmup: int = 3, min_round_seconds: float = 0.0,
                           device: str = "cpu") -> Dict[str, Dict[str, float]]:
    """:func:`time_interleaved` with the minor page faults per call beside the times:
    ``{"seconds": {name: median s}, "faults": {name: mean faults per call}}``. A
    :class:`RemoteTimed` contender times its own samples in its turn (its faults are its
    process's)."""
    elapsed = _elapsed_cuda if str(device).startswith("cuda") else _elapsed_cpu
    for fn in contenders.values():
        if isinstance(fn, RemoteTimed):
            fn.warmup(warmup)
        else:
            for _ in range(warmup):
                fn()
    if elapsed is _elapsed_cuda:
        torch.cuda.synchronize()
    samples = {name: [] for name in contenders}
    faults = {name: [0.0, 0] for name in contenders}  # faults, calls
    # Each pool's contenders one after another, so a round changes pools twice at most.
    order = sorted(contenders, key=lambda name: thread_pool(name) == "numba")
    previous = order[-1] if order else None
    for _ in range(rounds):
        for name in order:
            fn = contenders[name]
            if needs_lead_in(previous, name) and not isinstance(fn, RemoteTimed):
                fn()  # untimed: the other pool's threads stop spinning, this one's wake up
            previous = name
            if isinstance(fn, RemoteTimed):
                seconds, per_call = fn.sample(min_round_seconds, MAX_REPEAT)
                samples[name].append(seconds)
                faults[name][0] += per_call
                faults[name][1] += 1
                continue
            repeat = 1
            while True:
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                seconds = elapsed(fn, repeat)
                faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
                if seconds >= min_round_seconds or repeat >= MAX_REPEAT:
                    break
                repeat *= 2
            samples[name].append(seconds / repeat)
            faults[name][0] += faulted / repeat
            faults[name][1] += 1
    return dict(seconds={name: statistics.median(values) for name, values in samples.items()},
                faults={name: total / max(count, 1) for name, (total, count) in faults.items()})


def time_interleaved(contenders: Dict[str, Callable[[], object]], rounds: int = 15,
                     warmup: int = 3, min_round_seconds: float = 0.0,
                     device: str = "cpu") -> Dict[str, float]:
    """Median seconds per call of each contender. Each round calls every contender in turn,
    so slow drifts of the machine (other load, clocks) hit all of them alike; a round runs
    the contenders on torch's thread pool, then those on numba's, and the first of each gets
    an untimed call first (:func:`needs_lead_in`).
    A round repeats
    a fast call (doubling, up to 64) until it lasts ``min_round_seconds``.
    ``device='cuda'`` times with CUDA events after a synchronisation."""
    return time_interleaved_stats(contenders, rounds, warmup, min_round_seconds,
                                  device)["seconds"]


def geometric_mean(values) -> float:
    values = list(values)
    if not values:
        return float("nan")
    product = 1.0
    for value in values:
        product *= value
    return product ** (1.0 / len(values))
