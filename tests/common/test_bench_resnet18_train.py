"""The whole-model training suite (bench/resnet18_train.py) on small images: every contender
trains from the same state, the losses and the pruned taps are checked (and the checks refuse
a wrong contender), the warm-up leaves no trace, the report says what ran. No speed is
asserted. Skips without torchvision (a benchmark dependency)."""
import copy

import pytest
import torch

from torch_sparse_conv import SparseConv2d
from torch_sparse_conv.bench import machine, report, resnet18_train, resnet50

pytestmark = pytest.mark.skipif(resnet50.unavailable() is not None,
                                reason="torchvision not installed")


def small_config(**changes):
    """ResNet-18 on 64x64 images at batch 8: small, yet every BatchNorm normalises over at
    least 32 values, so float32 runs stay within the loss tolerance of each other (at batch 2
    on 32x32 images the last BatchNorms see 2 values each and rounding flips their sign)."""
    config = dict(resnet18_train.default_config(True, "cpu"), image=64, batch=8, steps=2,
                  warmup=1, sparsities=[0.9], methods=["auto", "no-such-method"])
    config.update(changes)
    return config


def test_suite_trains_every_contender_and_checks_it():
    config = small_config()
    rows = resnet18_train.run(config)
    assert len(rows) == resnet18_train.cells(config) == 1
    row = rows[0]
    assert row["convs"] == 20 and 0.09 < row["density"] < 0.11
    # compile is off when quick
    assert set(row["seconds"]) == {"dense", "dense/channels-last", "ours:auto"}
    assert "ours:no-such-method" in row["unavailable"]
    for name in row["seconds"]:
        assert len(row["step_seconds"][name]) == len(row["losses"][name]) == 2
        assert row["pruned_taps_nonzero"][name] == 0
        assert row["loss_max_rel_error"][name] <= config["loss_rtol"]
    assert row["loss_max_rel_error"]["dense"] == 0.0
    # the first step starts from the same weights: the losses differ by rounding only
    assert row["losses"]["ours:auto"][0] == pytest.approx(row["losses"]["dense"][0], rel=1e-5)
    forward = 2.0 * resnet50.conv_work(resnet18_train.pruned_model(config, 0.9).eval(),
                                       64)["macs"] * 8
    assert row["useful_gflop"] == pytest.approx(3 * forward / 1e9)
    result = dict(suite=resnet18_train.NAME, device="cpu", config=config, rows=rows,
                  machine=dict(peak=machine.cpu_peak(2, measure=False)))
    text = report.section(result)
    assert text.startswith("## " + resnet18_train.TITLE)
    assert "20 convolutions pruned" in text and "pruned taps not zero after the steps: 0" in text
    assert resnet18_train.summarize(rows)["geomean"]["dense"] == pytest.approx(1.0)
    assert isinstance(resnet18_train.losses(result), list)


def test_compiled_baseline_restores_after_its_warm_up():
    """The compiled model (here with the "eager" backend: dynamo's tracing and the
    OptimizedModule wrapper without Inductor's minutes of compiling) is restored in place
    after its warm-up, so its timed steps start where the others' do."""
    config = small_config(compile=True, compile_backend="eager", methods=[])
    row = resnet18_train.run(config)[0]
    assert set(row["seconds"]) == {"dense", "dense/channels-last", "dense/compiled"}
    assert row["losses"]["dense/compiled"] == pytest.approx(row["losses"]["dense"], rel=1e-5)
    assert row["pruned_taps_nonzero"]["dense/compiled"] == 0


def test_warm_up_leaves_no_trace():
    """Momentum, BatchNorm statistics and weights are restored after the warm-up: a trainer
    warmed up for two steps then trains exactly as a fresh copy."""
    config = small_config()
    model = resnet18_train.pruned_model(config, 0.9)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 64, 64, generator=generator),
                torch.randint(0, 1000, (8,), generator=generator)) for _ in range(2)]
    warmed = resnet18_train.train({"dense": resnet18_train.Trainer(copy.deepcopy(model), config)},
                                  batches, warmup=2)
    fresh = resnet18_train.train({"dense": resnet18_train.Trainer(copy.deepcopy(model), config)},
                                 batches, warmup=0)
    assert warmed["losses"] == fresh["losses"]
    assert set(warmed["first_step_seconds"]) == {"dense"} and not fresh["first_step_seconds"]


def test_checks_refuse_a_regrown_tap_and_a_diverging_loss():
    config = small_config()
    model = resnet18_train.pruned_model(config, 0.9)
    masks = resnet18_train._masks(model)
    assert len(masks) == 20
    trainers, _ = resnet18_train._trainers(model, config, 20)
    assert isinstance(trainers["ours:auto"].model.conv1, SparseConv2d)
    assert resnet18_train._check_pruned_taps(trainers, masks) == {
        "dense": 0, "dense/channels-last": 0, "ours:auto": 0}
    # a dense model without its mask whose pruned tap has grown back
    import torch.nn.utils.prune as prune
    regrown = copy.deepcopy(model)
    for module in regrown.modules():
        if isinstance(module, torch.nn.Conv2d):
            prune.remove(module, "weight")
    pruned_tap = (masks["layer1.0.conv1"] == 0).nonzero()[0].tolist()
    with torch.no_grad():
        regrown.layer1[0].conv1.weight[tuple(pruned_tap)] = 0.5
    trainers["regrown"] = resnet18_train.Trainer(regrown, config)
    with pytest.raises(AssertionError, match="'regrown': 1 pruned taps"):
        resnet18_train._check_pruned_taps(trainers, masks)
    losses = {"dense": [2.0, 1.5], "close": [2.0, 1.5 * (1 + 1e-4)], "off": [2.0, 1.6],
              "off-at-first": [2.0 * (1 + 1e-4), 1.5]}
    with pytest.raises(AssertionError, match="'off': losses"):
        resnet18_train._check_losses(losses, 1e-5, 1e-3)
    del losses["off"]
    with pytest.raises(AssertionError, match="'off-at-first': losses"):
        resnet18_train._check_losses(losses, 1e-5, 1e-3)
    del losses["off-at-first"]
    assert resnet18_train._check_losses(losses, 1e-5, 1e-3)["close"] == pytest.approx(1e-4)


def test_losses_name_the_missed_target_and_a_faster_baseline():
    row = dict(sparsity=0.9, speedup={"dense": 1.0, "dense/compiled": 1.9, "ours:auto": 1.5})
    words = resnet18_train.losses(dict(rows=[row]))
    assert any("slower than dense/compiled" in w for w in words)
    assert any("short of the 2x target" in w for w in words)
    row["speedup"] = {"dense": 1.0, "dense/compiled": 1.1, "ours:auto": 2.2}
    assert resnet18_train.losses(dict(rows=[row])) == []
