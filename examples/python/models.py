"""A small CNN used by the demo (examples/python/demo.py) and the sparsify tests:
ResNet-like 3x3 stages."""
import torch
from torch import nn
from torch.nn.utils import prune


class SmallCNN(nn.Module):
    """Four 3x3 conv stages (64 -> 256 channels) with ReLU, a stride-2 downsample between
    stages, global pooling and a linear head: the layer shapes of a ResNet-18 trunk."""

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        channels = width
        for stage in range(3):
            out = width * 2 ** (stage + 1) if stage < 2 else channels
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def prune_convs(model: nn.Module, amount: float, skip_first: bool = True) -> nn.Module:
    """L1-unstructured pruning of every Conv2d (the first, 3-channel one skipped by default)
    with torch.nn.utils.prune, made permanent."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for index, conv in enumerate(convs):
        if skip_first and index == 0:
            continue
        prune.l1_unstructured(conv, "weight", amount=amount)
        prune.remove(conv, "weight")
    return model
