"""sparse_convolution's own test suite, from the sdist that requirements-dev.txt pins
(scripts/setup_env.sh downloads it), run with `sparse_convolution` aliased to
torch_sparse_conv.compat: the drop-in passes the suite written for the package.

Left out, because they import the package's private module sparse_convolution.sparse_convolution
(for HAS_NUMBA, and to assert the package picked its numba backend):"""
import re
import tarfile

import pytest

from testing import ROOT, run_python

PRIVATE_MODULE_TESTS = ["test_unit.py::test_toeplitz_convolution2d",
                        "test_unit.py::test_default_method_uses_direct_numba"]
__doc__ += "\n" + "\n".join(f"  {name}" for name in PRIVATE_MODULE_TESTS)


def _pinned_version():
    text = (ROOT / "requirements-dev.txt").read_text()
    return re.search(r"^sparse_convolution==(\S+)", text, flags=re.M).group(1)


@pytest.mark.slow
def test_the_packages_own_suite_passes_against_compat(tmp_path):
    version = _pinned_version()
    sdist = ROOT / ".venv" / "peer-sdists" / f"sparse_convolution-{version}.tar.gz"
    assert sdist.exists(), f"{sdist} is missing: scripts/setup_env.sh downloads it"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/tests/" in m.name and m.isfile()]
        archive.extractall(tmp_path, members=members, filter="data")
    suite = tmp_path / f"sparse_convolution-{version}" / "tests"
    alias = tmp_path / "alias" / "sparse_convolution"
    alias.mkdir(parents=True)
    (alias / "__init__.py").write_text(
        "from torch_sparse_conv.compat import *  # noqa: F401,F403\n"
        "from torch_sparse_conv.compat import Toeplitz_convolution2d  # noqa: F401\n")
    deselect = [arg for name in PRIVATE_MODULE_TESTS for arg in ("--deselect", name)]
    result = run_python("-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        "--rootdir", str(suite), str(suite), *deselect, timeout=900,
                        PYTHONPATH=str(alias.parent))
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 262 and "failed" not in summary, summary
    # The alias, not the installed package, was what the suite imported.
    check = run_python("-c", "import sparse_convolution as s; print(s.__file__)",
                       PYTHONPATH=str(alias.parent))
    assert str(alias) in check.stdout, check.stdout
