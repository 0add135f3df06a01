"""Sparse-filter references: F.conv2d (nn.Conv2d's own forward for the padding modes) in
float64 on the masked dense weight, autograd of that for the gradients, the number of terms
each element sums, and the comparisons of a result with them."""
import dataclasses
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

import bad_input_oracles as oracles

from .checks import Attempt
from .filter_cases import FilterConfig, symmetric_padding


def csr_rows(row_ptr: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(row_ptr.numel() - 1),
                                   (row_ptr[1:] - row_ptr[:-1]).cpu())


def dense_from_csr(row_ptr, col_idx, values, weight_size) -> torch.Tensor:
    """The dense weight a filter CSR stands for, duplicates summed, in float64 on the CPU
    (the bad-input fuzzer's reference, on float64 CPU copies)."""
    return oracles.dense_from_csr(row_ptr.cpu(), col_idx.cpu(), values.detach().cpu().double(),
                                  weight_size)


def dense_weights(row_ptr, col_idx, values, weight_size):
    """The dense float64 weight a CSR stands for, and the same of |values| (its magnitude)."""
    return (dense_from_csr(row_ptr, col_idx, values, weight_size),
            dense_from_csr(row_ptr, col_idx, values.abs(), weight_size))


def gather_kept(dense_grad: torch.Tensor, row_ptr, col_idx) -> np.ndarray:
    """A dense weight gradient at the CSR's entries, in the CSR's order."""
    flat = dense_grad.reshape(dense_grad.shape[0], -1)
    return flat[csr_rows(row_ptr.cpu()), col_idx.cpu()].numpy()


@dataclasses.dataclass
class FilterReference:
    out: np.ndarray
    out_mag: np.ndarray
    grad_out: torch.Tensor  # in the case's dtype; the reference used it as float64
    grad_input: Optional[np.ndarray] = None
    grad_input_mag: Optional[np.ndarray] = None
    grad_weight: Optional[torch.Tensor] = None  # dense, float64
    grad_weight_mag: Optional[torch.Tensor] = None
    grad_bias: Optional[np.ndarray] = None
    grad_bias_mag: Optional[np.ndarray] = None

    def masked_weight_grads(self, mask: torch.Tensor):
        """The dense weight gradient and its magnitude where `mask` keeps a tap (numpy)."""
        return (self.grad_weight * mask).numpy(), (self.grad_weight_mag * mask).numpy()


def filter_reference(conv, base, view, weight64, bias, dtype, gen, backward: bool,
                     abs_weight64=None) -> FilterReference:
    """conv(view(x), w, b) in float64 and, for a random grad_out, the gradients of the base
    input, the dense weight and the bias by autograd; each also on absolute values, which
    bounds the magnitudes the tolerances scale with."""
    def run(x, w, b, grad_out=None):
        leaves = [t.detach().clone().requires_grad_() for t in (x, w)]
        b_leaf = None if b is None else b.detach().clone().requires_grad_()
        # Plain layouts: torch 2.11's own CPU conv2d gets the weight gradient wrong for a
        # grouped conv of an unbatched input with channels_last strides and a channels_last
        # weight (x = torch.randn(1, 6, 7, 20).to(memory_format=torch.channels_last)[0],
        # groups=3, seed 4642); the reference must not inherit that.
        out = conv(view(leaves[0]).contiguous(), leaves[1].contiguous(), b_leaf)
        if grad_out is None:
            return out.detach(), None
        wanted = leaves + ([b_leaf] if b_leaf is not None else [])
        grads = torch.autograd.grad(out, wanted, grad_out, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wanted)]
        return out.detach(), grads

    x64 = base.detach().double()
    b64 = None if bias is None else bias.detach().double()
    abs_weight64 = weight64.abs() if abs_weight64 is None else abs_weight64
    out, _ = run(x64, weight64, b64)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=gen).to(dtype)
    if not backward:
        mag, _ = run(x64.abs(), abs_weight64, None if b64 is None else b64.abs())
        return FilterReference(out.numpy(), mag.numpy(), grad_out)
    out, grads = run(x64, weight64, b64, grad_out.double())
    mag, mags = run(x64.abs(), abs_weight64, None if b64 is None else b64.abs(),
                    grad_out.double().abs())
    ref = FilterReference(out.numpy(), mag.numpy(), grad_out, grads[0].numpy(),
                          mags[0].numpy(), grads[1], mags[1])
    if bias is not None:
        ref.grad_bias, ref.grad_bias_mag = grads[2].numpy(), mags[2].numpy()
    return ref


