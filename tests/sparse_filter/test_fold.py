"""fold_batchnorm and sparsify(fold_batchnorm=True): eval-mode batch norm folded into the
convolution before it, against the unfolded model."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_sparse_conv as tsc
from torch_sparse_conv.sparse_filter import fold_batchnorm


def with_statistics(model):
    """Random running statistics and affine parameters in every batch norm; eval mode."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen))
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.randn(module.num_features, generator=gen))
                module.bias.data.copy_(torch.randn(module.num_features, generator=gen))
    return model.eval()


def pruned(conv, amount=0.9):
    prune.l1_unstructured(conv, "weight", amount=amount)
    prune.remove(conv, "weight")
    return conv


class Residual(nn.Module):
    """The first conv's output feeds its batch norm and the skip: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4, affine=False)

    def forward(self, x):
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


def test_folds_conv_then_batchnorm_and_keeps_the_pattern():
    model = with_statistics(nn.Sequential(pruned(nn.Conv2d(3, 8, 3, padding=1)),
                                          nn.BatchNorm2d(8), nn.ReLU(),
                                          pruned(nn.Conv2d(8, 5, 3, bias=False)),
                                          nn.BatchNorm2d(5)))
    x = torch.randn(2, 3, 10, 11)
    expected = model(x)
    zeros = [(m.weight == 0).clone() for m in model if isinstance(m, nn.Conv2d)]
    assert fold_batchnorm(model) == [("0", "1"), ("3", "4")]
    assert isinstance(model[1], nn.Identity) and isinstance(model[4], nn.Identity)
    assert model[3].bias is not None
    for conv, zero in zip([model[0], model[3]], zeros):
        assert torch.equal(conv.weight == 0, zero)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_leaves_shared_outputs_training_mode_and_pruning_hooks_alone():
    model = with_statistics(Residual())
    x = torch.randn(2, 4, 6, 6)
    expected = model(x)
    assert fold_batchnorm(model) == [("conv2", "bn2")]  # conv's output is used twice
    assert isinstance(model.bn, nn.BatchNorm2d)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)

    training = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(training) == []
    hooked = with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    prune.l1_unstructured(hooked[0], "weight", amount=0.5)  # weight computed by a hook
    assert fold_batchnorm(hooked) == []


def test_sparsify_folds_first_and_reports_it():
    model = with_statistics(nn.Sequential(pruned(nn.Conv2d(3, 8, 3, padding=1)),
                                          nn.BatchNorm2d(8), nn.ReLU(),
                                          pruned(nn.Conv2d(8, 8, 3, padding=1)),
                                          nn.BatchNorm2d(8)))
    x = torch.randn(8, 3, 12, 12)
    expected = model(x)
    plain = tsc.sparsify(copy.deepcopy(model), return_report=True)[1]
    assert plain.folded == []
    converted, report = tsc.sparsify(model, fold_batchnorm=True, return_report=True)
    assert report.folded == [("0", "1"), ("3", "4")]
    assert report.converted == ["0", "3"]
    assert isinstance(converted[0], tsc.SparseConv2d)
    torch.testing.assert_close(converted(x), expected, rtol=1e-4, atol=1e-4)


def test_untraceable_model_raises_naming_it():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return x

    with pytest.raises(RuntimeError, match="cannot trace Branchy"):
        fold_batchnorm(Branchy().eval())
    with pytest.raises(TypeError, match="must be an nn.Module"):
        fold_batchnorm("model")
