"""Export and AOTInductor artifacts of a model with layers of both families, made in one
process and run in another: `python deploy_artifacts.py make DIR`, then `python
deploy_artifacts.py run DIR LIBRARY`, where the second process never imports torch_sparse_conv
and makes the operators known with torch.ops.load_library(LIBRARY) alone (run by
test_deploy.py).

One model holds both families so that one AOTInductor compile (about a minute) covers them:
SparseConv2d layers on dense images, and ToeplitzConv2d layers on a batch of sparse images
given as its CSR arrays (torch.export takes no sparse tensor, README "Deploying a model"),
exported with a dynamic batch, height and width of images, a dynamic batch of sparse images,
and a dynamic number of stored pixels. (The spatial dims start at 8: below that, an output of
the stride-2 layer would be one pixel wide, a size export specializes, as for nn.Conv2d.)"""
import sys

import torch
from torch import nn


class Deployed(nn.Module):
    def __init__(self):
        import torch_sparse_conv as tsc  # here, as `run` must do without it

        super().__init__()
        conv = nn.Conv2d(4, 8, 3, padding=1)
        with torch.no_grad():
            conv.weight.mul_(torch.rand_like(conv.weight) > 0.8)
        self.cnn = nn.Sequential(tsc.SparseConv2d.from_dense(conv), nn.ReLU(),
                                 tsc.SparseConv2d(8, 6, 3, stride=2, density=0.2))
        self.blur = tsc.ToeplitzConv2d((8, 8), torch.randn(3, 3), mode="full")
        self.edges = tsc.ToeplitzConv2d((10, 10), torch.randn(2, 2), method="precomputed")

    def forward(self, images, crow_indices, col_indices, values):
        crow_indices, col_indices, values = self.blur.forward_csr(crow_indices, col_indices,
                                                                  values)
        return (self.cnn(images),) + self.edges.forward_csr(crow_indices, col_indices,
                                                             values.relu())


def sparse_images(batch, density):
    """The CSR arrays of a batch of 8x8 images, tensors of their own (export takes no view of a
    sparse tensor)."""
    x = (torch.randn(batch, 64) * (torch.rand(batch, 64) < density)).to_sparse_csr()
    return x.crow_indices().clone(), x.col_indices().clone(), x.values().clone()


def make(out_dir):
    import torch_sparse_conv as tsc

    torch.manual_seed(0)
    model = Deployed().eval()
    example = (torch.randn(2, 4, 10, 10),) + sparse_images(3, 0.2)
    batch, frames = torch.export.Dim("batch", max=64), torch.export.Dim("frames", max=64)
    height, width = torch.export.Dim("height", min=8, max=256), torch.export.Dim("width", min=8,
                                                                                 max=256)
    nnz = torch.export.Dim("nnz", max=64 * 64)
    program = torch.export.export(model, example, dynamic_shapes=(
        {0: batch, 2: height, 3: width}, {0: frames + 1}, {0: nnz}, {0: nnz}))
    torch.export.save(program, f"{out_dir}/model.pt2")
    torch._inductor.aoti_compile_and_package(program, package_path=f"{out_dir}/model_aoti.pt2")
    # Other sizes than the exported ones: batch, image sizes, frames and stored pixels, none
    # at all too.
    probes = [(torch.randn(5, 4, 12, 17),) + sparse_images(6, 0.4),
              (torch.randn(1, 4, 9, 8),) + sparse_images(1, 0.0)]
    with torch.no_grad():
        torch.save([{"input": probe, "output": model(*probe)} for probe in probes],
                   f"{out_dir}/expected.pt")
    print(tsc.library_path())


def run(out_dir, library):
    torch.ops.load_library(library)  # the only thing of ours this process loads
    assert "torch_sparse_conv" not in sys.modules
    exported = torch.export.load(f"{out_dir}/model.pt2").module()
    compiled = torch._inductor.aoti_load_package(f"{out_dir}/model_aoti.pt2")
    with torch.no_grad():
        for expected in torch.load(f"{out_dir}/expected.pt"):
            for outputs in (exported(*expected["input"]), compiled(*expected["input"])):
                assert len(outputs) == len(expected["output"])
                for out, reference in zip(outputs, expected["output"]):
                    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert "torch_sparse_conv" not in sys.modules
    print("ok")


if __name__ == "__main__":
    make(sys.argv[2]) if sys.argv[1] == "make" else run(sys.argv[2], sys.argv[3])
