"""Export and AOTInductor artifacts of a model with SparseConv2d layers, made in one process
and run in another: `python deploy_artifacts.py make DIR`, then `python deploy_artifacts.py
run DIR LIBRARY`, where the second process never imports torch_sparse_conv and makes the
operators known with torch.ops.load_library(LIBRARY) alone (run by test_deploy.py)."""
import sys

import torch
from torch import nn


def make(out_dir):
    import torch_sparse_conv as tsc

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.8)
    model = nn.Sequential(tsc.SparseConv2d.from_dense(conv), nn.ReLU(),
                          tsc.SparseConv2d(8, 6, 3, stride=2, density=0.2)).eval()
    x = torch.randn(2, 4, 10, 10)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, f"{out_dir}/model.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=f"{out_dir}/model_aoti.pt2")
    probe = torch.randn(5, 4, 10, 10)  # another batch size than the one exported with
    with torch.no_grad():
        torch.save({"input": probe, "output": model(probe)}, f"{out_dir}/expected.pt")
    print(tsc.library_path())


def run(out_dir, library):
    torch.ops.load_library(library)  # the only thing of ours this process loads
    assert "torch_sparse_conv" not in sys.modules
    expected = torch.load(f"{out_dir}/expected.pt")
    exported = torch.export.load(f"{out_dir}/model.pt2").module()
    compiled = torch._inductor.aoti_load_package(f"{out_dir}/model_aoti.pt2")
    with torch.no_grad():
        for out in (exported(expected["input"]), compiled(expected["input"])):
            torch.testing.assert_close(out, expected["output"], rtol=1e-5, atol=1e-5)
    assert "torch_sparse_conv" not in sys.modules
    print("ok")


if __name__ == "__main__":
    make(sys.argv[2]) if sys.argv[1] == "make" else run(sys.argv[2], sys.argv[3])
