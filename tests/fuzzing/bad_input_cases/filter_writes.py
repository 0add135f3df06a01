"""data_writes cases for SparseConv2d and the functional API: writes through .data, numpy,
in-place ops, load_state_dict and buffer swaps between calls. A write of valid numbers must be
followed by the next call; a corrupt pattern must be named; after restoring it the layer must
work again."""
from .case import Case
from .setups import (CONTEXTS, FN_CALL, FN_CHECK, filter_geometry, filter_setup, fraction_index,
                     join, under)


def module_geometry(rng, small=False, dtype=None):
    g = filter_geometry(rng, small=small, dtype=dtype)
    if rng.random() < 0.15:  # 'same' needs stride 1
        g["stride"], g["padding_same"] = [1, 1], True
    return g


def module_setup(seed, g) -> str:
    """A pruned nn.Conv2d `conv`, the SparseConv2d `layer` made from it, and an input x."""
    padding = g["padding"] if g.get("padding_same") is None else "'same'"
    return join(
        f"torch.manual_seed({seed})",
        f"conv = torch.nn.Conv2d({g['c_in']}, {g['c_out']}, ({g['kh']}, {g['kw']}), "
        f"stride={g['stride']}, padding={padding}, dilation={g['dilation']}, "
        f"groups={g['groups']}, bias={g['bias']}, dtype=torch.{g['dtype']})",
        f"prune_conv(conv, {g['density']})",
        f"layer = tsc.SparseConv2d.from_dense(conv, method={g['method']!r})",
        f"x = torch.randn({g['n']}, {g['c_in']}, {g['h']}, {g['w']}, dtype=torch.{g['dtype']})",
        "taps = layer.weight_size[1] * layer.weight_size[2] * layer.weight_size[3]")


def value_write(rng) -> str:
    """A write to the kept values, bias or input that must be followed by the next call."""
    entry = fraction_index(rng, "layer.values.numel()")
    return rng.choice([
        f"layer.values.data.mul_({rng.choice([0.5, -2.0, 3.0])})",
        "layer.values.detach().numpy()[:] = np.linspace(-2, 2, layer.values.numel())",
        f"layer.values.data[{entry}] = {rng.choice([3.0, -7.5, 1e-3])}",
        "layer.values.data.zero_()",
        f"layer.values.data[{entry}] = 0.0",
        "with torch.no_grad():\n    layer.values.add_(1.0)",
        "layer.values.data = layer.values.data * 2",
        "layer.values.data.copy_(torch.randn_like(layer.values))",
        "if layer.bias is not None:\n    layer.bias.data.add_(1.0)\nelse:\n"
        "    layer.values.data.mul_(0.25)",
        "x.data.mul_(-1.5)",
        "x.numpy()[...] = 1.0" if rng.random() < 0.5 else "x.data.add_(0.5)",
        "layer.to(torch.float64)\nx.data = x.data.double()",
    ])


def pattern_corruption(rng):
    """(code, names) corrupting a layer's pattern without the version counter seeing it
    (except 'in place'), or swapping a buffer's tensor for an unusable one."""
    entry = fraction_index(rng, "layer.col_idx.numel()")
    bad = rng.choice(("taps", "taps + 1", "10**12", "-1", "-5", "-2**63", "2**63 - 1"))
    how = rng.choice(["data", "numpy", "inplace", "copy"])
    column = {"data": f"layer.col_idx.data[{entry}] = {bad}",
              "numpy": f"layer.col_idx.numpy()[{entry}] = {bad}",
              "inplace": f"layer.col_idx[{entry}] = {bad}",
              "copy": f"layer.col_idx.data.copy_(torch.full_like(layer.col_idx, {bad}))"}[how]
    row = rng.choice(["[0] = 1", "[-1] = layer.col_idx.numel() + 1", "[-1] = 10**12",
                      "[-1] = layer.col_idx.numel() - 1", "[max(1, layer.row_ptr.numel() - 2)]"
                      " = -5"])
    row = {"data": f"layer.row_ptr.data{row}", "numpy": f"layer.row_ptr.numpy(){row}",
           "inplace": f"layer.row_ptr{row}", "copy": f"layer.row_ptr.data{row}"}[how]
    swaps = [("layer.col_idx.data = layer.col_idx.data[:-1]", ("col_idx", "values", "row_ptr")),
             ("layer.col_idx.data = layer.col_idx.data.int()", ("col_idx",)),
             ("layer.row_ptr.data = layer.row_ptr.data[:-1]", ("row_ptr",)),
             ("layer.row_ptr = layer.row_ptr.to('meta')", ("row_ptr",)),
             ("layer.values.data = layer.values.data[:-1]", ("values", "col_idx")),
             ("layer.values.data = layer.values.data.to(torch.float64 if layer.values.dtype == "
              "torch.float32 else torch.float32)", ("values", "input")),
             ("layer.col_idx = layer.col_idx.flip(0) * 0 + taps", ("col_idx",)),
             ("layer.col_idx.data = layer.col_idx.data.view(-1, 1)", ("col_idx",)),
             ("layer.values.data = layer.values.data.view(1, -1)", ("values",)),
             ("layer.row_ptr.data = layer.row_ptr.data.flip(0)", ("row_ptr",))]
    choice = rng.random()
    if choice < 0.45:
        return f"col_idx/{how}", column, ("col_idx",)
    if choice < 0.8:
        return f"row_ptr/{how}", row, ("row_ptr",)
    code, names = rng.choice(swaps)
    return "swap/" + code.split("=")[0].strip().split(".")[1], code, names


