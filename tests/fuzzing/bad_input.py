"""Bad-input fuzzer for torch_sparse_conv.

Contract enforced: every bad input ends in a clear Python exception (RuntimeError, ValueError,
TypeError or IndexError whose message names the offending argument) or in a correct result;
never a crash (segfault, abort), a hang, or a wrong answer.

A case is a small program determined by an integer seed (`make_case(seed)`): `setup` builds
the inputs (valid calls included, e.g. a first call before a write through `.data`), `run` is
the call under test, `check` compares what `run` returned with a reference
(bad_input_oracles.py), `after` runs once an expected exception was raised (the object must
still work once its state is restored). Its expectation says what must happen:

  raise    an allowed exception whose message names one of `names` (see ALIASES)
  correct  a result equal to the reference (an exception is a REJECTED_VALID)
  either   one of the two
  measure  non-finite numbers: the result is compared with the documented NaN/inf rules;
           a disagreement is a NONFINITE_RULE finding, with counts

Cases run in persistent worker subprocesses (importing torch costs seconds) that read seeds
from stdin and answer one JSON line per case on a pipe. The parent applies a per-case timeout
(HANG), notices a worker that died (CRASH, with its signal and the tail of its stderr), starts
a fresh worker and goes on with the next case.

Outcomes: RAISED, CORRECT, MEASURED (fine); CRASH, HANG, WRONG, NO_RAISE, REJECTED_VALID,
UNCLEAR, NONFINITE_RULE, SETUP_ERROR (failures: the CLI exits non-zero).

    python tests/fuzzing/bad_input.py --cases 5000 [--start S] [--workers 2]
    python tests/fuzzing/bad_input.py --show SEED      # the case's program
    python tests/fuzzing/bad_input.py --repro SEED     # a standalone script (oracles inlined)
    python tests/fuzzing/bad_input.py --run-one SEED   # run it in this process

Where things are: bad_input_cases/ (the Case model, the message rule and one generator module
per category), bad_input_oracles.py (the references the programs call), bad_input_worker.py
(runs and classifies cases inside a worker), bad_input_runner.py (the worker pool),
bad_input_report.py (tables and grouped failures). This file is the command line and the names
tests/common/test_fuzz_bad_input.py uses.
"""
import argparse
import json
import os
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the sibling modules import each other by their plain names
    sys.path.insert(0, HERE)

from bad_input_cases import Case, make_case, message_names  # noqa: E402
from bad_input_report import (failures_of, format_failures, summarize,  # noqa: E402
                              summarize_nonfinite)
from bad_input_runner import run_requests  # noqa: E402
from bad_input_worker import execute, prepare_worker_process, worker_namespace  # noqa: E402

__all__ = ["Case", "failures_of", "format_failures", "main", "make_case", "message_names",
           "repro_script", "run_requests", "summarize"]


def repro_script(seed: int) -> str:
    """A standalone script of one case: the oracles inlined, then the case's program."""
    case = make_case(seed)
    with open(os.path.join(HERE, "bad_input_oracles.py")) as f:
        oracles = f.read()
    return (f"# Standalone reproducer of bad-input fuzz seed {seed} ({case.category} / "
            f"{case.kind}).\n# Run with the project's venv python.\n"
            "import contextlib, math, warnings\nwarnings.simplefilter('ignore')\n"
            "# ---- bad_input_oracles.py, inlined\n" + oracles +
            "\n# ---- the case\n" + case.program())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=4.0,
                        help="address-space limit of a worker (0: none)")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("--show", type=int, metavar="SEED", help="print a case's program")
    parser.add_argument("--repro", type=int, metavar="SEED", help="print a standalone script")
    parser.add_argument("--run-one", type=int, metavar="SEED", help="run one case here")
    args = parser.parse_args(argv)
    if args.show is not None:
        print(make_case(args.show).program())
        return 0
    if args.repro is not None:
        print(repro_script(args.repro))
        return 0
    if args.run_one is not None:
        prepare_worker_process(0)
        case = make_case(args.run_one)
        print(case.program())
        print(json.dumps(execute(case, worker_namespace()), indent=2))
        return 0
    seeds = range(args.start, args.start + args.cases)
    begun = time.time()
    done = Counter()

    def progress(result):
        done[result["outcome"]] += 1
        count = sum(done.values())
        if count % 250 == 0 or result["outcome"] in ("CRASH", "HANG"):
            print(f"  {count}/{len(seeds)} cases, {time.time() - begun:.0f} s, "
                  f"{dict(done)}", flush=True)

    results, info = run_requests([{"seed": s} for s in seeds], workers=args.workers,
                                 timeout=args.timeout, memory_gb=args.memory_gb,
                                 progress=progress)
    print(f"library {info.get('library')} (built "
          f"{time.ctime(info.get('library_mtime', 0))}); seeds {args.start}.."
          f"{args.start + args.cases - 1}; {time.time() - begun:.0f} s; "
          f"{info.get('workers_started')} worker(s) started; logs {info.get('log_dir')}")
    print(summarize(results))
    print("non-finite numbers, per path (summed counts):")
    print(summarize_nonfinite(results))
    failed = failures_of(results)
    if failed:
        print(f"\n{len(failed)} failure(s), grouped:")
        print(format_failures(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
