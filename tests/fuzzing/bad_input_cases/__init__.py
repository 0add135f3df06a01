"""The bad-input fuzzer's cases: `make_case(seed)` turns an integer into a Case (a small
program and what it must do). One module per category; setups.py holds the valid starting
points they share, case.py the Case model and the rule for an exception's message."""
import random

from . import filter_writes, toeplitz_writes
from .args import gen_args
from .case import FAILURES, FINE, Case, message_names
from .compat_csr import gen_compat_csr
from .dtypes import gen_dtypes
from .filter_csr import gen_filter_csr
from .nonfinite import gen_nonfinite
from .shapes import gen_shapes
from .toeplitz_csr import gen_toeplitz_csr

__all__ = ["Case", "FAILURES", "FINE", "case_of", "make_case", "message_names"]

# A data_writes case's generator is drawn from this list (a repeat doubles a kind's share).
DATA_WRITES = [
    filter_writes.data_filter_corrupt, filter_writes.data_filter_corrupt,
    filter_writes.data_filter_values, filter_writes.data_filter_values,
    filter_writes.data_filter_pattern, filter_writes.data_filter_grad,
    filter_writes.data_filter_state_dict, filter_writes.data_filter_corrupt_before_backward,
    toeplitz_writes.data_toeplitz_corrupt_before_backward,
    filter_writes.data_filter_noncontiguous,
    toeplitz_writes.data_toeplitz_kernel, toeplitz_writes.data_toeplitz_kernel,
    toeplitz_writes.data_toeplitz_bad_kernel, toeplitz_writes.data_toeplitz_x,
    toeplitz_writes.data_toeplitz_grad, toeplitz_writes.data_toeplitz_mode_switch,
    toeplitz_writes.data_compat_kernel, filter_writes.data_functional_weight,
]


def gen_data_writes(seed, rng) -> Case:
    return rng.choice(DATA_WRITES)(seed, rng)


# seed % len(CATEGORIES) picks the category: writes through .data get a third of the cases.
CATEGORIES = [
    ("filter_csr", gen_filter_csr),
    ("toeplitz_csr", gen_toeplitz_csr),
    ("compat_csr", gen_compat_csr),
    ("shapes", gen_shapes),
    ("dtypes", gen_dtypes),
    ("nonfinite", gen_nonfinite),
    ("args", gen_args),
    ("data_writes", gen_data_writes),
    ("data_writes", gen_data_writes),
    ("data_writes", gen_data_writes),
]


def make_case(seed: int) -> Case:
    _, generator = CATEGORIES[seed % len(CATEGORIES)]
    return generator(seed, random.Random(seed))


def case_of(request: dict) -> Case:
    """The case a runner request names: {'seed': S} or {'case': Case fields}."""
    return Case(**request["case"]) if "case" in request else make_case(request["seed"])
