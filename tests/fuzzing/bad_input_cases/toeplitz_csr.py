"""toeplitz_csr cases: a torch CSR batch x (its crow, col, values arrays, or the kernel)
corrupted before one of the Toeplitz entry points; for the precomputed op, a corrupted kept T;
for the backward, a corrupted output pattern."""
from .case import Case
from .setups import (CHECK_OP, CHECK_SCIPY_OP, CHECK_TENSOR, KEPT_T, MODULE_CALL,
                     PRECOMPUTED_OP_CALL, SCIPY_OP_CALL, TENSOR_CSR, TOEPLITZ_OP_CALL,
                     filler_for, fraction_index, join, toeplitz_geometry, toeplitz_setup)


def toeplitz_target(rng):
    """(name, code before the corruption, run, check, names of x's arrays)."""
    ops = ("crow", "col", "values")
    target = rng.choice(["op", "op", "precomputed_op", "backward_op", "scipy_op", "tensor_csr",
                         "module"])
    if target == "op":
        return target, "", TOEPLITZ_OP_CALL, CHECK_OP, ops
    if target == "precomputed_op":
        return target, KEPT_T, PRECOMPUTED_OP_CALL, CHECK_OP, ops
    if target == "backward_op":
        before = join("out_crow, out_col, out_values = OPS.toeplitz_conv2d(crow, col, values, "
                      "kernel, image_shape, mode, 'direct')",
                      "grad_out_values = torch.randn_like(out_values)")
        return (target, before,
                "grads = OPS._toeplitz_conv2d_backward(grad_out_values, crow, col, values, "
                "kernel, out_crow, out_col, image_shape, mode, [True, True])",
                "check_toeplitz_backward(grads, grad_out_values, crow, col, values, kernel, "
                "out_crow, out_col, image_shape, mode)", ops)
    if target == "scipy_op":
        index = rng.choice(["int32", "int64"])
        return (target, f"crow, col = crow.to(torch.{index}), col.to(torch.{index})",
                SCIPY_OP_CALL, CHECK_SCIPY_OP, ops)
    names = ("x", "crow", "col", "values")
    if target == "tensor_csr":
        return (target, "", join(TENSOR_CSR, "y = tsc.toeplitz_conv2d(xs, kernel, image_shape, "
                                             "mode, method)"), CHECK_TENSOR, names)
    return target, "", MODULE_CALL, CHECK_TENSOR, names


def toeplitz_corruption(rng, g, target, arrays):
    """(kind, code, expect, names) corrupting x's CSR arrays (or the kernel)."""
    crow_name, col_name, values_name = arrays if arrays[0] != "x" else ("x",) * 3
    narrow = target == "scipy_op"  # int32 indices may be in play: bad values must fit
    bad_columns = ["pixels", "pixels + 3", "-1", "-5"] + (
        [] if narrow else ["10**12", "-2**63", "2**63 - 1"])
    column = fraction_index(rng, "col.numel()")
    other_float = "float64" if g["dtype"] == "float32" else "float32"
    kinds = {
        "col_out_of_range": lambda: (f"col[{column}] = {rng.choice(bad_columns)}", "raise",
                                     (col_name, "col")),
        "crow_first": lambda: (f"crow[0] = {rng.choice(['1', '-1'])}", "raise",
                               (crow_name, "crow")),
        "crow_negative": lambda: (
            f"crow[max(1, {fraction_index(rng, 'crow.numel()')})] = -3", "raise",
            (crow_name, "crow")),
        "crow_decreasing": lambda: (
            join(f"i = {fraction_index(rng, 'crow.numel() - 1')}", "crow[i] = crow[i + 1] + 1"),
            "raise", (crow_name, "crow")),
        "crow_last": lambda: (
            f"crow[-1] = col.numel() + {rng.choice(['1', '-1'] + ([] if narrow else ['10**12']))}",
            "raise", (crow_name, "crow")),
        "values_length": lambda: (
            rng.choice(["values = values[:-1]", "values = torch.cat([values, values[:1]])"]),
            "raise", (values_name, "values", "col")),
        "col_length": lambda: (
            rng.choice(["col = col[:-1]", "col = torch.cat([col, col[:1]])"]), "raise",
            (col_name, "col", "values", "crow")),
        "index_dtype": lambda: (lambda t: (
            f"{t} = {t}.to(torch.{rng.choice(['int16', 'float32', 'float64', 'bool'])})",
            "raise", ({"crow": crow_name, "col": col_name}[t], t)))(rng.choice(["crow", "col"])),
        "values_dtype": lambda: (
            f"values = values.to(torch.{rng.choice([other_float, 'float16', 'bfloat16', 'int64', 'int32', 'bool', 'complex64'])})",  # noqa: E501
            "raise", (values_name, "values", "kernel")),
        "kernel_dtype": lambda: (
            f"kernel = kernel.to(torch.{rng.choice([other_float, 'float16', 'int64', 'bool', 'complex128'])})",  # noqa: E501
            "raise", ("kernel",)),
        "device_meta": lambda: (lambda t: (
            f"{t} = {t}.to('meta')", "raise", (t, "x", "kernel")))(
            rng.choice(["crow", "col", "values", "kernel"])),
        "noncontiguous_valid": lambda: (lambda t: (
            f"{t} = strided_copy({t}, {filler_for(t)})", "either", (t, "x")))(
            rng.choice(["crow", "col", "values"])),
        "noncontiguous_kernel": lambda: ("kernel = kernel.t().contiguous().t()", "either",
                                         ("kernel",)),
        "noncontiguous_corrupt": lambda: (
            join("col = strided_copy(col, 0)", f"col[{column}] = {rng.choice(bad_columns)}"),
            "raise", (col_name, "col")),
        "index_2d": lambda: (lambda t: (f"{t} = {t}.unsqueeze(0)", "raise", (t, "x")))(
            rng.choice(["crow", "col", "values"])),
        "unsorted_or_duplicate": lambda: (
            f"shuffle_rows(crow, col, values, duplicate={rng.random() < 0.5})", "correct", ()),
    }
    if target in ("tensor_csr", "module"):
        kinds["index_int32"] = lambda: ("crow, col = crow.int(), col.int()", "correct", ())
        index_dtype = kinds["index_dtype"]  # torch's constructor takes float indices: converted
        kinds["index_dtype"] = lambda: index_dtype()[:1] + ("either",) + index_dtype()[2:]
        del kinds["device_meta"], kinds["index_2d"]  # torch's own constructor decides
    else:
        kinds["crow_empty"] = lambda: ("crow = crow[:0]", "raise", ("crow",))
    if target == "scipy_op":
        kinds["index_dtype"] = lambda: (lambda t: (
            f"{t} = {t}.to(torch.{rng.choice(['int16', 'float64', 'bool'])})", "raise",
            (t, "x")))(rng.choice(["crow", "col"]))
    kind = rng.choice(sorted(kinds))
    code, expect, names = kinds[kind]()
    return kind, code, expect, names


