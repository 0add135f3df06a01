"""Deployment: a torch.export program and an AOTInductor package of a model with SparseConv2d
layers, saved in one process, load and run in a fresh one that makes the operators known
with torch.ops.load_library(tsc.library_path()) alone (README, "Deploying a model")."""
import pytest

from testing import ROOT, run_python

SCRIPT = str(ROOT / "tests" / "common" / "deploy_artifacts.py")


@pytest.mark.slow
def test_export_and_aoti_packages_run_in_a_fresh_process(tmp_path):
    made = run_python(SCRIPT, "make", str(tmp_path), timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    library = made.stdout.strip().splitlines()[-1]
    # Without the library, the artifact names an operator nobody registered.
    bare = run_python("-c", "import torch; torch._inductor.aoti_load_package("
                      f"{str(tmp_path / 'model_aoti.pt2')!r})", timeout=300)
    assert bare.returncode != 0 and "torch_sparse_conv::sparse_filter_conv2d" in bare.stderr
    ran = run_python(SCRIPT, "run", str(tmp_path), library, timeout=300)
    assert ran.returncode == 0 and "ok" in ran.stdout, ran.stderr[-3000:]
