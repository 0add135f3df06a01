"""A bounded, deterministic run of the bad-input fuzzer (tests/fuzzing/bad_input.py).

Every bad input must end in a clear exception naming the argument, or in a correct result:
never a crash, a hang or a wrong answer. The cases run in worker subprocesses, so a segfault
fails this test instead of killing pytest. The long run is the CLI:
`python tests/fuzzing/bad_input.py --cases 5000 --workers 2`.
"""
from dataclasses import asdict

import pytest

from fuzzing import bad_input

# Seeds 0..N-1 cycle through every category (seed % 10); about 25 s on 2 busy cores.
BOUNDED_SEEDS = range(0, 3000)


def test_every_case_program_compiles():
    """The generators only write text: every section of every case must be valid Python."""
    for seed in range(3000):
        case = bad_input.make_case(seed)
        for section in (case.setup, case.run, case.check, case.after):
            compile(section, f"<seed {seed}>", "exec")
        assert case.expect in ("raise", "correct", "either", "measure")
        assert case.expect != "raise" or case.names, f"seed {seed} names no argument"


def test_message_must_name_the_argument():
    assert bad_input.message_names("sparse_filter_conv2d: col_idx[3] = 36 is out of range",
                                   ("col_idx",))
    assert bad_input.message_names("toeplitz_conv2d: x's row pointers must start at 0",
                                   ("crow",))
    assert not bad_input.message_names("tensor does not have a device", ("input",))
    assert not bad_input.message_names(
        "torch_sparse_conv::toeplitz_conv2d: You're trying to run this operator with meta "
        "Tensors ... make sure the FakeTensor and/or meta kernel does not call", ("kernel",))


def _selftest_case(seed, kind, run, expect="correct", check=""):
    return {"case": asdict(bad_input.Case(seed, "selftest", kind, "", run, expect, (), check))}


@pytest.mark.slow
def test_runner_survives_crashes_and_hangs():
    """A segfault and a hang are recorded against their case; the next case runs on a fresh
    worker."""
    requests = [
        _selftest_case(-1, "segfault", "import ctypes\nctypes.string_at(0)"),
        _selftest_case(-2, "fine", "out = 1", check="assert out == 1"),
        _selftest_case(-3, "hang", "import time\ntime.sleep(120)"),
        _selftest_case(-4, "wrong", "out = 2", check="assert out == 1, 'out is 2'"),
    ]
    results, info = bad_input.run_requests(requests, workers=1, timeout=5)
    assert [r["outcome"] for r in results] == ["CRASH", "CORRECT", "HANG", "WRONG"]
    assert "SIGSEGV" in results[0]["detail"]
    assert info["workers_started"] == 3


@pytest.mark.slow
def test_bounded_fuzz_run():
    results, info = bad_input.run_requests([{"seed": s} for s in BOUNDED_SEEDS], workers=2,
                                           timeout=60)
    failures = bad_input.failures_of(results)
    assert not failures, (
        f"{len(failures)} bad-input failure(s) (library {info.get('library')}); reproduce one "
        "with `python tests/fuzzing/bad_input.py --repro SEED`\n"
        + bad_input.summarize(results) + "\n" + bad_input.format_failures(results))
