"""SparseConv2d, converted from an nn.Conv2d (any padding_mode) and built by its own
constructor, against nn.Conv2d's forward with the weight the layer's CSR stands for."""
import numpy as np
import torch

import torch_sparse_conv as tsc

from .filter_cases import FILTER_METHODS
from .filter_reference import (check_filter_gradients, check_mutated_values, dense_from_csr,
                               filter_reference, filter_terms, gather_kept, module_conv,
                               reference_raises)
from .library import devices, leaf


def filter_module(cfg, ctx, gen, rng, base, view, weight, bias):
    """SparseConv2d.from_dense of an nn.Conv2d (any padding_mode), against nn.Conv2d."""
    conv = module_conv(cfg)
    mask = weight != 0
    if reference_raises(lambda: conv(view(base.double()), weight.double(), None)):
        ctx.expect_error("SparseConv2d.from_dense", "cpu:auto",
                         lambda: make_layer(cfg, weight, bias, mask, gen)(view(base)))
        return
    layer = make_layer(cfg, weight, bias, mask, gen)
    with ctx.attempt("SparseConv2d.from_dense", "-", "pattern") as a:
        a.expect(torch.equal(dense_from_csr(layer.row_ptr, layer.col_idx, layer.values,
                                            weight.shape), weight.double()),
                 "the layer's kept values are not the masked weight")
    run_module_methods(cfg, ctx, gen, "SparseConv2d.from_dense", layer, conv, base, view, bias)


def make_layer(cfg, weight, bias, mask, gen):
    source = torch.nn.Conv2d(cfg.in_channels, cfg.out_channels, cfg.kernel, cfg.stride,
                             cfg.padding, cfg.dilation, cfg.groups, cfg.bias, cfg.padding_mode,
                             dtype=cfg.dtype)
    with torch.no_grad():
        # from a mask: the conv holds the full weight, the mask prunes it (weight stays where
        # it is nonzero; pruned taps get random values the mask must drop)
        noise = torch.randn(weight.shape, dtype=torch.float64, generator=gen).to(cfg.dtype)
        source.weight.copy_(weight + (~mask) * noise if cfg.from_mask else weight)
        if bias is not None:
            source.bias.copy_(bias)
    return tsc.SparseConv2d.from_dense(source, mask=mask if cfg.from_mask else None)


def run_module_methods(cfg, ctx, gen, op_name, layer, conv, base, view, bias):
    weight64 = dense_from_csr(layer.row_ptr, layer.col_idx, layer.values, layer.weight_size)
    layer_bias = None if layer.bias is None else layer.bias.detach()
    ref = filter_reference(conv, base, view, weight64, layer_bias, cfg.dtype, gen,
                           cfg.backward)
    terms = filter_terms(cfg, ref.out.shape)
    for device in devices():
        layer = layer.to(device)
        for method in FILTER_METHODS[device]:
            layer.method, label = method, f"{device}:{method}"
            x = leaf(base, device, cfg.backward)
            with ctx.attempt(op_name, label, "forward") as a:
                out = layer(view(x))
                a.compare("output", out, ref.out, ref.out_mag, terms.out, cfg.dtype)
            if not a.failed and cfg.backward:
                with ctx.attempt(op_name, label, "backward") as a:
                    wanted = [x, layer.values] + ([layer.bias] if layer.bias is not None else [])
                    grads = torch.autograd.grad(out, wanted, ref.grad_out.to(device))
                    check_filter_gradients(
                        a, ref, terms, cfg.dtype, grads[0], grads[1],
                        gather_kept(ref.grad_weight, layer.row_ptr, layer.col_idx),
                        gather_kept(ref.grad_weight_mag, layer.row_ptr, layer.col_idx),
                        grads[2] if layer.bias is not None else None)
            if cfg.mutate:
                def call(values, layer=layer):
                    layer.values.data.copy_(values)
                    return layer(view(base.to(device)))
                original = layer.values.detach().clone()
                check_mutated_values(ctx, cfg, op_name, label, conv, base, view, layer_bias,
                                     layer.row_ptr.cpu(), layer.col_idx.cpu(), original,
                                     layer.weight_size, call, terms)
                layer.values.data.copy_(original)


def filter_module_init(cfg, ctx, gen, rng, base, view, weight, bias):
    """SparseConv2d's own constructor: its pattern and initial values are whatever it drew;
    the output must be nn.Conv2d's with the weight its CSR stands for."""
    conv = module_conv(cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        try:
            layer = tsc.SparseConv2d(cfg.in_channels, cfg.out_channels, cfg.kernel,
                                     cfg.stride, cfg.padding, cfg.dilation, cfg.groups,
                                     cfg.bias, cfg.padding_mode, cfg.density, cfg.pattern,
                                     dtype=cfg.dtype)
        except ValueError:
            layer = None
    weight64_size = (cfg.out_channels, cfg.in_channels // cfg.groups) + tuple(cfg.kernel)
    if reference_raises(lambda: conv(view(base.double()), torch.zeros(weight64_size,
                                                                      dtype=torch.float64),
                                     None)):
        ctx.expect_error("SparseConv2d()", "cpu:auto", lambda: layer(view(base)))
        return
    with ctx.attempt("SparseConv2d()", "-", "pattern") as a:
        a.expect(layer is not None, "the constructor rejected a valid configuration")
        taps = int(np.prod(weight64_size))
        a.expect(layer.nnz == max(1, round(cfg.density * taps)),
                 f"kept {layer.nnz} taps, expected {max(1, round(cfg.density * taps))}")
    if layer is not None:
        run_module_methods(cfg, ctx, gen, "SparseConv2d()", layer, conv, base, view, None)
