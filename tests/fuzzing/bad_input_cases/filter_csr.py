"""filter_csr cases: a packed sparse filter (row_ptr, col_idx, values) corrupted before one of
its entry points (the op, its backward, autograd through it, sparse_conv2d_packed)."""
from .case import Case
from .setups import FILTER_OP_CALL, filler_for, filter_geometry, filter_setup, fraction_index, join

BAD_COLUMNS_WIDE = ("taps", "taps + 1", "10**12", "-1", "-5", "-10**12", "2**62", "2**63 - 1",
                    "-2**63")


def filter_target(rng, weight_expr="weight"):
    """(name, code before the corruption, run, check) for one entry point of the packed
    filter."""
    check = (f"check_filter(out, x, {weight_expr}, bias, stride, padding, dilation, groups)")
    target = rng.choice(["op", "op", "backward", "autograd", "packed"])
    if target == "op":
        return target, "", FILTER_OP_CALL, check
    if target == "packed":
        return target, "", ("out = tsc.sparse_conv2d_packed(x, row_ptr, col_idx, values, "
                            "weight_size, bias, stride, padding, [0, 0], dilation, groups, "
                            "method)"), check
    if target == "autograd":
        run = join("if values.is_floating_point():",
                   "    values = values.detach().requires_grad_()",
                   FILTER_OP_CALL, "out.sum().backward()")
        return target, "", run, join(check, "assert values.grad.shape == values.shape")
    before = ("grad_output = torch.randn_like(filter_reference(x, weight, None, stride, "
              "padding, dilation, groups)).to(x.dtype)")
    run = ("grads = OPS._sparse_filter_conv2d_backward(grad_output, x, row_ptr, col_idx, "
           "values, weight_size, stride, padding, dilation, groups, [True, True, True])")
    check = (f"check_filter_backward(grads, grad_output, x, {weight_expr}, row_ptr, col_idx, "
             "stride, padding, dilation, groups)")
    return target, before, run, check


def filter_corruption(rng, g):
    """(kind, code, expect, names) corrupting the packed filter of filter_setup."""
    other_float = "float64" if g["dtype"] == "float32" else "float32"
    column = fraction_index(rng, "col_idx.numel()")
    tensors = ["row_ptr", "col_idx", "values", "x"] + (["bias"] if g["bias"] else [])

    def argument(tensor):  # how messages name it: x is the op's "input"
        return {"x": "input"}.get(tensor, tensor)

    kinds = {
        "col_out_of_range": lambda: (
            f"col_idx[{column}] = {rng.choice(BAD_COLUMNS_WIDE)}", "raise", ("col_idx",)),
        "row_ptr_first": lambda: (
            f"row_ptr[0] = {rng.choice(['1', '-1', '10**12', 'col_idx.numel()'])}", "raise",
            ("row_ptr",)),
        "row_ptr_negative": lambda: (
            f"row_ptr[max(1, {fraction_index(rng, 'row_ptr.numel()')})] = "
            f"{rng.choice(['-1', '-5', '-10**12'])}", "raise", ("row_ptr",)),
        "row_ptr_decreasing": lambda: (
            join(f"i = {fraction_index(rng, 'row_ptr.numel() - 1')}",
                 f"row_ptr[i] = row_ptr[i + 1] + {rng.choice([1, 2, 10**12])}"),
            "raise", ("row_ptr",)),
        "row_ptr_last": lambda: (
            f"row_ptr[-1] = col_idx.numel() + {rng.choice(['1', '-1', '10**12', '-10**12'])}",
            "raise", ("row_ptr",)),
        "row_ptr_huge": lambda: (
            f"row_ptr[{fraction_index(rng, 'row_ptr.numel()')}] = 2**62", "raise",
            ("row_ptr",)),
        "row_ptr_length": lambda: (
            rng.choice(["row_ptr = row_ptr[:-1]", "row_ptr = torch.cat([row_ptr, row_ptr[-1:]])",
                        "row_ptr = row_ptr[:0]", "row_ptr = row_ptr[:1]"]),
            "raise", ("row_ptr",)),
        "values_length": lambda: (
            rng.choice(["values = values[:-1]", "values = torch.cat([values, values[:1]])",
                        "values = values[:0]"]), "raise", ("values", "col_idx")),
        "col_length": lambda: (
            rng.choice(["col_idx = col_idx[:-1]", "col_idx = torch.cat([col_idx, col_idx[:1]])"]),
            "raise", ("col_idx", "values", "row_ptr")),
        "nnz_extended": lambda: (
            join("col_idx = torch.cat([col_idx, torch.zeros(1, dtype=torch.int64)])",
                 "values = torch.cat([values, values[:1]])"), "raise", ("row_ptr", "col_idx")),
        "index_dtype": lambda: (lambda t: (
            f"{t} = {t}.to(torch.{rng.choice(['int32', 'int16', 'uint8', 'float32', 'float64', 'bool', 'complex64'])})",  # noqa: E501
            "raise", (t,)))(rng.choice(["row_ptr", "col_idx"])),
        "values_dtype": lambda: (
            f"values = values.to(torch.{rng.choice([other_float, 'float16', 'bfloat16', 'int64', 'int32', 'bool', 'complex64'])})",  # noqa: E501
            "raise", ("values",)),
        "device_meta": lambda: (lambda t: (
            f"{t} = {t}.to('meta')", "raise", (argument(t),)))(rng.choice(tensors)),
        "noncontiguous_valid": lambda: (lambda t: (
            f"{t} = strided_copy({t}, {filler_for(t)})", "either", (argument(t),)))(
            rng.choice(tensors)),
        "noncontiguous_corrupt": lambda: (
            rng.choice([join("col_idx = strided_copy(col_idx, 0)",
                             f"col_idx[{column}] = {rng.choice(BAD_COLUMNS_WIDE)}"),
                        join("row_ptr = strided_copy(row_ptr, 0)",
                             "row_ptr[-1] = col_idx.numel() + 1")]),
            "raise", ("col_idx", "row_ptr")),
        "index_2d": lambda: (lambda t: (
            f"{t} = {t}.{rng.choice(['unsqueeze(0)', 'reshape(-1, 1)'])}", "raise", (t,)))(
            rng.choice(["row_ptr", "col_idx", "values"])),
        "expanded_row_ptr": lambda: (
            "row_ptr = torch.zeros((), dtype=torch.int64).expand(row_ptr.numel())", "raise",
            ("row_ptr",)),
    }
    kind = rng.choice(sorted(kinds))
    code, expect, names = kinds[kind]()
    return kind, code, expect, names


