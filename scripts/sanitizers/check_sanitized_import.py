"""pytest plugin of scripts/run_sanitizer_tests.sh (loaded with -p): the run stops before any
test unless torch_sparse_conv._C is the sanitized build under $TSC_SANITIZED_BUILD and the
AddressSanitizer and UndefinedBehaviorSanitizer runtimes are loaded into the process."""
import ctypes
import os

import pytest


def _sanitized_module_path():
    expected = os.path.realpath(os.environ["TSC_SANITIZED_BUILD"])
    from torch_sparse_conv import _C

    path = os.path.realpath(_C.__file__)
    if not path.startswith(expected + os.sep):
        raise pytest.UsageError(
            f"torch_sparse_conv._C was imported from {path}, not from the sanitized build "
            f"in {expected}: check PYTHONPATH and PYTHONSAFEPATH")
    process = ctypes.CDLL(None)
    for symbol in ("__asan_init", "__ubsan_handle_builtin_unreachable"):
        if not hasattr(process, symbol):
            raise pytest.UsageError(f"{symbol} is not loaded: LD_PRELOAD the sanitizer runtimes")
    return path


def pytest_configure(config):
    config._tsc_sanitized_module = _sanitized_module_path()


def pytest_sessionstart(session):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:  # shown under -q too
        reporter.write_line(f"torch_sparse_conv._C: {session.config._tsc_sanitized_module}")
