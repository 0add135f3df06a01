"""data_writes cases for ToeplitzConv2d, the sparse input and the compat class: kernel writes
through .data or numpy (followed by the next call, in every grad mode, gradients included),
unusable kernels (named, then working again once restored), and index corruption of x."""
from .case import Case
from .setups import (CONTEXTS, compat_setup, fraction_index, join, toeplitz_geometry,
                     toeplitz_setup, under)


def toeplitz_module_setup(seed, g, trainable) -> str:
    """toeplitz_setup's x and kernel, and a ToeplitzConv2d `m` holding the kernel."""
    return join(toeplitz_setup(seed, g),
                f"m = tsc.ToeplitzConv2d(image_shape, kernel, mode, method, "
                f"trainable={trainable})")


def kernel_write(rng, g) -> str:
    """A valid write to m's kernel (values, or a new shape that still suits the mode)."""
    kh2, kw2 = rng.randint(1, 4), rng.randint(1, 4)
    if g["mode"] == "valid":
        kh2, kw2 = min(kh2, g["h"]), min(kw2, g["w"])
    return rng.choice([
        f"m.kernel.data.mul_({rng.choice([0.5, -2.0])})",
        "m.kernel.detach().numpy()[...] = np.arange(m.kernel.numel()).reshape(m.kernel.shape)",
        f"m.kernel.data[{fraction_index(rng, 'm.kernel.shape[0]')}, "
        f"{fraction_index(rng, 'm.kernel.shape[1]')}] = 7.0",
        "m.kernel.data.zero_()",
        "with torch.no_grad():\n    m.kernel.add_(1.0)",
        f"m.kernel.data = torch.randn({kh2}, {kw2}, dtype=m.kernel.dtype)",
        "m.kernel.data = m.kernel.data * 2",
        "m.kernel.data = m.kernel.data.t().contiguous().t() + 1",
    ])


CHECK_MODULE_OUTPUT = ("check_toeplitz_tensor({y}, x.crow_indices(), x.col_indices(), "
                       "x.values(), m.kernel, image_shape, mode)")
# Random weights of the output pixels (a scalar loss whose kernel gradient is checked).
OUTPUT_WEIGHTS = join(
    "(out_h, out_w), _ = toeplitz_geometry(image_shape, tuple(m.kernel.shape), mode)",
    "weights = torch.randn(batch, out_h * out_w, dtype=torch.float64)")
CHECK_KERNEL_GRAD = ("assert_close(m.kernel.grad, toeplitz_module_reference_grad(x.to_dense(), "
                     "m.kernel, image_shape, mode, weights), m.kernel.dtype, 'kernel grad')")


def checked_call(context: str, y: str) -> str:
    """`y = m(x)` under a grad mode, then y compared with the reference."""
    return join(under(context, f"{y} = m(x)"), CHECK_MODULE_OUTPUT.format(y=y))


def data_toeplitz_corrupt_before_backward(seed, rng) -> Case:
    """The sparse input's indices corrupted in place between forward and backward."""
    g = toeplitz_geometry(rng, dtype="float64")
    entry = fraction_index(rng, "x.col_indices().numel()")
    # through numpy: no version bump (an in-place write is caught by autograd's own check)
    code = rng.choice([f"x.col_indices().numpy()[{entry}] = "
                       f"{rng.choice(['pixels', '10**12', '-1'])}",
                       "x.crow_indices().numpy()[-1] += 1", "x.crow_indices().numpy()[0] = 1",
                       f"x.col_indices()[{entry}] = -1"])
    setup = join(toeplitz_module_setup(seed, g, True), "y = m(x)", code)
    return Case(seed, "data_writes", f"toeplitz_corrupt_before_backward/{g['method']}", setup,
                "y.to_dense().sum().backward()", "raise", ("x", "crow", "col", "inplace"))


