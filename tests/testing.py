"""Helpers the test files and the fuzzers share (tests/ is on sys.path: conftest.py, and the
fuzzers' scripts put it there)."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "python"


def load_example(name: str):
    """A module of examples/python (e.g. the demo's models), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"examples.{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
