"""The README's quickstart and its torch.export example run as written."""
import re

import pytest
import torch

from testing import ROOT

README = ROOT / "README.md"


def test_quickstart_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    namespace = {}
    exec(compile(blocks[0], "README quickstart", "exec"), namespace)
    exec(compile(blocks[1], "README sparse-input example", "exec"), namespace)
    assert namespace["y"].shape == (50, 100 * 100)
    assert namespace["out"].shape == (500, 100 * 100)
    exec(compile(blocks[2], "README seed-recipe example", "exec"), namespace)
    assert namespace["out"].shape == (8, 64, 56, 56)
    import torch_sparse_conv as tsc
    assert isinstance(namespace["model"][0], tsc.SparseConv2d)
    assert "density=0.100" in repr(tsc.SparseConv2d(64, 128, 3, density=0.1))


@pytest.mark.slow
def test_export_example_runs(tmp_path):
    """The sparse-input torch.export example of "Deploying a model" runs and gives the module's
    result."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [block for block in blocks if "forward_csr" in block]
    namespace = {}
    exec(compile(example.replace("/tmp/", f"{tmp_path}/"), "README export example", "exec"),
         namespace)
    expected = namespace["conv"](namespace["x"])
    assert torch.equal(namespace["out"].to_dense(), expected.to_dense())
