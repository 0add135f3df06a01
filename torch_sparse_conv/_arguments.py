"""Argument rules both operator families apply, each written once.

Internal (not re-exported by the package): the families' functional modules and fake kernels
import these by name.

* :func:`check_float_dtype` -- the dtypes both families take: float32, float64, float16 and
  bfloat16, on every device (float16 and bfloat16 accumulate in float32).
* :func:`check_one_device` -- the fake kernels' check that every tensor argument is on one
  device.
"""
import torch
from torch import Tensor


def check_float_dtype(tensor: Tensor, caller: str, name: str) -> None:
    """TypeError unless ``tensor``'s dtype is one the operators take. Scripts, as the
    families' checks do (the dtypes are listed here: TorchScript reads no global tuple)."""
    dtype = tensor.dtype
    if dtype not in [torch.float32, torch.float64, torch.float16, torch.bfloat16]:
        raise TypeError(f"{caller}: {name} must be float32, float64, float16 or bfloat16, "
                        f"got {dtype} on {tensor.device}")


def check_one_device(op: str, anchor, **tensors) -> None:
    """Every tensor argument (None skipped) on the device of ``anchor``, a (label, tensor)
    pair. The dispatcher sends a call whose tensors mix 'meta' with another device to the
    fake kernel, where a real kernel's device check never runs."""
    anchor_name, anchor_tensor = anchor
    for name, tensor in tensors.items():
        if tensor is not None:
            torch._check(tensor.device == anchor_tensor.device, lambda: (
                f"{op}: {name} is on {tensor.device} but {anchor_name} is on "
                f"{anchor_tensor.device}"))
