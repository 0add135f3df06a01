"""The operator's epilogue (residual=None, relu=False), SparseConv2d's call taking it, and
fuse_epilogues / sparsify(fuse_epilogues=True): bit for bit what the separate ops compute."""
import copy

import pytest
import torch
from torch import nn

import torch_sparse_conv as tsc
from torch_sparse_conv.sparse_filter import fuse_epilogues

op = torch.ops.torch_sparse_conv.sparse_filter_conv2d

INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64,
            torch.float16: torch.int16, torch.bfloat16: torch.int16}


def same_bits(a, b):
    """Equal bits (the sign of zero included), NaN at the same places, and the same memory
    format. (A NaN's payload is not: ATen's bfloat16 add gives 0xFFFF, its scalar
    conversion 0x7FC0.)"""
    if a.shape != b.shape or a.dtype != b.dtype or a.is_contiguous() != b.is_contiguous():
        return False
    nan = a.isnan()
    if not torch.equal(nan, b.isnan()):
        return False
    a, b = a.masked_fill(nan, 0), b.masked_fill(nan, 0)
    return torch.equal(a.contiguous().view(INT_VIEW[a.dtype]),
                       b.contiguous().view(INT_VIEW[b.dtype]))


def packed(c_out, c_in, k, dtype, density=0.15, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in, k, k, generator=gen).to(dtype)
    weight = weight * (torch.rand(weight.shape, generator=gen) < density).to(dtype)
    return weight, torch.ops.torch_sparse_conv.pack_sparse_filter(weight)


