"""Timing done carefully: warm-up, interleaved rounds, medians, outputs checked first."""
import statistics
import time
from typing import Callable, Dict

import torch


def check_same(outputs: Dict[str, torch.Tensor], reference: str, rtol=1e-4, atol=1e-4) -> None:
    """Every contender must compute the reference's result before its time is trusted."""
    expected = outputs[reference]
    for name, value in outputs.items():
        if not torch.allclose(value, expected, rtol=rtol, atol=atol):
            error = (value - expected).abs().max().item()
            raise AssertionError(f"benchmark contender {name!r} disagrees with {reference!r} "
                                 f"(max abs error {error:.3g})")


def time_interleaved(contenders: Dict[str, Callable[[], object]], rounds: int = 15,
                     warmup: int = 3, min_round_seconds: float = 0.0) -> Dict[str, float]:
    """Median seconds per call of each contender. Each round calls every contender in turn,
    so slow drifts of the machine (other load, clocks) hit all of them alike."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            repeat = 1
            while True:
                start = time.perf_counter()
                for _ in range(repeat):
                    fn()
                elapsed = time.perf_counter() - start
                if elapsed >= min_round_seconds or repeat >= 64:
                    break
                repeat *= 2
            samples[name].append(elapsed / repeat)
    return {name: statistics.median(values) for name, values in samples.items()}


def geometric_mean(values) -> float:
    values = list(values)
    if not values:
        return float("nan")
    product = 1.0
    for value in values:
        product *= value
    return product ** (1.0 / len(values))