@dataclasses.dataclass
class FilterTerms:
    """How many products each compared element sums (for the tolerances)."""
    out: int
    grad_input: int
    grad_weight: int


def filter_terms(cfg: FilterConfig, out_shape, extra_per_tap: int = 1) -> FilterTerms:
    kh, kw = cfg.kernel
    n = 1 if cfg.unbatched else cfg.batch
    pixels = n * int(np.prod(out_shape[-2:]))
    copies = (n if cfg.layout == "expanded" else 1) * (9 if cfg.padding_mode != "zeros" else 1)
    return FilterTerms(
        out=(cfg.in_channels // cfg.groups) * kh * kw * extra_per_tap + 1,
        grad_input=(cfg.out_channels // cfg.groups) * kh * kw * extra_per_tap * copies,
        grad_weight=pixels)


def check_filter_gradients(a: Attempt, ref: FilterReference, terms: FilterTerms, dtype,
                           grad_base, grad_weight_like, expected_weight, expected_weight_mag,
                           grad_bias):
    a.compare("grad input", grad_base, ref.grad_input, ref.grad_input_mag, terms.grad_input,
              dtype)
    a.compare("grad weight", grad_weight_like, expected_weight, expected_weight_mag,
              terms.grad_weight, dtype)
    if ref.grad_bias is not None:
        a.compare("grad bias", grad_bias, ref.grad_bias, ref.grad_bias_mag, terms.grad_weight,
                  dtype)


def check_mutated_values(ctx, cfg, op_name, label, conv, base, view, bias, row_ptr, col_idx,
                         values, weight_shape, call, terms):
    """Call, write the kept values in place through .data (no version bump), call again: the
    second result must follow the new values (no stale cached weight)."""
    with ctx.attempt(op_name, label, "after in-place edit") as a:
        values = values.clone()
        call(values)  # the first call may remember whatever it likes
        values.data.mul_(-1.5)
        out = call(values)
        weight64, abs_weight64 = dense_weights(row_ptr, col_idx, values, weight_shape)
        b64 = None if bias is None else bias.double()
        expected = conv(view(base.double()).contiguous(), weight64, b64)
        magnitude = conv(view(base.double().abs()).contiguous(), abs_weight64,
                         None if b64 is None else b64.abs())
        a.compare("output after edit", out, expected.numpy(), magnitude.numpy(), terms.out,
                  cfg.dtype)


def reference_raises(fn) -> bool:
    try:
        fn()
    except (RuntimeError, ValueError):
        return True
    return False


def functional_conv(cfg: FilterConfig, padding=None):
    """F.conv2d with the case's geometry (`padding`: the operator's explicit pairs instead)."""
    padding = cfg.padding if padding is None else padding
    return lambda x, w, b: F.conv2d(x, w, b, cfg.stride, padding, cfg.dilation, cfg.groups)


def module_conv(cfg: FilterConfig):
    """nn.Conv2d's own forward (its padding modes) on float64 weights passed in."""
    layer = torch.nn.Conv2d(cfg.in_channels, cfg.out_channels, cfg.kernel, cfg.stride,
                            cfg.padding, cfg.dilation, cfg.groups, cfg.bias, cfg.padding_mode,
                            dtype=torch.float64)
    return lambda x, w, b: layer._conv_forward(x, w, b)


def op_padding(cfg: FilterConfig) -> List[int]:
    return list(symmetric_padding(cfg.padding, cfg.kernel, cfg.dilation))
