"""The library under test, the package its compat module replaces (when importable), the
devices to run on, and the process-wide settings the references need."""
import warnings
from typing import List, Optional

import torch

import torch_sparse_conv  # noqa: F401  (registers torch.ops.torch_sparse_conv)

try:
    import sparse_convolution  # the package compat.Toeplitz_convolution2d replaces
except ImportError:  # pragma: no cover - optional
    sparse_convolution = None

# Read at call time (library.OPS), so a test can swap in a deliberately wrong library.
OPS = torch.ops.torch_sparse_conv
# torch's notes on sparse tensors, repeated for every case, would drown the report.
warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")
HAS_CUDA = torch.cuda.is_available()
# The references are float64; cuDNN's TF32 would be a different operator (as tests/conftest.py).
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def devices() -> List[str]:
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


def leaf(t: Optional[torch.Tensor], device: str, requires_grad: bool):
    """A fresh leaf copy on `device` with the very same strides (a strided view stays strided,
    channels_last stays channels_last), never the original."""
    if t is None:
        return None
    copy = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    with torch.no_grad():
        copy.copy_(t)
    return copy.requires_grad_(requires_grad)
