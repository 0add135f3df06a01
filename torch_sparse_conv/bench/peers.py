"""The contenders that are not torch_sparse_conv's own kernels, and the helpers that decide
which contenders can run here (optional packages, methods a build may lack, TF32 switches)."""
import contextlib
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# sparse_convolution 0.4.2's valid (method, backend) pairs, used if the package hides its table.
SC_FALLBACK_PAIRS = [("direct", "numba"), ("precomputed", "numpy"), ("precomputed", "numba"),
                     ("precomputed", "torch"), ("lazy", "numpy"), ("lazy", "torch"),
                     ("gather_scatter", "numpy"), ("gather_scatter", "numba"),
                     ("gather_scatter", "torch")]


def probe(fn: Callable[[], object]) -> Optional[str]:
    """Calls ``fn`` once: None if it ran, else the first line of its error. Used to record a
    method this build or device does not offer as 'not available' instead of crashing."""
    try:
        fn()
    except (RuntimeError, ValueError, NotImplementedError, TypeError, AssertionError) as error:
        message = str(error).strip().splitlines()
        return f"{type(error).__name__}: {message[0] if message else ''}"[:200]
    return None


@contextlib.contextmanager
def tf32(enabled: bool):
    """cuDNN convolutions and cuBLAS matmuls with TF32 on or off, restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def with_tf32(enabled: bool, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run under :func:`tf32` (the flags are read when the kernel is chosen)."""
    def call():
        with tf32(enabled):
            return fn()
    return call


def sparse_convolution():
    """The sparse_convolution package with its numba threads matched to torch's, or None."""
    try:
        import sparse_convolution as package
    except ImportError:
        return None
    try:
        import numba
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    return package


def sparse_convolution_pairs(package) -> List[Tuple[str, str]]:
    """Every (method, backend) sparse_convolution offers."""
    table = getattr(getattr(package, "sparse_convolution", None), "VALID_BACKENDS", None)
    if not isinstance(table, dict):
        return list(SC_FALLBACK_PAIRS)
    return [(method, backend) for method, backends in table.items() for backend in backends]


def scipy_convolve2d_batch(images: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """``scipy.signal.convolve2d`` on each densified image ``(B, H, W)``; ``(B, H_out*W_out)``."""
    import scipy.signal
    return np.stack([scipy.signal.convolve2d(image, kernel, mode).reshape(-1)
                     for image in images]) if len(images) else np.zeros((0, 0))


def dense_conv2d_same(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """A true 'same' convolution (scipy's centring) of dense ``(B, 1, H, W)`` images with
    F.conv2d: correlation with the flipped kernel, zero-padded ``(k-1)//2`` before and the rest
    after. Returns ``(B, H*W)``."""
    kh, kw = kernel.shape
    top, left = kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2
    padded = F.pad(images, (left, kw - 1 - left, top, kh - 1 - top))
    out = F.conv2d(padded, kernel.flip(0, 1).reshape(1, 1, kh, kw))
    return out.reshape(images.shape[0], -1)


def prune_masked_conv2d(weight: torch.Tensor, mask: torch.Tensor, padding,
                        stride=1) -> torch.nn.Module:
    """An ``nn.Conv2d`` pruned with ``torch.nn.utils.prune.custom_from_mask``: each forward
    multiplies ``weight_orig`` by the mask (a forward pre-hook), then runs the dense conv."""
    import torch.nn.utils.prune as prune
    conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                           stride=stride, padding=padding, bias=False).to(weight.device,
                                                                          weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
    prune.custom_from_mask(conv, "weight", mask)
    return conv
