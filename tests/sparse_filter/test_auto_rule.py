"""The CPU `auto` rule's constants per processor (csrc/sparse_filter/method.h): the set is
picked by CPUID's vendor, TSC_AUTO_RULE names one, and the two sets choose differently where
they were fitted to (256@14 at 50 %, batch 8: `direct` on Zen 4, `dense` on the Intel Xeon),
so `auto` returns the bits of the method its rule picks."""
import platform

import pytest
import torch

from torch_sparse_conv._library import cpu_auto_rule

from testing import run_python, run_script

# The vendor is read and the lanes layout (whose constants decide the case below) is compiled
# only for x86-64 (GCC builds, as setup.py's); TSC_CPU_ISA is cleared where the lanes are needed.
x86_lanes = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64")
    or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="needs an x86-64 CPU with AVX2")


def _vendor():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@x86_lanes
def test_rule_follows_the_vendor():
    vendor = _vendor()
    if vendor is None:
        pytest.skip("no /proc/cpuinfo vendor_id here")
    # TSC_AUTO_RULE may be set by whoever runs the tests; this process's answer is then that.
    expected = {"GenuineIntel": "intel-xeon"}.get(vendor, "zen4")
    run_script(f"""
from torch_sparse_conv._library import cpu_auto_rule
assert cpu_auto_rule() == {expected!r}, cpu_auto_rule()
print("ok")
""", TSC_AUTO_RULE="")


def test_rule_is_a_known_name():
    assert cpu_auto_rule() in ("zen4", "intel-xeon")


_FOLLOWS = """
import torch, torch_sparse_conv as tsc
from torch_sparse_conv._library import cpu_auto_rule
assert cpu_auto_rule() == {rule!r}, cpu_auto_rule()
torch.manual_seed(0)
w = torch.randn(256, 256, 3, 3) * (torch.rand(256, 256, 3, 3) < 0.5)
x = torch.randn(8, 256, 14, 14)
rp, ci, v = tsc.pack_sparse_filter(w)
op = torch.ops.torch_sparse_conv.sparse_filter_conv2d
call = lambda m: op(x, rp, ci, v, list(w.shape), None, [1, 1], [1, 1], [1, 1], 1, m)
auto, picked, other = call("auto"), call({picked!r}), call({other!r})
assert not torch.equal(picked, other)  # else the test could not tell them apart
assert torch.equal(auto, picked)
print("ok")
"""


@x86_lanes
@pytest.mark.parametrize("rule, picked, other", [("zen4", "direct", "dense"),
                                                 ("intel-xeon", "dense", "direct")])
def test_named_rule_decides(rule, picked, other):
    run_script(_FOLLOWS.format(rule=rule, picked=picked, other=other), TSC_AUTO_RULE=rule,
               TSC_CPU_ISA="")


def test_unknown_name_warns_and_falls_back():
    result = run_python("-c", """
from torch_sparse_conv._library import cpu_auto_rule
print(cpu_auto_rule())
""", TSC_AUTO_RULE="pentium")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() in (["zen4"], ["intel-xeon"]), result.stdout
    assert "TSC_AUTO_RULE must be 'zen4' or 'intel-xeon', got 'pentium'" in result.stderr
