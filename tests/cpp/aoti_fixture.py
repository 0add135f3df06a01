"""Compiles the AOTInductor fixture of the C++ suite (run by ctest before the test that loads
it): an exported model with SparseConv2d layers (dynamic batch, height and width), packaged by
AOTInductor, and its input and Python's result at other sizes than the ones exported with.

    python tests/cpp/aoti_fixture.py <out_dir>

Writes
  sparse_filter_aoti.pt2           the AOTInductor package
  sparse_filter_aoti_expected.pt   attributes input, output (see export_fixture.Tensors)
"""
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository's own package
sys.path.insert(0, HERE)
import torch_sparse_conv as tsc  # noqa: E402
from export_fixture import Tensors, fixture_dir  # noqa: E402


def main() -> None:
    out_dir = fixture_dir("aoti_fixture.py")
    model = nn.Sequential(tsc.SparseConv2d(3, 8, 3, padding=1, density=0.3), nn.ReLU(),
                          tsc.SparseConv2d(8, 4, 3, stride=2, groups=2, density=0.4)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    height, width = torch.export.Dim("height", min=8, max=256), torch.export.Dim("width", min=8,
                                                                                 max=256)
    program = torch.export.export(model, (torch.randn(2, 3, 12, 12),),
                                  dynamic_shapes=({0: batch, 2: height, 3: width},))
    torch._inductor.aoti_compile_and_package(
        program, package_path=os.path.join(out_dir, "sparse_filter_aoti.pt2"))
    x = torch.randn(5, 3, 15, 11)
    with torch.no_grad():
        output = model(x)
    torch.jit.script(Tensors(input=x, output=output)).save(
        os.path.join(out_dir, "sparse_filter_aoti_expected.pt"))
    print(f"AOTInductor fixture written to {out_dir}")


if __name__ == "__main__":
    main()
