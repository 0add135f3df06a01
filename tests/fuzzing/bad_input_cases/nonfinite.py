"""nonfinite cases: NaN and inf written into inputs and weights; the result is compared with
the documented NaN/inf rules (expect 'measure'), and the oracles count what they saw."""
from .case import Case
from .setups import (CHECK_OP, CHECK_SCIPY_OP, CHECK_TENSOR, FILTER_OP_CALL, KEPT_T, MODULE_CALL,
                     PRECOMPUTED_OP_CALL, SCIPY_OP_CALL, TOEPLITZ_OP_CALL, compat_setup,
                     filter_geometry, filter_setup, fraction_index, join, toeplitz_geometry,
                     toeplitz_setup)

NONFINITE = ("float('nan')", "float('inf')", "float('-inf')")


def inject(rng, tensor_expr: str, count: int) -> str:
    """Statements writing NaN/inf into `count` positions of a flattened tensor."""
    return join(*(f"{tensor_expr}.view(-1)[{fraction_index(rng, f'{tensor_expr}.numel()')}] = "
                  f"{rng.choice(NONFINITE)}" for _ in range(count)))


def gen_nonfinite(seed, rng) -> Case:
    path = rng.choice(["filter", "filter", "toeplitz_op", "toeplitz_precomputed", "toeplitz_module",
                       "scipy_op", "compat"])
    where = rng.choice(["input", "weights", "both"])
    count = rng.randint(1, 3)
    if path == "filter":
        g = filter_geometry(rng)
        setup = join(filter_setup(seed, g),
                     inject(rng, "x", count) if where != "weights" else "",
                     inject(rng, "values", count) if where != "input" else "")
        run = FILTER_OP_CALL
        check = ("filter_nonfinite_report(out, x, row_ptr, col_idx, values, weight_size, bias, "
                 "stride, padding, dilation, groups, method)")
        return Case(seed, "nonfinite", f"filter/{g['method']}/{where}", setup, run, "measure",
                    (), check)
    g = toeplitz_geometry(rng)
    extras = join(
        inject(rng, "values", count) if where != "weights" else "",
        "values[0] = 0.0" if rng.random() < 0.3 else "",  # a stored zero (0 * inf is NaN)
        inject(rng, "kernel", count) if where != "input" else "",
        "kernel.view(-1)[0] = 0.0" if rng.random() < 0.3 else "")  # a kernel zero tap
    if path == "compat":
        method = rng.choice(["direct", "precomputed"])
        setup = join(compat_setup(seed, g, method),
                     "values, kernel = torch.from_numpy(x.data), torch.from_numpy(k)",
                     extras, f"conv = Toeplitz_convolution2d(x_shape=x_shape, k=k, mode=mode, "
                             f"method={method!r})")
        return Case(seed, "nonfinite", f"compat/{method}/{where}", setup, "y = conv(x)",
                    "measure", (), by_the_rules("check_compat(y, x.indptr, x.indices, x.data, "
                                                "k, x_shape, mode)"))
    setup = join(toeplitz_setup(seed, g), extras)
    run, check, kind = {
        "toeplitz_op": (TOEPLITZ_OP_CALL, CHECK_OP, f"toeplitz_op/{g['method']}/{where}"),
        "toeplitz_precomputed": (join(KEPT_T, PRECOMPUTED_OP_CALL), CHECK_OP,
                                 f"toeplitz_precomputed_op/{where}"),
        "toeplitz_module": (MODULE_CALL, CHECK_TENSOR, f"toeplitz_module/{g['method']}/{where}"),
        "scipy_op": (SCIPY_OP_CALL, CHECK_SCIPY_OP, f"scipy_op/{where}"),
    }[path]
    return Case(seed, "nonfinite", kind, setup, run, "measure", (), by_the_rules(check))


def by_the_rules(check: str) -> str:
    """A check call that also compares non-finite numbers with the documented rules."""
    return check[:-1] + ", rule=True)"
