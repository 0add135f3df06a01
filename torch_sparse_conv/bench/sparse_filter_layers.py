"""Sparse-filter conv2d on the rest of ResNet-50's layers: the per-layer cells of
bench/sparse_filter.py (same contenders, checks, interleaved rounds, GFLOP/s and DeepSparse
peer) on other layer kinds and batches. Three suites:

  sparse-filter-batch1   the 3x3 stride-1 layers (64@56, 128@28, 256@14, 512@7) at batch 1,
                         over the same sparsity sweep as sparse-filter's batch 8
  sparse-filter-1x1      the eight distinct 1x1 stride-1 layers of the bottlenecks (256->64
                         @56, 64->256 @56, 512->128 @28, 128->512 @28, 1024->256 @14,
                         256->1024 @14, 2048->512 @7, 512->2048 @7), batch 8, 90 % and 95 %
  sparse-filter-stride2  the 3x3 stride-2 convolutions of torchvision's ResNet-50 v1.5 (each
                         stage's first block, conv2: 128@56->28, 256@28->14, 512@14->7),
                         batch 8, 90 % and 95 %

Shapes as torchvision.models.resnet50 has them (checked with forward hooks on a 224x224
input). The eight 1x1 layers are the ones repeated through the stages; four 1x1 shapes that
occur once each, in a stage's first block (64->64 @56, 256->128 @56, 512->256 @28,
1024->512 @14), the stem's 7x7 and the 1x1 stride-2 downsampling convolutions are timed only
inside the whole model (suite resnet50).
"""
import inspect
from typing import Callable, Dict, List, Optional

from . import sparse_filter

SPARSITIES = [0.9, 0.95]

RESNET50_1X1 = [dict(in_channels=i, out_channels=o, kernel=1, stride=1, size=s)
                for i, o, s in [(256, 64, 56), (64, 256, 56), (512, 128, 28), (128, 512, 28),
                                (1024, 256, 14), (256, 1024, 14), (2048, 512, 7),
                                (512, 2048, 7)]]
RESNET50_3X3_STRIDE2 = [dict(in_channels=c, out_channels=c, kernel=3, stride=2, size=s)
                        for c, s in [(128, 56), (256, 28), (512, 14)]]


class LayerSuite:
    """One named suite with the interface bench/report.py and __main__.py expect of a suite
    module (default_config, cells, run, describe, summarize, markdown, losses, a docstring
    whose first paragraph describes it); everything but the config is sparse_filter's."""

    PIN_HEAP = True

    def __init__(self, name: str, title: str, doc: str, layers: Callable[[bool], List],
                 batch: int, sparsities: Callable[[bool], List[float]]):
        self.name, self.title = name, title
        self._layers, self._batch, self._sparsities = layers, batch, sparsities
        self.__doc__ = (inspect.cleandoc(doc) + "\n\n"
                        + (sparse_filter.__doc__ or "").split("\n\n", 1)[1])

    def default_config(self, quick: bool, device: str, batch: Optional[int] = None,
                       rounds: Optional[int] = None) -> Dict:
        """What to run; ``batch`` overrides the suite's batch."""
        return dict(layers=self._layers(quick), sparsities=self._sparsities(quick),
                    batch=batch or self._batch, rounds=rounds or (5 if quick else 15),
                    methods=sparse_filter.OUR_METHODS, deepsparse=device == "cpu")

    cells = staticmethod(sparse_filter.cells)
    run = staticmethod(sparse_filter.run)
    describe = staticmethod(sparse_filter.describe)
    summarize = staticmethod(sparse_filter.summarize)
    markdown = staticmethod(sparse_filter.markdown)
    losses = staticmethod(sparse_filter.losses)

    def sweeps_sparsity(self, config: Dict) -> bool:
        """Whether a plot per layer against sparsity makes sense (three or more)."""
        return len(config.get("sparsities", [])) >= 3


BATCH1 = LayerSuite(
    "sparse-filter-batch1", "Sparse-filter conv2d at batch 1",
    """Sparse-filter conv2d at batch 1: ResNet-50's 3x3 stride-1 layers (64@56, 128@28,
    256@14, 512@7) over the sparsity sweep of the batch-8 suite, one image per call as in
    latency-bound inference.""",
    lambda quick: sparse_filter.RESNET50_3X3[:2] if quick else sparse_filter.RESNET50_3X3, 1,
    lambda quick: [0.9, 0.95] if quick else sparse_filter.SPARSITIES)
ONE_BY_ONE = LayerSuite(
    "sparse-filter-1x1", "Sparse-filter conv2d on ResNet-50's 1x1 layers",
    """Sparse-filter conv2d on ResNet-50's 1x1 layers: the eight distinct 1x1 stride-1
    convolutions of its bottleneck blocks (256->64 and 64->256 @56, 512->128 and 128->512
    @28, 1024->256 and 256->1024 @14, 2048->512 and 512->2048 @7), batch 8, 90 % and 95 %
    sparsity.""",
    lambda quick: RESNET50_1X1[:2] if quick else RESNET50_1X1, 8, lambda quick: SPARSITIES)
STRIDE2 = LayerSuite(
    "sparse-filter-stride2", "Sparse-filter conv2d on ResNet-50's stride-2 3x3 layers",
    """Sparse-filter conv2d on ResNet-50's stride-2 3x3 layers: torchvision's v1.5 puts the
    stride in each stage's first 3x3 (128@56->28, 256@28->14, 512@14->7), batch 8, 90 % and
    95 % sparsity.""",
    lambda quick: RESNET50_3X3_STRIDE2[:1] if quick else RESNET50_3X3_STRIDE2, 8,
    lambda quick: SPARSITIES)

SUITES = {suite.name: suite for suite in (BATCH1, ONE_BY_ONE, STRIDE2)}
