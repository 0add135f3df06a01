"""Exports the TorchScript fixtures of the C++ suite (run by ctest before the tests that
load them): scripted models using the torch_sparse_conv ops, and their inputs and Python's
results.

    python tests/cpp/export_fixture.py <out_dir>

Writes
  sparse_filter_model.pt     scripted pruned CNN: SparseConv2d layers and a layer calling
                             tsc.sparse_conv2d
  sparse_filter_expected.pt  attributes input, output, input_grad (of output.sum())
  toeplitz_model.pt          scripted ToeplitzConv2d, method 'precomputed' (CSR images in, CSR
                             out)
  toeplitz_expected.pt       attributes input (dense images), output (dense result)
The expected values live as attributes of a scripted module because torch::jit::load reads
that container in C++ without further tools.
"""
import os
import sys

import torch
from torch import Tensor, nn

# The repository's own package, not another checkout's install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import torch_sparse_conv as tsc  # noqa: E402


class MaskedConv(nn.Module):
    """A dense weight with a fixed pattern of zeros, convolved by tsc.sparse_conv2d (packed on
    every call, the argument checks scripted too)."""

    def __init__(self, in_channels: int, out_channels: int, density: float):
        super().__init__()
        weight = torch.randn(out_channels, in_channels, 3, 3)
        # A buffer: pack_sparse_filter has no autograd formula (its values are a gather).
        self.register_buffer("weight", weight * (torch.rand_like(weight) < density))
        self.bias = nn.Parameter(torch.randn(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return tsc.sparse_conv2d(x, self.weight, self.bias, 1, 1)


class Tensors(nn.Module):
    """Holds named tensors as attributes, for the C++ side to read."""

    def __init__(self, **tensors: Tensor):
        super().__init__()
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor.detach().contiguous())

    def forward(self) -> int:
        return 0


def export_sparse_filter(out_dir: str) -> None:
    model = nn.Sequential(
        tsc.SparseConv2d(3, 8, 3, padding=1, density=0.3),
        nn.ReLU(),
        tsc.SparseConv2d(8, 6, (2, 3), stride=2, groups=2, density=0.4),
        nn.ReLU(),
        MaskedConv(6, 4, density=0.3),
    ).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    output = scripted(x)
    output.sum().backward()
    scripted.save(os.path.join(out_dir, "sparse_filter_model.pt"))
    torch.jit.script(Tensors(input=x, output=output, input_grad=x.grad)).save(
        os.path.join(out_dir, "sparse_filter_expected.pt"))


def export_toeplitz(out_dir: str) -> None:
    module = tsc.ToeplitzConv2d((10, 9), torch.randn(4, 3), mode="full", method="precomputed")
    scripted = torch.jit.script(module.eval())
    images = torch.randn(3, 10 * 9) * (torch.rand(3, 10 * 9) < 0.1)
    output = scripted(images.to_sparse_csr())
    scripted.save(os.path.join(out_dir, "toeplitz_model.pt"))
    torch.jit.script(Tensors(input=images, output=output.to_dense())).save(
        os.path.join(out_dir, "toeplitz_expected.pt"))


def fixture_dir(script: str) -> str:
    """The fixture script's one argument, the output folder (made), with the seed set."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: {script} <out_dir>")
    os.makedirs(sys.argv[1], exist_ok=True)
    torch.manual_seed(0)
    return sys.argv[1]


def main() -> None:
    out_dir = fixture_dir("export_fixture.py")
    export_sparse_filter(out_dir)
    export_toeplitz(out_dir)
    print(f"TorchScript fixtures written to {out_dir}")


if __name__ == "__main__":
    main()
