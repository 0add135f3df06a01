"""Runs seeds: which family and configuration a seed stands for, one case into Stats (a
harness error is a failure too, with its seed), many cases under a hang watchdog."""
import os
import threading
import time
import traceback
from typing import List, Optional

from .checks import Case, Stats, replay_command
from .filter_cases import filter_config
from .filter_entries import run_filter_case
from .toeplitz_cases import toeplitz_config
from .toeplitz_entries import run_toeplitz_case


CASE_TIMEOUT_SECONDS = 300.0  # a case running longer is reported as a hang


def family_of(seed: int) -> str:
    return "filter" if seed % 2 == 0 else "toeplitz"


def config_of(seed: int):
    return filter_config(seed) if family_of(seed) == "filter" else toeplitz_config(seed)


def run_case(seed: int, stats: Stats, verbose: bool = False) -> None:
    """Runs every check of one seed's case into stats."""
    family = family_of(seed)
    cfg = config_of(seed)
    ctx = Case(seed, family, stats, verbose)
    if verbose:
        print(f"seed {seed}: {cfg}")
    stats.cases[family] += 1
    before, started = len(stats.failures), time.perf_counter()
    try:
        (run_filter_case if family == "filter" else run_toeplitz_case)(cfg, ctx)
    except Exception as error:  # noqa: BLE001 - a harness error is a failure too, with its seed
        stats.fail(seed, (family, "harness", "-", "-"),
                   "".join(traceback.format_exception(error))[-3000:])
    stats.slowest = sorted(stats.slowest + [(time.perf_counter() - started, seed)])[-5:]
    if not verbose:  # verbose printed each failure as it happened
        for failure in stats.failures[before:]:
            print(f"MISMATCH seed {seed} {failure[1]}: {failure[2].splitlines()[0][:300]}\n"
                  f"  replay: {replay_command(seed)}", flush=True)


def seeds_for(start: int, count: int, family: str) -> List[int]:
    if family == "all":
        return list(range(start, start + count))
    parity = 0 if family == "filter" else 1
    first = start + ((parity - start) % 2)
    return list(range(first, first + 2 * count, 2))


class Watchdog:
    """Reports a case that hangs (in Python or in the library) with its seed, and exits."""

    def __init__(self, seconds: float):
        self.seconds, self.seed, self.started = seconds, None, None
        threading.Thread(target=self._watch, daemon=True).start()

    def start(self, seed: int) -> None:
        self.seed, self.started = seed, time.monotonic()

    def stop(self) -> None:
        self.started = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            started = self.started
            if started is not None and time.monotonic() - started > self.seconds:
                print(f"HANG: seed {self.seed} ran over {self.seconds:.0f} s\n"
                      f"  replay: {replay_command(self.seed)}", flush=True)
                os._exit(3)


def run_cases(seeds, stats: Stats, progress_every: int = 0, watchdog: Optional[Watchdog] = None):
    start = time.perf_counter()
    for i, seed in enumerate(seeds):
        if watchdog:
            watchdog.start(seed)
        run_case(seed, stats)
        if watchdog:
            watchdog.stop()
        if progress_every and (i + 1) % progress_every == 0:
            print(f"  {i + 1}/{len(seeds)} cases, {len(stats.failures)} mismatches, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return time.perf_counter() - start
