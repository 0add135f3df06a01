"""Seeded differential fuzzer for every operator of torch_sparse_conv, both families.

Every case is a pure function of one integer seed: even seeds are sparse-filter cases, odd
seeds sparse-input (Toeplitz) cases. A case draws a random problem, runs it through the entry
points of its family with every method (CPU; CUDA too when a GPU is present), forward and
backward, and compares each result with an independent float64 reference:

* sparse filter: ``F.conv2d`` (``nn.Conv2d``'s own forward for the padding modes) with the
  masked dense weight, and autograd of that for the gradients (input, kept values = the dense
  weight gradient gathered at the kept positions, bias);
* Toeplitz: ``scipy.signal.convolve2d`` per image for the values, a naive scatter over the
  stored entries for the output pattern (and for the values of frames too large to densify),
  and that scatter's closed-form sums for the gradients of the kernel and the input values.

Usage::

    python tests/fuzzing/differential.py --cases 10000 [--start S] [--family filter|toeplitz|all]
    python tests/fuzzing/differential.py --seed N      # replays one case and prints every check

The summary lists the checks per family / op / method / direction, the mismatches and the
largest error seen relative to its tolerance (see ``allowed_error``); the exit status is 1 on
any mismatch.

Where things are: differential_cases/ (one module per job; its __init__ lists them). This file
is the command line and the names tests/common/test_fuzz_differential.py uses.
"""
import argparse
import os
import sys
import time

# Runnable as a script: the test helpers live one directory up (tests/), the sibling modules
# (differential_cases/, bad_input_oracles.py) here; they import each other by plain names.
HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(HERE)
for path in (TESTS_DIR, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from differential_cases import library  # noqa: E402
from differential_cases.checks import Stats  # noqa: E402
from differential_cases.driver import (CASE_TIMEOUT_SECONDS, Watchdog, config_of,  # noqa: E402
                                       run_case, run_cases, seeds_for)
from differential_cases.filter_cases import FILTER_ENTRIES, LAYOUTS, FilterConfig  # noqa: E402
from differential_cases.report import summary  # noqa: E402
from differential_cases.toeplitz_cases import MODES, ToeplitzConfig  # noqa: E402

# library.OPS is what the checks call; a test swaps it there (OPS here is the real one).
OPS = library.OPS

__all__ = ["FILTER_ENTRIES", "FilterConfig", "LAYOUTS", "MODES", "OPS", "Stats",
           "ToeplitzConfig", "config_of", "library", "main", "run_case", "run_cases",
           "seeds_for", "summary"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--family", choices=("filter", "toeplitz", "all"), default="all")
    parser.add_argument("--seed", type=int, help="replay this one case, printing every check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", type=int, default=500, help="print every N cases")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stats = Stats()
    if args.seed is not None:
        start = time.perf_counter()
        run_case(args.seed, stats, verbose=True)
        print(summary(stats, time.perf_counter() - start))
        return 1 if stats.failures else 0
    seeds = seeds_for(args.start, args.cases, args.family)
    seconds = run_cases(seeds, stats, args.progress, Watchdog(CASE_TIMEOUT_SECONDS))
    print(summary(stats, seconds))
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
