"""A sparse-filter case: draws the input, weight and bias, and runs the entry point the
configuration names: the functional API and the registered operator (packed or hand-made CSR)
here, the modules in filter_modules.py, the compat recipe in compat_checks.py."""
import random

import torch

import torch_sparse_conv as tsc
from testing import random_weight

from . import library
from .checks import Case
from .compat_checks import filter_compat_recipe
from .filter_cases import (FILTER_METHODS, FilterConfig, handmade_csr, lay_out_parameters,
                           make_input, maybe_int)
from .filter_modules import filter_module, filter_module_init
from .filter_reference import (check_filter_gradients, check_mutated_values, dense_weights,
                               filter_reference, filter_terms, functional_conv, gather_kept,
                               op_padding, reference_raises)
from .library import devices, leaf


def run_filter_case(cfg: FilterConfig, ctx: Case) -> None:
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed * 7919 + 1)
    base, view = make_input(cfg, gen)
    weight_size = (cfg.out_channels, cfg.in_channels // cfg.groups) + tuple(cfg.kernel)
    weight = random_weight(weight_size, cfg.density, torch.float64, gen).to(cfg.dtype)
    bias = torch.randn(cfg.out_channels, dtype=torch.float64, generator=gen).to(cfg.dtype) \
        if cfg.bias else None
    weight, bias = lay_out_parameters(cfg.weight_layout, weight, bias)
    runner = {"functional": filter_functional, "op": filter_op, "op_handmade": filter_op,
              "module": filter_module, "module_init": filter_module_init,
              "compat_recipe": filter_compat_recipe}[cfg.entry]
    runner(cfg, ctx, gen, rng, base, view, weight, bias)


def expect_errors_everywhere(ctx: Case, op_name: str, call) -> None:
    """The reference rejects the arguments: call(device, method) must raise for every device
    and method."""
    for device in devices():
        for method in FILTER_METHODS[device]:
            ctx.expect_error(op_name, f"{device}:{method}", lambda: call(device, method))


def check_pack(ctx: Case, weight: torch.Tensor, row_ptr, col_idx, values) -> None:
    """pack_sparse_filter: every nonzero, row-major (the CSR order), int64 indices."""
    with ctx.attempt("pack_sparse_filter", "-", "forward") as a:
        flat = weight.reshape(weight.shape[0], -1)
        kept = flat != 0
        a.expect(row_ptr.dtype == col_idx.dtype == torch.int64, "indices must be int64")
        a.expect(torch.equal(row_ptr.cpu(), torch.cat([torch.zeros(1, dtype=torch.int64),
                                                       kept.sum(1).cumsum(0)])),
                 "row_ptr does not count the nonzeros of each output channel")
        a.expect(torch.equal(col_idx.cpu(), torch.nonzero(kept)[:, 1]),
                 "col_idx are not the nonzero taps in order")
        a.expect(torch.equal(values.cpu(), flat[kept]), "values are not the nonzeros")


def filter_functional(cfg, ctx, gen, rng, base, view, weight, bias):
    conv = functional_conv(cfg)
    mask = (weight != 0).double()
    if reference_raises(lambda: conv(view(base.double()), weight.double(), None)):
        expect_errors_everywhere(ctx, "sparse_conv2d", lambda device, method: tsc.sparse_conv2d(
            view(base.to(device)), weight.to(device), None, cfg.stride, cfg.padding,
            cfg.dilation, cfg.groups, method))
        return
    ref = filter_reference(conv, base, view, weight.double(), bias, cfg.dtype, gen, cfg.backward)
    terms = filter_terms(cfg, ref.out.shape)
    stride, dilation = maybe_int(cfg.stride, rng), maybe_int(cfg.dilation, rng)
    for device in devices():
        for method in FILTER_METHODS[device]:
            label = f"{device}:{method}"
            leaves = [leaf(t, device, cfg.backward) for t in (base, weight, bias)]
            with ctx.attempt("sparse_conv2d", label, "forward") as a:
                out = tsc.sparse_conv2d(view(leaves[0]), leaves[1], leaves[2], stride,
                                        cfg.padding, dilation, cfg.groups, method)
                a.expect(out.dtype == cfg.dtype and out.device.type == device,
                         f"output is {out.dtype} on {out.device}")
                a.compare("output", out, ref.out, ref.out_mag, terms.out, cfg.dtype)
            if a.failed or not cfg.backward:
                continue
            with ctx.attempt("sparse_conv2d", label, "backward") as a:
                wanted = [t for t in leaves if t is not None]
                grads = torch.autograd.grad(out, wanted, ref.grad_out.to(device))
                check_filter_gradients(a, ref, terms, cfg.dtype, grads[0], grads[1],
                                       *ref.masked_weight_grads(mask),
                                       grads[2] if bias is not None else None)


def filter_op(cfg, ctx, gen, rng, base, view, weight, bias):
    """The registered operator on a packed weight, or on hand-made CSR (unsorted columns,
    duplicates that must sum, explicit zeros that are kept taps)."""
    row_ptr, col_idx, values = tsc.pack_sparse_filter(weight)
    check_pack(ctx, weight, row_ptr, col_idx, values)
    op_name = "sparse_filter_conv2d"
    extra = 1
    if cfg.entry == "op_handmade":
        row_ptr, col_idx, values = handmade_csr(weight, cfg.csr_edits, rng)
        op_name += "[hand-made CSR]"
        ctx.note("hand-made filter CSR: " + "+".join(cfg.csr_edits))
        extra = 4  # a tap may be summed from up to four entries
    weight64, abs_weight64 = dense_weights(row_ptr, col_idx, values, weight.shape)
    padding = op_padding(cfg)
    conv = functional_conv(cfg, padding)
    args = (list(weight.shape),)
    geometry = (list(cfg.stride), padding, list(cfg.dilation), cfg.groups)

    def call(x, values_, bias_, method):
        return library.OPS.sparse_filter_conv2d(x, row_ptr.to(x.device), col_idx.to(x.device),
                                                values_, *args, bias_, *geometry, method)

    if reference_raises(lambda: conv(view(base.double()), weight64, None)):
        expect_errors_everywhere(ctx, op_name, lambda device, method: call(
            view(base.to(device)), values.to(device), None, method))
        return
    ref = filter_reference(conv, base, view, weight64, bias, cfg.dtype, gen, cfg.backward,
                           abs_weight64)
    terms = filter_terms(cfg, ref.out.shape, extra)
    expected_values = gather_kept(ref.grad_weight, row_ptr, col_idx) if cfg.backward else None
    for device in devices():
        for method in FILTER_METHODS[device]:
            label = f"{device}:{method}"
            leaves = [leaf(t, device, cfg.backward) for t in (base, values, bias)]
            with ctx.attempt(op_name, label, "forward") as a:
                out = call(view(leaves[0]), leaves[1], leaves[2], method)
                a.compare("output", out, ref.out, ref.out_mag, terms.out, cfg.dtype)
            if not a.failed and cfg.backward:
                with ctx.attempt(op_name, label, "backward") as a:
                    wanted = [t for t in leaves if t is not None]
                    grads = torch.autograd.grad(out, wanted, ref.grad_out.to(device))
                    check_filter_gradients(
                        a, ref, terms, cfg.dtype, grads[0], grads[1], expected_values,
                        gather_kept(ref.grad_weight_mag, row_ptr, col_idx),
                        grads[2] if bias is not None else None)
            if cfg.mutate:
                check_mutated_values(ctx, cfg, op_name, label, conv, base, view, bias,
                                     row_ptr, col_idx, values.to(device), weight.shape,
                                     lambda v: call(view(base.to(device)), v,
                                                    None if bias is None else bias.to(device),
                                                    method), terms)
