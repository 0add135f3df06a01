"""The package's import paths (both families' names gathered in torch_sparse_conv.nn and
.functional, and the paths that objects pickled before the families became subpackages name),
and its packaging: build requirements, wheel metadata, what the wheel and sdist carry."""
import email.parser
import io
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testing import ROOT

import torch_sparse_conv as tsc
import torch_sparse_conv.functional as functional
import torch_sparse_conv.nn as nn


def test_nn_and_functional_gather_both_families():
    assert nn.SparseConv2d is tsc.SparseConv2d and nn.ToeplitzConv2d is tsc.ToeplitzConv2d
    assert nn.sparsify is tsc.sparsify
    assert functional.sparse_conv2d is tsc.sparse_conv2d
    assert functional.toeplitz_conv2d is tsc.toeplitz_conv2d
    assert functional.pack_sparse_filter is tsc.pack_sparse_filter


def test_models_pickled_under_the_old_module_paths_resolve():
    find = pickle.Unpickler(io.BytesIO(b"")).find_class
    assert find("torch_sparse_conv.nn", "SparseConv2d") is tsc.SparseConv2d
    assert find("torch_sparse_conv.toeplitz", "ToeplitzConv2d") is tsc.ToeplitzConv2d


def test_a_pickled_module_round_trips():
    layer = tsc.SparseConv2d(4, 6, 3, padding=1)
    restored = pickle.loads(pickle.dumps(layer))
    assert type(restored) is tsc.SparseConv2d
    assert restored.weight_size == layer.weight_size


# Packaging: pyproject.toml's build requirements, the metadata setup.py gives the wheel, what
# the wheel and the sdist carry. Nothing here builds the extension or downloads anything: a
# wheel built with build isolation downloads torch (about 4 GB with its CUDA wheels) and
# compiles every source from scratch, and one built without isolation here would compile what
# csrc/ holds into build/; README's "Installing as a package" records the one such build
# checked by hand.


def _requirement(line: str):
    """("name", "==1.2") from a requirement line (no markers or extras here)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", line)
    return match.group(1).lower().replace("_", "-"), match.group(2)


def _requirements_dev() -> dict:
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    return dict(_requirement(line.split("#")[0]) for line in lines
                if line.split("#")[0].strip())


def test_build_requirements_pin_the_torch_requirements_dev_pins():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    with open(ROOT / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    # Metadata in one place, setup.py: a [project] table would be a second one.
    assert set(pyproject) == {"build-system"}
    system = pyproject["build-system"]
    assert system["build-backend"] == "setuptools.build_meta"
    requires = dict(_requirement(line) for line in system["requires"])
    assert {"setuptools", "wheel", "ninja", "torch"} <= set(requires)
    assert requires["torch"] == _requirements_dev()["torch"] == "==2.11.0"
    # The installed torch (scripts/setup_env.sh builds with it, without isolation) is the one
    # both pin; torch.__version__ may carry a local label such as "+cu130".
    assert "==" + torch.__version__.split("+")[0] == requires["torch"]


def test_py_typed_ships_in_the_package():
    assert (Path(tsc.__file__).parent / "py.typed").is_file()


def _run(args, cwd, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True,
                          text=True, **kwargs)


@pytest.fixture(scope="module")
def wheel_metadata(tmp_path_factory):
    """The wheel's METADATA as pip asks setuptools for it (PEP 517), without building."""
    out = tmp_path_factory.mktemp("metadata")
    _run(["-c", "import sys, setuptools.build_meta as backend; "
                "print(backend.prepare_metadata_for_build_wheel(sys.argv[1]))", str(out)],
         cwd=ROOT)
    (dist_info,) = out.glob("*.dist-info")
    return email.parser.Parser().parsestr((dist_info / "METADATA").read_text())


@pytest.mark.slow
def test_wheel_requires_exactly_the_torch_that_builds_it(wheel_metadata):
    requires = wheel_metadata.get_all("Requires-Dist")
    unconditional = [r for r in requires if ";" not in r]
    # Without the local label: PyPI's own torch reports "2.11.0+cu130" and is version 2.11.0.
    assert unconditional == ["torch==" + torch.__version__.split("+")[0]]


@pytest.mark.slow
def test_wheel_has_the_compat_and_bench_extras(wheel_metadata):
    assert {"compat", "bench"} <= set(wheel_metadata.get_all("Provides-Extra"))
    requires = wheel_metadata.get_all("Requires-Dist")
    for extra, names in [("compat", {"numpy", "scipy"}),
                         ("bench", {"tqdm", "matplotlib", "torchvision==0.26.0"})]:
        listed = {r.split(";")[0].strip() for r in requires if f'extra == "{extra}"' in r}
        assert names <= listed
    # The one pinned extra (torchvision pairs with one torch release) agrees with the pin
    # the tests and benchmarks run with.
    assert _requirements_dev()["torchvision"] == "==0.26.0"


@pytest.mark.slow
def test_wheel_and_sdist_contents(tmp_path):
    """build_py lays out the wheel's Python part (py.typed with it, as package data);
    egg_info's SOURCES.txt is the sdist's file list (every header and CUDA source with it,
    through MANIFEST.in). Neither compiles anything or writes into the source tree."""
    _run(["setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "build_py",
          "--build-lib", str(tmp_path / "lib")], cwd=ROOT)
    assert (tmp_path / "lib" / "torch_sparse_conv" / "py.typed").is_file()
    assert (tmp_path / "lib" / "torch_sparse_conv" / "bench" / "__main__.py").is_file()
    sources = set((tmp_path / "torch_sparse_conv.egg-info" / "SOURCES.txt").read_text().split())
    assert "torch_sparse_conv/py.typed" in sources
    wanted = {str(path.relative_to(ROOT)) for top in ("csrc", "cuda")
              for path in (ROOT / top).rglob("*") if path.suffix in (".h", ".cpp", ".cu", ".cuh")}
    assert wanted and wanted <= sources


@pytest.mark.slow
def test_imports_and_runs_without_numpy_or_scipy():
    """The compat extra is optional: without numpy and scipy the package imports and its
    operators run; only compat's Toeplitz_convolution2d needs them."""
    script = (
        "import sys\n"
        "sys.modules['numpy'] = sys.modules['scipy'] = None\n"
        "import torch, torch.nn.functional as F, torch_sparse_conv as tsc\n"
        "x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)\n"
        "torch.testing.assert_close(tsc.sparse_conv2d(x, w, padding=1), "
        "F.conv2d(x, w, padding=1))\n"
        "try:\n"
        "    tsc.compat.Toeplitz_convolution2d((4, 4), [[1.0]])\n"
        "except ImportError as error:\n"
        "    print('compat needs', error.name)\n")
    assert _run(["-c", script], cwd=ROOT).stdout.strip() == "compat needs numpy"
