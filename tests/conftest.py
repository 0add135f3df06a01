"""Lets test modules share helpers (tests/ on sys.path: testing.py, fuzzing/), and registers
the `slow` marker: tests that start subprocesses (fresh interpreters, fuzzer workers) or
compile (torch.compile, inductor). `pytest -m "not slow" tests` leaves them out; a plain
`pytest tests` (CI, scripts/run_tests.sh) runs everything."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

# cuDNN convolutions run in TF32 by default on Ampere and later GPUs (about 1e-3 relative
# error). The tests compare against float32 references at 1e-4, so they run in full float32;
# the benchmarks keep torch's defaults.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: starts subprocesses or compiles (torch.compile, inductor); "
        "deselect with -m 'not slow'")