def data_toeplitz_kernel(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    g["method"] = rng.choice(["precomputed", "precomputed", "direct", "auto"])
    ctx1, ctx2 = rng.choice(CONTEXTS), rng.choice(CONTEXTS)
    writes = [kernel_write(rng, g) for _ in range(rng.randint(1, 2))]
    setup = join(toeplitz_module_setup(seed, g, rng.random() < 0.7), checked_call(ctx1, "y1"),
                 *[join(w, checked_call(rng.choice(CONTEXTS), "y_mid")) for w in writes[:-1]],
                 writes[-1])
    return Case(seed, "data_writes", f"toeplitz_kernel/{g['method']}", setup,
                under(ctx2, "y2 = m(x)"), "correct", (),
                CHECK_MODULE_OUTPUT.format(y="y2"))


def data_toeplitz_bad_kernel(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    g["method"] = rng.choice(["precomputed", "direct", "auto"])
    ctx1, ctx2 = rng.choice(CONTEXTS), rng.choice(CONTEXTS)
    code = rng.choice([
        "m.kernel.data = m.kernel.data.to(torch.float64 if m.kernel.dtype == torch.float32 "
        "else torch.float32)",
        "replace_kernel(m, m.kernel.detach().to('meta'))",
        "m.kernel.data = m.kernel.data[0]",
        "m.kernel.data = m.kernel.data[:0]",
        "m.kernel.data = m.kernel.data.to(torch.float16)",
    ])
    setup = join(toeplitz_module_setup(seed, g, rng.random() < 0.7), checked_call(ctx1, "y1"),
                 "saved_kernel = m.kernel.detach().clone()", code)
    after = join("replace_kernel(m, saved_kernel.clone())", checked_call(ctx2, "y3"))
    return Case(seed, "data_writes", f"toeplitz_bad_kernel/{g['method']}", setup,
                under(ctx2, "y2 = m(x)"), "raise", ("kernel",), after=after)


def data_toeplitz_x(seed, rng) -> Case:
    """Writes into the sparse input's own arrays between calls."""
    g = toeplitz_geometry(rng)
    ctx = rng.choice(CONTEXTS)
    entry = fraction_index(rng, "x.col_indices().numel()")
    write, expect = rng.choice([
        ("x.values().mul_(-3.0)", "correct"),
        (f"x.values()[{entry}] = 0.0", "correct"),
        (f"x.col_indices()[{entry}] = {rng.choice(['pixels', '10**12', '-1'])}", "raise"),
        ("x.crow_indices()[-1] += 1", "raise"),
        ("x.crow_indices()[0] = 1", "raise"),
    ])
    setup = join(toeplitz_module_setup(seed, g, True), checked_call(ctx, "y1"), write)
    return Case(seed, "data_writes", f"toeplitz_x/{g['method']}/{expect}", setup,
                under(ctx, "y2 = m(x)"), expect, ("x",),
                CHECK_MODULE_OUTPUT.format(y="y2") if expect == "correct" else "")


def data_toeplitz_grad(seed, rng) -> Case:
    g = toeplitz_geometry(rng, dtype="float64")
    ctx1 = rng.choice(CONTEXTS)
    write = kernel_write(rng, g)
    # `del y1` frees the first graph: a live graph keeps the kernel's AccumulateGrad with the
    # old shape, which torch itself then rejects after a shape change through .data
    setup = join(toeplitz_module_setup(seed, g, True), checked_call(ctx1, "y1"), "del y1",
                 write, "m.kernel.grad = None", OUTPUT_WEIGHTS)
    if rng.random() < 0.3:
        run = ("assert torch.autograd.gradcheck(lambda k: OPS.toeplitz_conv2d(crow, col, values,"
               " k, image_shape, mode, method)[2], (m.kernel.detach().clone()"
               ".requires_grad_(),))")
        return Case(seed, "data_writes", f"toeplitz_gradcheck/{g['method']}", setup, run,
                    "correct", ())
    run = join("y2 = m(x)", "(y2.to_dense() * weights).sum().backward()")
    check = join(CHECK_MODULE_OUTPUT.format(y="y2"), CHECK_KERNEL_GRAD)
    return Case(seed, "data_writes", f"toeplitz_grad/{g['method']}/{ctx1.split('(')[0]}", setup,
                run, "correct", (), check)


def data_toeplitz_mode_switch(seed, rng) -> Case:
    """A kept T built in one grad mode, reused in another with the kernel unchanged:
    T made under inference_mode is an inference tensor, which autograd must not save."""
    g = toeplitz_geometry(rng, dtype="float64")
    g["method"] = rng.choice(["precomputed", "precomputed", "auto"])
    first, second = rng.choice([("torch.inference_mode()", "contextlib.nullcontext()"),
                                ("contextlib.nullcontext()", "torch.inference_mode()"),
                                ("torch.no_grad()", "contextlib.nullcontext()")])
    setup = join(toeplitz_module_setup(seed, g, True), checked_call(first, "y1"), OUTPUT_WEIGHTS)
    run = join(under(second, "y2 = m(x)"),
               "    if y2.requires_grad:", "        (y2.to_dense() * weights).sum().backward()")
    check = join(CHECK_MODULE_OUTPUT.format(y="y2"),
                 "if m.kernel.grad is not None:", "    " + CHECK_KERNEL_GRAD)
    return Case(seed, "data_writes", f"toeplitz_mode_switch/{g['method']}/"
                                     f"{first.split('(')[0]}->{second.split('(')[0]}",
                setup, run, "correct", (), check)


def data_compat_kernel(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    method = rng.choice(["direct", "precomputed"])
    write, kernel_after = rng.choice([
        ("conv._kernel.mul_(-2.0)", "conv._kernel.numpy()"),  # documented: followed
        ("k[...] = 0.0", "k_before"),  # the caller's array was copied: not followed
        ("conv.k[...] = 5.0", "k_before"),  # documented: later edits of self.k do not reach it
    ])
    setup = join(compat_setup(seed, g, method), "k_before = k.copy()", "y1 = conv(x)",
                 "check_compat(y1, x.indptr, x.indices, x.data, k, x_shape, mode)", write)
    return Case(seed, "data_writes", f"compat_kernel/{method}/{write.split('[')[0]}", setup,
                "y2 = conv(x)", "correct", (),
                f"check_compat(y2, x.indptr, x.indices, x.data, {kernel_after}, x_shape, mode)")
