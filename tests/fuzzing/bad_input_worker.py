"""The worker side of the bad-input fuzzer: runs cases in this process and classifies what
happened. bad_input_runner.py starts this file as a subprocess that reads requests (one JSON
line each, {'seed': S} or {'case': Case fields}) on stdin and answers one JSON line per case on
the pipe `--worker-fd`; a crash or hang here costs only this process."""
import argparse
import json
import os
import sys
import time

from bad_input_cases import case_of, message_names


def run_section(case, section: str, namespace: dict) -> None:
    """Executes one section of the case's program ('setup', 'run', 'check' or 'after'; the
    name shows in tracebacks)."""
    exec(compile(getattr(case, section), f"<{section} {case.seed}>", "exec"), namespace)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:600]}"


def execute(case, namespace: dict) -> dict:
    """Runs one case in this process; returns its outcome and detail."""
    import numpy as np
    import torch

    import bad_input_oracles as oracles

    namespace = dict(namespace)
    oracles.MEASURED.clear()
    torch.manual_seed(case.seed)
    np.random.seed(case.seed % 2**32)
    result = case.label()

    def done(outcome, detail=""):
        result.update(outcome=outcome, detail=detail)
        if oracles.MEASURED:
            result["measured"] = dict(oracles.MEASURED)
        return result

    try:
        run_section(case, "setup", namespace)
    except Exception as error:  # a valid preparation failed: a fuzzer or library problem
        return done("SETUP_ERROR", _describe(error))
    try:
        run_section(case, "run", namespace)
    except AssertionError as error:
        # compat raises some argument errors as sparse_convolution does, as AssertionErrors
        # that are ValueErrors too: those are the library's answers, not failed checks.
        if isinstance(error, (RuntimeError, ValueError, TypeError, IndexError)):
            return classify_exception(case, error, namespace, done)
        return done("WRONG", _describe(error))
    except Exception as error:
        return classify_exception(case, error, namespace, done)
    if case.expect == "raise":
        return done("NO_RAISE", "returned without an exception")
    try:
        run_section(case, "check", namespace)
    except oracles.RuleViolation as error:
        return done("NONFINITE_RULE", str(error)[:800])
    except AssertionError as error:
        return done("WRONG", _describe(error))
    except Exception as error:
        return done("WRONG", "the check raised " + _describe(error))
    return done("MEASURED" if case.expect == "measure" else "CORRECT")


def classify_exception(case, error, namespace, done):
    """The outcome of a call under test that raised: fine only where an exception was
    expected, of an allowed type, naming the argument, and (if the case says so) with the
    object working again once restored."""
    import bad_input_oracles as oracles

    detail = _describe(error)
    if case.expect == "correct":
        return done("REJECTED_VALID", detail)
    if case.expect == "measure":
        oracles.MEASURED.update(raised=type(error).__name__)
        return done("NONFINITE_RULE", "raised on non-finite numbers: " + detail)
    if not isinstance(error, (RuntimeError, ValueError, TypeError, IndexError)):
        return done("UNCLEAR", "exception type: " + detail)
    if not message_names(str(error), case.names):
        return done("UNCLEAR", f"does not name {list(case.names)}: " + detail)
    if case.after:
        try:
            run_section(case, "after", namespace)
        except AssertionError as after_error:
            return done("WRONG", "after restoring: " + _describe(after_error))
        except Exception as after_error:
            return done("WRONG", "after restoring, a valid call raised " + _describe(after_error))
    return done("RAISED", detail)


def worker_namespace() -> dict:
    """What the cases' programs see: the oracles module's names, contextlib and math."""
    import contextlib
    import math

    import bad_input_oracles as oracles

    namespace = {k: v for k, v in vars(oracles).items() if not k.startswith("__")}
    namespace.update(contextlib=contextlib, math=math)
    return namespace


def prepare_worker_process(memory_gb: float) -> None:
    """One thread, lower priority, bounded memory: huge allocations fail as exceptions
    instead of waking the OOM killer; warnings off (the cases provoke plenty)."""
    import faulthandler
    import resource
    import warnings

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        os.nice(5)
    except OSError:
        pass
    if memory_gb > 0:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    faulthandler.enable()
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)


def worker_main(result_fd: int, memory_gb: float) -> None:
    """Says hello (the library under test), then answers requests until stdin closes."""
    prepare_worker_process(memory_gb)
    namespace = worker_namespace()
    import torch_sparse_conv

    library = torch_sparse_conv.library_path()
    out = os.fdopen(result_fd, "w")
    out.write(json.dumps({"ready": True, "library": library,
                          "library_mtime": os.path.getmtime(library)}) + "\n")
    out.flush()
    for line in sys.stdin:
        case = case_of(json.loads(line))
        started = time.time()
        result = execute(case, namespace)
        result["seconds"] = round(time.time() - started, 3)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a bad-input fuzz worker (started by "
                                                 "bad_input_runner.py)")
    parser.add_argument("--worker-fd", type=int, required=True, help="pipe for the results")
    parser.add_argument("--memory-gb", type=float, default=4.0)
    args = parser.parse_args()
    worker_main(args.worker_fd, args.memory_gb)
