"""sparsify on every kind of nn.Conv2d: plain, pruned, parametrized, weight-normed, user
subclasses and lazy layers; the layer filter and the report of what it did and why."""
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

import torch_sparse_conv as tsc


class _KeepMask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask


class _PlainSubclass(nn.Conv2d):
    """Only adds an attribute: computes nn.Conv2d's convolution."""
    tag = "mine"


class _OwnForward(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def _sparse_conv(cls=nn.Conv2d, seed=0, channels=(6, 8)):
    torch.manual_seed(seed)
    conv = cls(channels[0], channels[1], 3, padding=1)
    with torch.no_grad():
        # About 80 % pruned, so no output channel is all zeros (weight norm divides by a
        # channel's norm: 0 / 0 would make that channel NaN).
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.8)
    return conv


def test_every_kind_of_conv2d_is_converted_or_skipped_with_a_reason():
    parametrized = _sparse_conv(seed=1)
    parametrize.register_parametrization(
        parametrized, "weight", _KeepMask((torch.rand_like(parametrized.weight) > 0.9).float()))
    normed = torch.nn.utils.parametrizations.weight_norm(_sparse_conv(seed=2))
    old_normed = torch.nn.utils.weight_norm(_sparse_conv(seed=3))
    pruned = _sparse_conv(seed=4)
    prune.random_unstructured(pruned, "weight", amount=0.95)
    model = nn.Sequential(parametrized, nn.ReLU(), normed, nn.ReLU(), old_normed,
                          _sparse_conv(_PlainSubclass, seed=5), _sparse_conv(_OwnForward, seed=6),
                          pruned, nn.LazyConv2d(4, 3), nn.Conv2d(8, 8, 1))
    x = torch.randn(2, 6, 8, 8)
    layers = [0, 2, 4, 5, 7]  # each a 6 -> 8 channel layer, run alone
    with torch.no_grad():  # before: old-style weight norm cannot be deep-copied
        expected = [model[i](x) for i in layers]
    model, report = tsc.sparsify(model, min_sparsity=0.5, return_report=True)
    kinds = [type(module).__name__ for module in model]
    assert kinds[:8] == ["SparseConv2d", "ReLU", "SparseConv2d", "ReLU", "SparseConv2d",
                         "SparseConv2d", "_OwnForward", "SparseConv2d"]
    assert isinstance(model[8], nn.LazyConv2d) and type(model[9]) is nn.Conv2d
    with torch.no_grad():
        for i, out in zip(layers, expected):
            torch.testing.assert_close(model[i](x), out, rtol=1e-5, atol=1e-5)
    assert report.converted == ["0", "2", "4", "5", "7"]
    why = {d.name: d.reason for d in report}
    assert "parametrized weight" in why["0"] and "parametrized weight" in why["2"]
    assert "hooks" in why["4"] and "hooks" in why["7"]
    assert "_PlainSubclass" in why["5"]
    assert "_OwnForward overrides nn.Conv2d's forward" == why["6"]
    assert "not initialised" in why["8"]
    assert "below min_sparsity=0.5" in why["9"]
    table = str(report)
    assert table.splitlines()[0].split()[:4] == ["layer", "shape", "sparsity", "converted"]
    assert len(table.splitlines()) == 1 + len(report) == 9


def test_layer_filter_keeps_layers_dense_by_name():
    model = nn.Sequential(_sparse_conv(seed=7), nn.Sequential(_sparse_conv(seed=8,
                                                                           channels=(8, 6))))
    model, report = tsc.sparsify(model, min_sparsity=0.5, return_report=True,
                                 layer_filter=lambda name, module: name != "1.0")
    assert isinstance(model[0], tsc.SparseConv2d) and type(model[1][0]) is nn.Conv2d
    assert [d.reason for d in report if d.name == "1.0"] == ["excluded by layer_filter"]


def test_global_pruning_reports_every_layer():
    """Global pruning leaves some layers below the threshold: the report names each one
    with its sparsity instead of converting a silent subset."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 32, 3))
    prune.global_unstructured([(m, "weight") for m in model], prune.L1Unstructured, amount=0.9)
    _, report = tsc.sparsify(model, return_report=True)
    assert [d.name for d in report] == ["0", "1", "2"]
    for decision in report:
        assert decision.converted == (decision.sparsity >= tsc.sparse_filter.DEFAULT_MIN_SPARSITY)
        assert decision.converted or "below min_sparsity" in decision.reason
