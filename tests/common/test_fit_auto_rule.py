"""scripts/fit_auto_rule.py, which fits method.h's `auto` constants: on cells made from known
constants by the rule's own form, the fit gives those constants back."""
import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "fit_auto_rule.py"


@pytest.fixture(scope="module")
def rule():
    spec = importlib.util.spec_from_file_location("fit_auto_rule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KNOWN = dict(models={"lanes": {2048: (0.86, 0.22), 512: (0.85, 0.17), 128: (0.59, 0.13),
                               0: (0.42, 0.12)},
                     "one-sample": {2048: (0.46, 0.16), 512: (0.41, 0.20), 128: (0.35, 0.05),
                                    0: (0.46, 0.30)},
                     "pointwise": {512: (0.95, 0.17), 0: (0.51, 0.23)}},
             stride={"lanes": (0.35, 0.975), "one-sample": (0.0, 0.925)},
             dense=(0.66, 14.5, 0.6))


def _cells(rule, constants):
    rows = []
    for name, _, _, k, size, stride in rule.LAYERS:
        for batch in rule.BATCHES:
            for density in rule.DENSITIES:
                r = dict(layer=name, k=k, size=size, stride=stride, batch=batch,
                         density=density, onednn_ms=1.0)
                r.update(rule.classify(r))
                r["direct"], r["dense"] = rule.predicted(constants, r)
                r["auto"] = min(r["direct"], r["dense"])
                rows.append(r)
    return rows


def test_fit_recovers_the_constants_the_cells_were_made_from(rule):
    rows = _cells(rule, KNOWN)
    fitted = rule.fit([dict(r) for r in rows])
    for kind, runs in KNOWN["models"].items():
        for run, (eff, overhead) in runs.items():
            assert fitted["models"][kind][run] == pytest.approx((eff, overhead), rel=1e-6)
    for kind, (per_phase, eff) in KNOWN["stride"].items():
        assert fitted["stride"][kind] == pytest.approx((per_phase, eff), abs=1e-6)
    assert fitted["dense"] == pytest.approx(KNOWN["dense"], rel=1e-6)
    # With exact predictions a pick is off only inside the 5 % the rule asks of direct.
    costs = [cost for cost, _, _ in rule.regret(fitted, rows)]
    assert max(costs) <= 1.05 + 1e-9 and sum(c > 1 for c in costs) < len(costs) // 10


def test_classes_follow_method_cpp(rule):
    """1x1 planes of a whole tile in place, batch 8 in the lanes, batch 1 one sample at a time;
    runs by the wide length (out_h - 1) x phase_w + out_w."""
    cell = lambda k, size, stride, batch: rule.classify(
        dict(k=k, size=size, stride=stride, batch=batch))
    assert cell(1, 14, 1, 8)["kind"] == "pointwise" and cell(1, 7, 1, 8)["kind"] == "lanes"
    assert cell(3, 56, 1, 8) == dict(kind="lanes", run=2048, outputs=8 * 56 * 56, phases=0)
    assert cell(3, 28, 1, 1) == dict(kind="one-sample", run=512, outputs=28 * 28, phases=0)
    assert cell(3, 14, 2, 8) == dict(kind="lanes", run=0, outputs=8 * 7 * 7, phases=3)
    assert cell(3, 28, 1, 6)["kind"] == "one-sample"  # a quarter of the lanes would be empty


def test_scores_the_rules_the_extension_was_built_with(rule):
    """The script reads method.h's rules from the extension (no copy of its own to keep in
    step): every rule, in the fit's form, each layout's runs those the cells are classed by,
    and this processor's rule among them."""
    from torch_sparse_conv import _C
    rules = rule.compiled_rules()
    assert set(rules) == {"zen4", "intel-xeon"} and _C._cpu_auto_rule() in rules
    rows = _cells(rule, KNOWN)
    for constants in rules.values():
        assert set(constants) == set(KNOWN)
        for kind, runs in constants["models"].items():
            assert sorted(runs, reverse=True) == rule.RUN_CLASSES[kind]
            assert all(0 < eff <= 2 and 0 <= overhead < 1 for eff, overhead in runs.values())
        assert set(constants["stride"]) == set(KNOWN["stride"]) and len(constants["dense"]) == 3
        assert len(rule.regret(constants, rows)) == len(rows)
    assert rules["zen4"]["models"]["lanes"][2048] != rules["intel-xeon"]["models"]["lanes"][2048]