# (batch, C_in, C_out, size, kernel, stride, padding, channels_last): each reaches another
# path of 'direct': the lanes (full and partial blocks, channels-last), the 1x1 kernel in
# place (whole vectors and not, one chunk of input channels and several), a strided 1x1, the
# one-sample layout (small batches).
CASES = [
    (8, 16, 24, 14, 3, 1, 1, False),
    (9, 16, 8, 10, 3, 1, 1, False),
    (8, 16, 24, 14, 3, 1, 1, True),
    (8, 32, 48, 16, 1, 1, 0, False),
    (4, 32, 48, 14, 1, 1, 0, False),
    (2, 160, 24, 14, 1, 1, 0, False),  # several chunks of input channels before the epilogue
    (4, 16, 200, 14, 1, 1, 0, False),  # 30 taps a channel: the input copied to whole vectors
    (8, 32, 16, 14, 1, 2, 0, False),
    (16, 24, 20, 33, 1, 2, 0, False),  # a strided 1x1 whose tasks pick their own pixels
    (1, 8, 12, 11, 3, 1, 1, False),
    (1, 8, 12, 40, 3, 1, 1, False),  # rows of whole vectors and a tail (store_run)
    (3, 8, 12, 20, 3, 2, 1, False),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["direct", "auto", "unfold", "dense"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_epilogue_has_the_bits_of_the_separate_ops(case, method, dtype):
    n, c_in, c_out, size, k, stride, pad, channels_last = case
    weight, (row_ptr, col_idx, values) = packed(c_out, c_in, k, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, c_in, size, size, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(c_out, generator=gen).to(dtype)
    args = (x, row_ptr, col_idx, values, list(weight.shape), bias, [stride] * 2, [pad] * 2,
            [1, 1], 1, method)
    conv = op(*args)
    residual = torch.randn(conv.shape, generator=gen).to(dtype)
    residual.view(-1)[::7] = float("nan")  # ReLU keeps NaN
    residual.view(-1)[1::7] = -conv.reshape(-1)[1::7]  # sums of exactly zero
    for with_residual in (False, True):
        for relu in (False, True):
            expected = conv.clone()
            if with_residual:
                expected += residual
            if relu:
                expected = torch.relu(expected)
            got = op(*args, residual if with_residual else None, relu)
            assert same_bits(got, expected), (with_residual, relu)


def test_residual_in_another_memory_format():
    weight, (row_ptr, col_idx, values) = packed(24, 16, 3, torch.float32)
    x = torch.randn(8, 16, 14, 14).contiguous(memory_format=torch.channels_last)
    args = (x, row_ptr, col_idx, values, list(weight.shape), None, [1, 1], [1, 1], [1, 1], 1,
            "direct")
    residual = torch.randn(8, 24, 14, 14)  # NCHW beside a channels-last output
    got = op(*args, residual, True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert same_bits(got, torch.relu(op(*args) + residual))


def test_bad_residual_is_named():
    weight, (row_ptr, col_idx, values) = packed(6, 4, 3, torch.float32)
    x = torch.randn(2, 4, 7, 7)
    args = (x, row_ptr, col_idx, values, [6, 4, 3, 3], None, [1, 1], [1, 1], [1, 1], 1, "auto")
    with pytest.raises(RuntimeError, match=r"residual must have the output's shape \(2, 6, 7, 7\)"):
        op(*args, torch.randn(2, 6, 7, 1), False)
    with pytest.raises(RuntimeError, match="residual .*Double.* must have input's dtype"):
        op(*args, torch.randn(2, 6, 7, 7, dtype=torch.float64), False)
    with pytest.raises(TypeError, match="residual must be a dense"):
        op(*args, torch.randn(2, 6, 7, 7).to_sparse(), False)


@pytest.mark.parametrize("method", ["direct", "unfold", "dense"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_with_epilogue(method, relu):
    weight, (row_ptr, col_idx, values) = packed(6, 4, 3, torch.float64, density=0.4)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    values = values.clone().requires_grad_()
    bias = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    residual = torch.randn(2, 6, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)

    def f(x, values, bias, residual):
        return op(x, row_ptr, col_idx, values, [6, 4, 3, 3], bias, [1, 1], [1, 1], [1, 1], 1,
                  method, residual, relu)
    assert torch.autograd.gradcheck(f, (x, values, bias, residual))
    # Without a bias the residual is the fifth tensor argument, not the sixth.
    assert torch.autograd.gradcheck(lambda x, v, r: f(x, v, None, r), (x, values, residual))
    # The residual's gradient alone (it is also computed when only it is wanted).
    assert torch.autograd.gradcheck(lambda r: f(x.detach(), values.detach(), None, r),
                                    (residual,))
    # Without a residual: the ReLU's gradient alone.
    assert torch.autograd.gradcheck(lambda x, v: f(x, v, None, None), (x, values))


def test_opcheck_with_epilogue():
    weight, (row_ptr, col_idx, values) = packed(6, 4, 3, torch.float32, density=0.4)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    residual = torch.randn(2, 6, 7, 7, requires_grad=True)
    torch.library.opcheck(op, (x, row_ptr, col_idx, values.requires_grad_(), [6, 4, 3, 3], None,
                               [1, 1], [1, 1], [1, 1], 1, "auto", residual, True))


def test_module_call_takes_the_epilogue_or_adds_after():
    conv = tsc.SparseConv2d(4, 6, 3, padding=1, density=0.3)
    x = torch.randn(2, 4, 9, 9)
    plain = conv(x)
    residual = torch.randn(2, 6, 9, 9)
    assert same_bits(conv(x, residual, True), torch.relu(plain + residual))
    assert same_bits(conv(x, relu=True), torch.relu(plain))
    # A residual the kernel does not take (broadcast, promoted) is added as + would.
    channelwise = torch.randn(6, 1, 1)
    assert same_bits(conv(x, channelwise, True), torch.relu(plain + channelwise))
    wider = residual.double()
    assert same_bits(conv(x, wider), plain + wider)
    # Unbatched input with an unbatched residual, and with a batched one (which broadcasts
    # the result back to 4-D, as + does), and a number.
    assert same_bits(conv(x[0], residual[0], True), torch.relu(conv(x[0]) + residual[0]))
    assert same_bits(conv(x[0], residual[:1], True), torch.relu(conv(x[0]) + residual[:1]))
    assert same_bits(conv(x, 2.5, True), torch.relu(plain + 2.5))
    scripted = torch.jit.script(conv)
    assert same_bits(scripted(x, residual, True), torch.relu(plain + residual))


class Block(nn.Module):
    """A bottleneck's data flow: one ReLU module used three times, the residual added in
    place, a convolution on the shortcut, a folded batch norm (Identity) before the add."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 6, 1, bias=False)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 12, 1)
        self.bn3 = nn.Identity()
        self.downsample = nn.Conv2d(8, 12, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.conv1(x))
        out = torch.relu(self.conv2(out))
        out = self.bn3(self.conv3(out))
        out += self.downsample(x)
        return self.relu(out)


class NotFusable(nn.Module):
    """Adds and ReLUs that must stay: y.add_(conv(x)) changes y (torch.fx records `y +=`
    as `y + ...`, a new tensor, which may fuse); a conv output used twice; an add with
    alpha."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = x * 2
        y.add_(self.a(x))
        twice = self.b(y)
        z = torch.relu(twice) + twice
        return torch.add(self.c(z), z, alpha=2) + y


class InPlaceBetween(nn.Module):
    """Adds that must stay: the input changed in place between the convolution and the add
    (moving the convolution to the add would read the changed input), a convolution's output
    added to itself, and a number added."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = x * 1
        out = self.a(x)
        identity = self.relu(x)  # changes x in place
        twice = self.b(out + identity)
        return self.c(twice + twice) + x.size(1)


def sparse(model):
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            with torch.no_grad():
                module.weight.mul_(torch.rand(module.weight.shape) < 0.2)
    return tsc.sparsify(model, min_sparsity=0.5)


def test_fuse_epilogues_of_a_block_has_the_same_bits_and_gradients():
    torch.manual_seed(0)
    model = sparse(Block())
    fused, names = fuse_epilogues(model)
    assert sorted(names) == ["conv1: relu", "conv2: relu", "conv3: relu", "conv3: residual"]
    assert isinstance(fused, torch.fx.GraphModule)
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    expected, got = model(x), fused(x)
    assert same_bits(got, expected)
    names = [name for name, _ in model.named_parameters()]
    fused_parameters = dict(fused.named_parameters())
    grads = torch.autograd.grad(expected.sum(), [x] + list(model.parameters()))
    fused_grads = torch.autograd.grad(got.sum(),
                                      [x] + [fused_parameters[name] for name in names])
    for a, b in zip(grads, fused_grads):
        assert same_bits(a, b)
    # TorchScript of the rewritten graph.
    assert same_bits(torch.jit.script(fused)(x), expected)


def test_fuse_epilogues_leaves_what_it_must():
    torch.manual_seed(0)
    model = sparse(NotFusable())
    fused, names = fuse_epilogues(model)
    assert names == []
    x = torch.randn(2, 4, 6, 6)
    assert same_bits(fused(x), model(x))


def test_fuse_epilogues_keeps_the_order_of_in_place_changes():
    torch.manual_seed(0)
    model = sparse(InPlaceBetween())
    fused, names = fuse_epilogues(model)
    # Only the number's add fuses (added after the call); a's and b's adds stay.
    assert names == ["c: residual"]
    x = torch.randn(2, 4, 6, 6)
    assert same_bits(fused(x), model(x))


def test_sparsify_fuse_epilogues_on_a_resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            with torch.no_grad():
                module.weight.mul_(torch.rand(module.weight.shape) < 0.1)
    unfused = tsc.sparsify(copy.deepcopy(model), fold_batchnorm=True)
    fused, report = tsc.sparsify(copy.deepcopy(model), fold_batchnorm=True,
                                 fuse_epilogues=True, return_report=True)
    # Eight blocks: a residual each; ReLUs after the stem, each block's first conv and sum.
    assert sum(name.endswith("residual") for name in report.fused) == 8
    assert sum(name.endswith("relu") for name in report.fused) == 17
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert same_bits(fused(x), unfused(x))
