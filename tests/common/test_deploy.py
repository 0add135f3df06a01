"""Deployment: a torch.export program and an AOTInductor package of a model with layers of
both families (SparseConv2d, and ToeplitzConv2d through forward_csr), saved in one process,
load and run in a fresh one that makes the operators known with
torch.ops.load_library(tsc.library_path()) alone (README, "Deploying a model"); and what
torch.export cannot do with a sparse tensor in torch 2.11, as the README says."""
import numpy as np
import pytest
import torch

import torch_sparse_conv as tsc

from testing import ROOT, random_csr, run_python

SCRIPT = str(ROOT / "tests" / "common" / "deploy_artifacts.py")


@pytest.mark.slow
def test_export_and_aoti_packages_run_in_a_fresh_process(tmp_path):
    made = run_python(SCRIPT, "make", str(tmp_path), timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    library = made.stdout.strip().splitlines()[-1]
    # Without the library, the artifact names an operator nobody registered.
    bare = run_python("-c", "import torch; torch._inductor.aoti_load_package("
                      f"{str(tmp_path / 'model_aoti.pt2')!r})", timeout=300)
    assert bare.returncode != 0 and "torch_sparse_conv::" in bare.stderr
    ran = run_python(SCRIPT, "run", str(tmp_path), library, timeout=300)
    assert ran.returncode == 0 and "ok" in ran.stdout, ran.stderr[-3000:]


class _OnCsr(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tsc.ToeplitzConv2d((4, 5), torch.ones(3, 3))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.slow
def test_export_takes_no_sparse_tensor():
    """torch 2.11's limits, which forward_csr works around. Should this fail, torch has lifted
    one: update README's "Deploying a model" and ToeplitzConv2d's docstring."""
    x = random_csr(np.random.default_rng(0), 3, 4, 5, 0.5, torch.float32)
    # A CSR result built from fake tensors (torch.sparse_csr_tensor under FakeTensorMode).
    with pytest.raises(RuntimeError, match="Values and compressed tensor instance need to be "
                                           "on the same device"):
        torch.export.export(_OnCsr(), (x,))
    # A CSR input's sizes are not symbolic: its batch specializes to the example's.
    with pytest.raises(Exception, match="specialized it to be a constant"):
        torch.export.export(torch.nn.Identity(), (x,),
                            dynamic_shapes=({0: torch.export.Dim("batch")},))