CHECK_LAYER = "check_module({y}, layer, conv, x)"
SAVE_LAYER = ("saved = [t.detach().clone() for t in (layer.row_ptr, layer.col_idx, "
              "layer.values)]")
RESTORE_LAYER = join("layer.row_ptr, layer.col_idx = saved[0].clone(), saved[1].clone()",
                     "layer.values.data = saved[2].clone()")


def checked_call(context: str, y: str) -> str:
    """`y = layer(x)` under a grad mode, then y compared with the dense conv's result."""
    return join(under(context, f"{y} = layer(x)"), CHECK_LAYER.format(y=y))


def data_filter_corrupt(seed, rng) -> Case:
    g = module_geometry(rng)
    ctx1, ctx2 = rng.choice(CONTEXTS), rng.choice(CONTEXTS)
    sub, code, names = pattern_corruption(rng)
    setup = join(module_setup(seed, g), checked_call(ctx1, "y1"), SAVE_LAYER, code)
    return Case(seed, "data_writes", f"filter_corrupt/{g['method']}/{sub}", setup,
                under(ctx2, "y2 = layer(x)"), "raise", names,
                after=join(RESTORE_LAYER, checked_call(ctx2, "y3")))


def data_filter_corrupt_before_backward(seed, rng) -> Case:
    """Corruption between forward and backward: autograd saved the very tensors the write
    changes (no version bump through .data or numpy), so the backward must check them."""
    g = module_geometry(rng, small=True, dtype="float64")
    entry = fraction_index(rng, "layer.col_idx.numel()")
    code, names = rng.choice([
        (f"layer.col_idx.data[{entry}] = {rng.choice(['taps', '10**12', '-1'])}", ("col_idx",)),
        (f"layer.col_idx.numpy()[{entry}] = {rng.choice(['taps', '-2**63'])}", ("col_idx",)),
        ("layer.row_ptr.data[-1] += 1", ("row_ptr",)),
        ("layer.row_ptr.numpy()[0] = 1", ("row_ptr",)),
    ])
    setup = join(module_setup(seed, g), "x.requires_grad_()", "y = layer(x)", code)
    return Case(seed, "data_writes", f"filter_corrupt_before_backward/{g['method']}", setup,
                "y.sum().backward()", "raise", names)


def data_filter_values(seed, rng) -> Case:
    g = module_geometry(rng)
    ctx1, ctx2 = rng.choice(CONTEXTS), rng.choice(CONTEXTS)
    writes = [value_write(rng) for _ in range(rng.randint(1, 2))]
    middle = join(writes[0], checked_call(rng.choice(CONTEXTS), "y_mid")
                  if len(writes) > 1 else "")
    setup = join(module_setup(seed, g), checked_call(ctx1, "y1"), middle)
    return Case(seed, "data_writes", f"filter_values/{g['method']}", setup,
                join(writes[-1] if len(writes) > 1 else "", under(ctx2, "y2 = layer(x)")),
                "correct", (), CHECK_LAYER.format(y="y2"))


def data_filter_pattern(seed, rng) -> Case:
    g = module_geometry(rng)
    ctx1, ctx2 = rng.choice(CONTEXTS), rng.choice(CONTEXTS)
    setup = join(module_setup(seed, g), checked_call(ctx1, "y1"),
                 "move_tap_keeping_rows_sorted(layer.row_ptr, layer.col_idx, layer.values, taps)")
    return Case(seed, "data_writes", f"filter_pattern/{g['method']}", setup,
                under(ctx2, "y2 = layer(x)"), "correct", (), CHECK_LAYER.format(y="y2"))