def matrix_corruption(rng):
    """(kind, code, expect, names) corrupting the kept T given to toeplitz_conv2d_precomputed.
    T is documented as "checked where read": a corrupt row that no stored entry of x reads
    may pass, so those cases accept a correct result too."""
    entry = fraction_index(rng, "T[1].numel()")
    kinds = {
        "t_col_out_of_range": (join("T = [t.clone() for t in T]", f"T[1][{entry}] = "
                                    f"{rng.choice(['out_pixels', '-1', '10**12', '-2**63'])}"),
                               "either", ("t_col",)),
        "t_crow_last": (join("T = [t.clone() for t in T]", "T[0][-1] += 1"), "either",
                        ("t_crow",)),
        "t_crow_first": (join("T = [t.clone() for t in T]", "T[0][0] = 1"), "either",
                         ("t_crow",)),
        "t_crow_decreasing": (join("T = [t.clone() for t in T]",
                                   f"i = {fraction_index(rng, 'T[0].numel() - 1')}",
                                   "T[0][i] = T[0][i + 1] + 1"), "either", ("t_crow",)),
        "t_crow_length": ("T = [T[0][:-1], T[1], T[2]]", "raise", ("t_crow",)),
        "t_values_length": ("T = [T[0], T[1], T[2][:-1]]", "raise", ("t_values", "t_col")),
        "t_values_dtype": ("T = [T[0], T[1], T[2].to(torch.float16)]", "raise", ("t_values",)),
        "t_col_dtype": ("T = [T[0], T[1].int(), T[2]]", "raise", ("t_col",)),
        "t_meta": ("T = list(T)\nT[{0}] = T[{0}].to('meta')".format(rng.randint(0, 2)), "raise",
                   ("t_crow", "t_col", "t_values")),
        "t_other_image_shape": ("T = OPS.toeplitz_matrix(kernel, [image_shape[0] + 1, "
                                "image_shape[1]], mode)", "raise", ("t_crow",)),
    }
    kind = rng.choice(sorted(kinds))
    return (kind,) + kinds[kind]


def output_pattern_corruption(rng):
    """(kind, code, expect, names) corrupting the output pattern given to the backward."""
    entry = fraction_index(rng, "out_col.numel()")
    kinds = {
        "out_col_out_of_range": (f"out_col[{entry}] = "
                                 f"{rng.choice(['out_pixels', '-1', '10**12', '-2**63'])}",
                                 "raise", ("out_col",)),
        "out_crow_last": ("out_crow[-1] += 1", "raise", ("out_crow",)),
        "out_crow_first": ("out_crow[0] = 1", "raise", ("out_crow",)),
        "out_crow_decreasing": (join(f"i = {fraction_index(rng, 'out_crow.numel() - 1')}",
                                     "out_crow[i] = out_crow[i + 1] + 1"), "raise",
                                ("out_crow",)),
        "out_crow_length": ("out_crow = out_crow[:-1]", "raise", ("out_crow",)),
        "grad_length": ("grad_out_values = grad_out_values[:-1]", "raise",
                        ("grad_out_values",)),
        "grad_dtype": ("grad_out_values = grad_out_values.to(torch.float16)", "raise",
                       ("grad_out_values",)),
        "out_col_uncovered_pixel": (f"out_col[{entry}] = (out_col[{entry}] + 1) % out_pixels",
                                    "either", ("out_col",)),
    }
    kind = rng.choice(sorted(kinds))
    return (kind,) + kinds[kind]


def gen_toeplitz_csr(seed, rng) -> Case:
    g = toeplitz_geometry(rng)
    target, before, run, check, arrays = toeplitz_target(rng)
    if target == "precomputed_op" and rng.random() < 0.4:
        kind, code, expect, names = matrix_corruption(rng)
    elif target == "backward_op" and rng.random() < 0.4:
        kind, code, expect, names = output_pattern_corruption(rng)
    else:
        kind, code, expect, names = toeplitz_corruption(rng, g, target, arrays)
    return Case(seed, "toeplitz_csr", f"{target}/{kind}",
                join(toeplitz_setup(seed, g), before, code), run, expect, names,
                check if expect != "raise" else "")