def filter_pattern_change(rng):
    """(kind, code) of a packed filter whose CSR stays well-formed but whose rows hold
    duplicate or unsorted columns: the convolution of what unpack_sparse_filter makes of it
    (duplicates summed), or an exception naming col_idx."""
    kind = rng.choice(["duplicate_columns", "unsorted_columns", "expanded_col_idx"])
    code = {"duplicate_columns": "shuffle_rows(row_ptr, col_idx, values, duplicate=True)",
            "unsorted_columns": "shuffle_rows(row_ptr, col_idx, values, duplicate=False)",
            "expanded_col_idx": "col_idx = col_idx[:1].expand(col_idx.numel())"}[kind]
    return kind, code


def gen_filter_csr(seed, rng) -> Case:
    g = filter_geometry(rng)
    setup = filter_setup(seed, g)
    if rng.random() < 0.15:
        kind, code = filter_pattern_change(rng)
        target, before, run, check = filter_target(
            rng, "dense_from_csr(row_ptr, col_idx, values.detach(), weight_size)")
        return Case(seed, "filter_csr", f"{target}/{kind}", join(setup, before, code), run,
                    "either", ("col_idx",), check)
    kind, code, expect, names = filter_corruption(rng, g)
    target, before, run, check = filter_target(rng)
    if kind == "device_meta" and rng.random() < 0.3 and target in ("op", "packed"):
        kind, expect, names = "all_meta", "either", ("input",)
        code = join("x, row_ptr, col_idx, values = (t.to('meta') for t in "
                    "(x, row_ptr, col_idx, values))",
                    "bias = None if bias is None else bias.to('meta')")
        check = "check_meta_result(out, x, weight, stride, padding, dilation, groups)"
    if target == "backward" and names == ("bias",):
        expect = "correct"  # the backward takes no bias: changing it changes nothing
    return Case(seed, "filter_csr", f"{target}/{kind}", join(setup, before, code), run,
                expect, names, check if expect != "raise" else "")