def data_filter_grad(seed, rng) -> Case:
    g = module_geometry(rng, small=True, dtype="float64")
    ctx1 = rng.choice(CONTEXTS)
    write = value_write(rng).replace("x.numpy()[...] = 1.0", "x.data.add_(0.5)")
    setup = join(module_setup(seed, g), "x.requires_grad_()",
                 "grad_out = torch.randn_like(F.conv2d(x.detach(), conv.weight.detach(), None, "
                 "conv.stride, conv.padding, conv.dilation, conv.groups))",
                 under(ctx1, "y1 = layer(x)"),
                 "if y1.requires_grad:\n    y1.backward(grad_out)",
                 "layer.zero_grad(); x.grad = None", write)
    if rng.random() < 0.3:
        run = ("assert torch.autograd.gradcheck(lambda v, xx: tsc.sparse_conv2d_packed(xx, "
               "layer.row_ptr, layer.col_idx, v, layer.weight_size, layer.bias, layer.stride, "
               "layer._padding, layer._extra_padding, layer.dilation, layer.groups, "
               "layer.method), (layer.values.detach().clone().requires_grad_(), "
               "x.detach().clone().requires_grad_()))")
        return Case(seed, "data_writes", f"filter_gradcheck/{g['method']}", setup, run,
                    "correct", ())
    return Case(seed, "data_writes", f"filter_grad/{g['method']}", setup,
                "y2 = layer(x)\ny2.backward(grad_out)", "correct", (),
                "check_module_grads(y2, layer, conv, x, grad_out)")


def data_filter_state_dict(seed, rng) -> Case:
    """load_state_dict with a corrupt pattern must make the next call raise; with another
    layer's (valid, other nnz) pattern the next call must follow it."""
    g = module_geometry(rng)
    setup = join(module_setup(seed, g), checked_call(rng.choice(CONTEXTS), "y1"),
                 "state = {k: v.clone() for k, v in layer.state_dict().items()}")
    if rng.random() < 0.6:
        bad = rng.choice(["state['col_idx'][0] = taps", "state['col_idx'][-1] = -1",
                          "state['row_ptr'][-1] += 1", "state['row_ptr'][0] = 1",
                          "state['values'] = state['values'][:-1]"])
        names = ("values", "col_idx") if "values" in bad else (
            ("col_idx",) if "col_idx" in bad else ("row_ptr",))
        return Case(seed, "data_writes", f"filter_state_dict/{g['method']}/corrupt",
                    join(setup, bad, "layer.load_state_dict(state)"), "y2 = layer(x)",
                    "raise", names)
    other = join("other_conv = torch.nn.Conv2d(conv.in_channels, conv.out_channels, "
                 "conv.kernel_size, groups=conv.groups, bias=conv.bias is not None, "
                 "dtype=conv.weight.dtype)",
                 f"prune_conv(other_conv, {rng.choice([0.1, 0.6, 1.0])})",
                 "layer.load_state_dict(tsc.SparseConv2d.from_dense(other_conv).state_dict())")
    return Case(seed, "data_writes", f"filter_state_dict/{g['method']}/other_pattern",
                join(setup, other), "y2 = layer(x)", "correct", (), CHECK_LAYER.format(y="y2"))


def data_filter_noncontiguous(seed, rng) -> Case:
    """Buffers swapped through .data for non-contiguous views of the same numbers, whose
    neighbours in memory are out of range (a kernel reading raw storage would see them)."""
    g = module_geometry(rng)
    name = rng.choice(["row_ptr", "col_idx", "values"])
    filler = "float('nan')" if name == "values" else "10**12"
    setup = join(module_setup(seed, g), checked_call(rng.choice(CONTEXTS), "y1"),
                 f"layer.{name}.data = strided_copy(layer.{name}.data, {filler})")
    return Case(seed, "data_writes", f"filter_noncontiguous/{g['method']}/{name}", setup,
                under(rng.choice(CONTEXTS), "y2 = layer(x)"), "either", (name,),
                CHECK_LAYER.format(y="y2"))


def data_functional_weight(seed, rng) -> Case:
    g = filter_geometry(rng)
    setup = join(filter_setup(seed, g), FN_CALL, FN_CHECK,
                 rng.choice(["weight.data.mul_(-2.0)", "weight.numpy()[...] = 0.0",
                             "weight.data[0].zero_()"]))
    return Case(seed, "data_writes", f"functional_weight/{g['method']}", setup, FN_CALL,
                "correct", (), FN_CHECK)
